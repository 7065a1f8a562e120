//! Pure learning code for coldstart, on nalgebra: no networking, no I/O, no service types. Services
//! call into it; it never calls out. It holds the triplet-trained content encoder ([`encoder`]),
//! spherical k-means ([`kmeans`]) and unit-sphere vector primitives ([`vector`]); the two-tower
//! model, Meta-Embedding and K-nearest-user initialisation land here as their issues are taken.
#![warn(missing_docs)]

pub mod encoder;
pub mod kmeans;
pub mod vector;

/// Errors of the learning code.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// Two vectors that must have one dimension do not.
    #[error("dimension mismatch: {left} vs {right}")]
    DimensionMismatch {
        /// Left length.
        left: usize,
        /// Right length.
        right: usize,
    },
    /// Fewer points than clusters.
    #[error("{points} points cannot make {k} clusters")]
    TooFewPoints {
        /// Points.
        points: usize,
        /// Clusters asked for.
        k: usize,
    },
    /// A value is NaN or infinite.
    #[error("value at index {index} is not finite")]
    NotFinite {
        /// Flat index of the value.
        index: usize,
    },
    /// A vector that must have a direction is zero (or not finite).
    #[error("vector has no direction (norm {norm})")]
    NoDirection {
        /// Its norm.
        norm: f32,
    },
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
