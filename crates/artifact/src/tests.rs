//! The artifact: files round-trip, checksums are enforced, and every refusal names its field.

use super::*;

fn model() -> ContentModel {
    let encoder = Encoder::new(EncoderConfig {
        buckets: 32,
        hidden: 4,
        dim: 3,
        image_dim: 2,
        ..Default::default()
    })
    .unwrap();
    let centroids = Centroids::from_rows(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], 3).unwrap();
    ContentModel {
        version: "v1".into(),
        encoder,
        centroids,
    }
}

#[test]
fn saves_loads_and_refuses_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let m = model();
    let asg = [
        Assignment {
            item_id: 7,
            cluster: 1,
            publish_ts: 70,
            vector: Some(vec![0.6, 0.8, 0.0]),
        },
        Assignment {
            item_id: 8,
            cluster: 0,
            publish_ts: 80,
            vector: None,
        },
    ];
    let bad = [Assignment {
        cluster: 2,
        ..asg[0].clone()
    }];
    assert!(m
        .save(dir.path(), &bad)
        .unwrap_err()
        .text()
        .contains("cluster 2"));
    let short = [Assignment {
        vector: Some(vec![1.0]),
        ..asg[0].clone()
    }];
    assert!(m
        .save(dir.path(), &short)
        .unwrap_err()
        .text()
        .contains("1 dimensions, the model 3"));
    let r = m.save(dir.path(), &asg).unwrap();
    let back = ContentModel::load(&r).unwrap();
    assert_eq!(back.encoder, m.encoder);
    assert_eq!(back.centroids, m.centroids);
    let files = ModelFiles::open(&r).unwrap();
    assert_eq!(files.version(), "v1");
    assert_eq!(files.assignments(2, 3).unwrap(), asg);
    assert!(files
        .assignments(1, 3)
        .unwrap_err()
        .text()
        .contains("field `cluster`"));

    let wrong = ModelRef {
        sha256: "00".repeat(32),
        ..r.clone()
    };
    assert!(ContentModel::load(&wrong)
        .unwrap_err()
        .text()
        .contains("`sha256`"));
    let wrong = ModelRef {
        version: "v9".into(),
        ..r.clone()
    };
    assert!(ContentModel::load(&wrong)
        .unwrap_err()
        .text()
        .contains("`version`"));
    // a changed weight file is caught by the manifest
    let enc = dir.path().join("v1/encoder.bin");
    let mut bytes = std::fs::read(&enc).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&enc, bytes).unwrap();
    assert!(ContentModel::load(&r)
        .unwrap_err()
        .text()
        .contains("`encoder_sha256`"));
    let asg_path = dir.path().join("v1/assignments.parquet");
    let mut bytes = std::fs::read(&asg_path).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&asg_path, bytes).unwrap();
    assert!(files
        .assignments(2, 3)
        .unwrap_err()
        .text()
        .contains("`assignments_sha256`"));
}
