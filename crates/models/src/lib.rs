//! Pure learning code for coldstart, on nalgebra: no networking, no service types, and no I/O but
//! reading a pretrained backbone's files. Services call into it; it never calls out. It holds the
//! triplet-trained content encoder ([`encoder`]), spherical k-means ([`kmeans`]), unit-sphere
//! vector primitives ([`vector`]) and, with the cargo feature `minilm`, the all-MiniLM-L6-v2
//! sentence encoder on candle ([`minilm`]) as a frozen backbone; the two-tower model,
//! Meta-Embedding and K-nearest-user initialisation land here as their issues are taken.
#![warn(missing_docs)]

pub mod encoder;
pub mod flat;
pub mod kmeans;
#[cfg(feature = "minilm")]
pub mod minilm;
pub mod tower;
pub mod two_tower;
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
    /// A pretrained backbone could not be loaded or run.
    #[error("backbone: {0}")]
    Backbone(String),
    /// A configuration value is impossible (the message names the field).
    #[error("two-tower users: {0}")]
    Config(String),
    /// A vector that must have a direction is zero (or not finite).
    #[error("vector has no direction (norm {norm})")]
    NoDirection {
        /// Its norm.
        norm: f32,
    },
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
