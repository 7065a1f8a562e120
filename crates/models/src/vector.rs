//! Vector primitives on the unit sphere: content vectors are L2-normalised so that cosine
//! similarity is a dot product, which is what spherical k-means and ANN search rely on.

use crate::{Error, Result};
use nalgebra::DVector;

/// Scales `v` to unit length in place. Refuses a zero or non-finite vector rather than producing
/// NaNs that would poison every later dot product.
pub fn l2_normalize(v: &mut DVector<f32>) -> Result<()> {
    let norm = v.norm();
    if !norm.is_finite() || norm <= f32::EPSILON {
        return Err(Error::NoDirection { norm });
    }
    *v /= norm;
    Ok(())
}

/// Cosine similarity of two vectors of one dimension, in [-1, 1].
pub fn cosine(a: &DVector<f32>, b: &DVector<f32>) -> Result<f32> {
    if a.len() != b.len() {
        return Err(Error::DimensionMismatch {
            left: a.len(),
            right: b.len(),
        });
    }
    let (na, nb) = (a.norm(), b.norm());
    if na <= f32::EPSILON || nb <= f32::EPSILON {
        return Err(Error::NoDirection { norm: na.min(nb) });
    }
    Ok((a.dot(b) / (na * nb)).clamp(-1.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn normalised_vectors_have_unit_norm(v in proptest::collection::vec(-100.0f32..100.0, 1..64)) {
            let mut d = DVector::from_vec(v);
            if d.norm() > 1e-3 {
                l2_normalize(&mut d).unwrap();
                prop_assert!((d.norm() - 1.0).abs() < 1e-4);
            }
        }

        #[test]
        fn cosine_is_symmetric_and_bounded(a in proptest::collection::vec(-10.0f32..10.0, 8), b in proptest::collection::vec(-10.0f32..10.0, 8)) {
            let (a, b) = (DVector::from_vec(a), DVector::from_vec(b));
            if let (Ok(x), Ok(y)) = (cosine(&a, &b), cosine(&b, &a)) {
                prop_assert!((x - y).abs() < 1e-5);
                prop_assert!((-1.0..=1.0).contains(&x));
            }
        }
    }

    #[test]
    fn refuses_what_has_no_direction() {
        let mut z = DVector::from_vec(vec![0.0f32; 4]);
        assert!(matches!(
            l2_normalize(&mut z),
            Err(Error::NoDirection { .. })
        ));
        let a = DVector::from_vec(vec![1.0f32, 0.0]);
        assert_eq!(
            cosine(&a, &DVector::from_vec(vec![1.0f32])),
            Err(Error::DimensionMismatch { left: 2, right: 1 })
        );
        assert!((cosine(&a, &DVector::from_vec(vec![0.0f32, 2.0])).unwrap()).abs() < 1e-6);
    }
}
