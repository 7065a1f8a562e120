//! The two-tower model file `two_tower.bin`: a magic line, a JSON header with the shape, the
//! default method and the user cold-start part, then (little-endian) the user tower, the item
//! tower, the mean trained ID, for the content method the generator, with the bias part `θ` and
//! its warm mean, the Meta-Embedding generator, the old users' ID embeddings (all f32), then the
//! graduated item ids and the old users' ids and signatures. Written atomically; read back only whole: a file
//! whose length disagrees with its header, or whose weights hold a NaN, is refused naming what
//! is wrong, so nothing is ever served from a half-written model.

use crate::{f32s, io, sha256_hex, tower_bytes, tower_from, ModelRef};
use coldstart_models::two_tower::{
    DefaultMethod, Generator, ItemSide, MetaGenerator, OldUsers, TwoTower, TwoTowerConfig,
    UserColdConfig, UserMethod, BIAS_FEATURES,
};
use coldstart_runtime::{parquet_io, ServiceError, ServiceResult};
use nalgebra::{DMatrix, DVector};
use std::path::Path;

const MAGIC: &[u8; 8] = b"CS2TW02\n";
/// The first format (no user cold-start part), refused by name.
const MAGIC_V1: &[u8; 8] = b"CS2TW01\n";

fn bytes(m: &TwoTower) -> Vec<u8> {
    let mut neighbors = Vec::new();
    let (nb_items, nb_entries) = crate::neighbors::write(&mut neighbors, &m.neighbors);
    let c = &m.cfg;
    let u = &c.users;
    let old = m.old_users.as_ref();
    let header = serde_json::json!({
        "buckets": c.buckets, "hidden": c.hidden, "dim": c.dim, "content_dim": c.content_dim,
        "temperature": c.temperature, "learning_rate": c.learning_rate, "batch": c.batch,
        "epochs": c.epochs, "seed": c.seed, "default_method": c.default_method.as_str(),
        "min_interactions": c.min_interactions, "generator": m.generator.is_some(),
        "graduated": m.graduated.len(),
        "users": {
            "method": u.method.as_str(), "new_user_interactions": u.new_user_interactions,
            "new_user_days": u.new_user_days, "new_user_weight": u.new_user_weight,
            "bias_features": m.has_bias(), "knn_k": u.knn_k, "group_by": u.group_by,
            "meta_buckets": u.meta_buckets, "meta": m.meta.is_some(),
            "old_users": old.map_or(0, |o| o.len()),
            "old_user_features": old.map_or(0, |o| o.features.iter().map(Vec::len).sum::<usize>()),
        },
        "neighbors": {"items": nb_items, "entries": nb_entries},
    })
    .to_string();
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    tower_bytes(&mut out, &m.user);
    tower_bytes(&mut out, &m.item);
    f32s(&mut out, m.mean_id.as_slice());
    if let Some(g) = &m.generator {
        f32s(&mut out, g.w.as_slice());
    }
    if m.has_bias() {
        f32s(&mut out, m.theta.as_slice());
        f32s(&mut out, m.mean_theta.as_slice());
    }
    if let Some(g) = &m.meta {
        f32s(&mut out, g.w.as_slice());
        f32s(&mut out, g.b.as_slice());
    }
    if let Some(o) = old {
        f32s(&mut out, o.emb.as_slice());
    }
    for id in &m.graduated {
        out.extend_from_slice(&id.to_le_bytes());
    }
    if let Some(o) = old {
        for id in &o.ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
        for f in &o.features {
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        }
        for x in o.features.iter().flatten() {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.extend_from_slice(&neighbors);
    out
}

fn from_bytes(path: &Path, b: &[u8]) -> ServiceResult<TwoTower> {
    let bad = |what: String| {
        ServiceError::invalid(format!("two-tower model file {}: {what}", path.display()))
    };
    if b.len() >= 8 && &b[..8] == MAGIC_V1 {
        return Err(bad(
            "a model of the first format (no user cold-start part): train it again".into(),
        ));
    }
    if b.len() < 12 || &b[..8] != MAGIC {
        return Err(bad("not a coldstart two-tower model (bad magic)".into()));
    }
    let hlen = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(
        b.get(12..12 + hlen)
            .ok_or_else(|| bad("truncated header".into()))?,
    )
    .map_err(|e| bad(e.to_string()))?;
    let field = |v: &serde_json::Value, k: &str| -> Option<serde_json::Value> {
        k.split('.')
            .try_fold(v.clone(), |v, part| v.get(part).cloned())
    };
    let int = |k: &str| {
        field(&header, k)
            .and_then(|v| v.as_u64())
            .ok_or_else(|| bad(format!("header field `{k}` missing or not a whole number")))
    };
    let float = |k: &str| {
        field(&header, k)
            .and_then(|v| v.as_f64())
            .map(|v| v as f32)
            .ok_or_else(|| bad(format!("header field `{k}` missing or not a number")))
    };
    let flag = |k: &str| {
        field(&header, k)
            .and_then(|v| v.as_bool())
            .ok_or_else(|| bad(format!("header field `{k}` missing or not true/false")))
    };
    let text = |k: &str| {
        field(&header, k)
            .and_then(|v| v.as_str().map(String::from))
            .ok_or_else(|| bad(format!("header field `{k}` missing or not a string")))
    };
    let users = UserColdConfig {
        method: text("users.method")?
            .parse::<UserMethod>()
            .map_err(|e| bad(format!("header field `users.method`: {e}")))?,
        new_user_interactions: int("users.new_user_interactions")? as u32,
        new_user_days: float("users.new_user_days")?,
        new_user_weight: float("users.new_user_weight")?,
        bias_features: flag("users.bias_features")?,
        knn_k: int("users.knn_k")? as usize,
        group_by: field(&header, "users.group_by")
            .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
            .ok_or_else(|| bad("header field `users.group_by` missing or not a list".into()))?,
        meta_buckets: int("users.meta_buckets")? as usize,
        // a training setting: not needed to serve
        future_targets: 0,
    };
    users
        .validate()
        .map_err(|e| bad(format!("header field `users`: {e}")))?;
    let cfg = TwoTowerConfig {
        buckets: int("buckets")? as usize,
        hidden: int("hidden")? as usize,
        dim: int("dim")? as usize,
        content_dim: int("content_dim")? as usize,
        temperature: float("temperature")?,
        learning_rate: float("learning_rate")?,
        batch: int("batch")? as usize,
        epochs: int("epochs")? as usize,
        seed: int("seed")?,
        default_method: text("default_method")?
            .parse::<DefaultMethod>()
            .map_err(|e| bad(format!("header field `default_method`: {e}")))?,
        min_interactions: int("min_interactions")? as u32,
        // a training setting, not in the file
        uniform_negatives: 0,
        item_item: 0.0,
        item_item_window: 1,
        neighbors: 0,
        users,
    };
    let with_generator = flag("generator")?;
    let with_meta = flag("users.meta")?;
    let old_n = int("users.old_users")? as usize;
    let old_f = int("users.old_user_features")? as usize;
    let (h, d) = (cfg.hidden, cfg.dim);
    // every count the header gives is bounded by the file's own length before it sizes anything
    let tower = h * cfg.buckets + h * cfg.content_dim + d * h + h;
    let generator = if with_generator {
        h * (h + cfg.content_dim + 1)
    } else {
        0
    };
    let bias = if cfg.users.bias_features {
        BIAS_FEATURES * (cfg.buckets + 1)
    } else {
        0
    };
    let meta = if with_meta {
        h * (cfg.users.meta_buckets + 1)
    } else {
        0
    };
    let graduated = int("graduated")? as usize;
    // a model from before the neighbours has none
    let (nb_items, nb_entries) = match field(&header, "neighbors") {
        None => (0, 0),
        Some(_) => (
            int("neighbors.items")? as usize,
            int("neighbors.entries")? as usize,
        ),
    };
    let floats_n = 2 * tower + h + generator + bias + meta + h * old_n;
    let want = floats_n
        .checked_mul(4)
        .and_then(|f| f.checked_add(graduated.checked_mul(8)?))
        .and_then(|x| x.checked_add(old_n.checked_mul(12)?))
        .and_then(|x| x.checked_add(old_f.checked_mul(4)?))
        .and_then(|x| x.checked_add(crate::neighbors::len(nb_items, nb_entries)?));
    let body = &b[12 + hlen..];
    if want != Some(body.len()) {
        return Err(bad(format!(
            "weights are {} bytes, the header implies {} (a half-written file?)",
            body.len(),
            want.map_or("more than can be".to_string(), |w| w.to_string())
        )));
    }
    let (weights, rest) = body.split_at(floats_n * 4);
    if let Some(i) = weights
        .chunks_exact(4)
        .position(|c| !f32::from_le_bytes(c.try_into().expect("4 bytes")).is_finite())
    {
        return Err(bad(format!("weight {i} is not finite")));
    }
    let (ids, rest) = rest.split_at(graduated * 8);
    let u64s = |b: &[u8]| -> Vec<u64> {
        b.chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    };
    let u32s = |b: &[u8]| -> Vec<u32> {
        b.chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect()
    };
    let graduated = u64s(ids);
    if graduated.windows(2).any(|w| w[0] >= w[1]) {
        return Err(bad(
            "the graduated item ids are not sorted and distinct".into()
        ));
    }
    let (old_ids, rest) = rest.split_at(old_n * 8);
    let (old_lens, rest) = rest.split_at(old_n * 4);
    let (old_feats, nb_bytes) = rest.split_at(old_f * 4);
    let neighbors = crate::neighbors::read(nb_bytes, nb_items, nb_entries).map_err(bad)?;
    let lens = u32s(old_lens);
    if lens.iter().map(|&l| l as usize).sum::<usize>() != old_f {
        return Err(bad(
            "the old users' signature lengths disagree with `users.old_user_features`".into(),
        ));
    }
    let mut feats = u32s(old_feats).into_iter();
    let signatures: Vec<Vec<u32>> = lens
        .iter()
        .map(|&l| feats.by_ref().take(l as usize).collect())
        .collect();
    let mut floats = weights
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")));
    let user = tower_from(&mut floats, cfg.buckets, h, d, cfg.content_dim);
    let item = tower_from(&mut floats, cfg.buckets, h, d, cfg.content_dim);
    let mean_id = DVector::from_iterator(h, floats.by_ref().take(h));
    let generator = with_generator.then(|| Generator {
        w: DMatrix::from_iterator(
            h,
            h + cfg.content_dim + 1,
            floats.by_ref().take(h * (h + cfg.content_dim + 1)),
        ),
        content_dim: cfg.content_dim,
    });
    let (theta, mean_theta) = if cfg.users.bias_features {
        (
            // nalgebra collects a whole iterator: each part takes exactly its own
            DMatrix::from_iterator(
                BIAS_FEATURES,
                cfg.buckets,
                floats.by_ref().take(BIAS_FEATURES * cfg.buckets),
            ),
            DVector::from_iterator(BIAS_FEATURES, floats.by_ref().take(BIAS_FEATURES)),
        )
    } else {
        (
            DMatrix::zeros(BIAS_FEATURES, 0),
            DVector::zeros(BIAS_FEATURES),
        )
    };
    let meta = with_meta.then(|| MetaGenerator {
        w: DMatrix::from_iterator(
            h,
            cfg.users.meta_buckets,
            floats.by_ref().take(h * cfg.users.meta_buckets),
        ),
        b: DVector::from_iterator(h, floats.by_ref().take(h)),
    });
    let old_users = (old_n > 0).then(|| {
        OldUsers::new(
            u64s(old_ids),
            signatures,
            DMatrix::from_iterator(h, old_n, floats.by_ref().take(h * old_n)),
        )
    });
    Ok(TwoTower {
        cfg,
        user,
        item,
        mean_id,
        generator,
        theta,
        mean_theta,
        meta,
        old_users,
        graduated,
        neighbors,
    })
}

/// The etcd model name of the two-tower model (`models/two-tower`).
pub const TWO_TOWER_MODEL: &str = "two-tower";
/// The etcd model name of a two-tower model being rolled out (`models/two-tower-next`):
/// sharders build its pools beside the running version's and announce it
/// (`next_tower_model`); it is activated once every sharder has.
pub const TWO_TOWER_MODEL_NEXT: &str = "two-tower-next";

/// A two-tower model as a service runs it: the version etcd named and the model.
#[derive(Debug)]
pub struct TwoTowerModel {
    /// Version name (the pools are keyed by it).
    pub version: String,
    /// The model.
    pub model: TwoTower,
}

impl TwoTowerModel {
    /// An item as this model's item tower reads it, from its forward-index row: category,
    /// keywords, and the content vector when it has the model's dimension.
    pub fn item_side(&self, r: &coldstart_contracts::sharder::ItemRow) -> ItemSide {
        let dim = self.model.cfg.content_dim;
        ItemSide {
            item_id: r.item_id,
            category: r.category.clone(),
            keywords: r.keywords.clone(),
            content: r
                .vector
                .clone()
                .filter(|v| v.len() == dim)
                .unwrap_or_default(),
        }
    }
}

/// Writes `{dir}/{version}/two_tower.bin` and returns the reference to publish: the file
/// itself, with its SHA-256.
pub fn save_two_tower(dir: &Path, version: &str, m: &TwoTower) -> ServiceResult<ModelRef> {
    let path = dir.join(version).join("two_tower.bin");
    write_two_tower(&path, m)?;
    let b = std::fs::read(&path).map_err(|e| io(&path, e))?;
    let uri = std::fs::canonicalize(&path)
        .unwrap_or(path)
        .display()
        .to_string();
    Ok(ModelRef {
        version: version.to_string(),
        uri,
        sha256: sha256_hex(&b),
    })
}

/// The reference of a saved model file: its folder's name is the version.
pub fn two_tower_ref(path: &Path) -> ServiceResult<ModelRef> {
    let b = std::fs::read(path).map_err(|e| io(path, e))?;
    let version = path
        .parent()
        .and_then(|d| d.file_name())
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            ServiceError::invalid(format!(
                "{}: a model file lives in its version's folder",
                path.display()
            ))
        })?
        .to_string();
    let uri = std::fs::canonicalize(path)
        .unwrap_or(path.to_path_buf())
        .display()
        .to_string();
    Ok(ModelRef {
        version,
        uri,
        sha256: sha256_hex(&b),
    })
}

/// Loads the model a reference names, whole and with its checksum verified, or refuses.
pub fn load_two_tower(r: &ModelRef) -> ServiceResult<TwoTowerModel> {
    let path = Path::new(&r.uri);
    let b = std::fs::read(path).map_err(|e| io(path, e))?;
    let got = sha256_hex(&b);
    if got != r.sha256 {
        return Err(ServiceError::invalid(format!(
            "models/{TWO_TOWER_MODEL} {}: field `sha256`: the file's is {got}, the published {}",
            r.version, r.sha256
        )));
    }
    Ok(TwoTowerModel {
        version: r.version.clone(),
        model: from_bytes(path, &b)?,
    })
}

/// The two-tower model a service runs, swapped whole when etcd names another (`None` before one
/// is named).
pub type TwoTowerSlot = std::sync::Arc<arc_swap::ArcSwapOption<TwoTowerModel>>;

/// Follows `models/{name}` (`two-tower`, or `two-tower-next` on sharders) for the life of the
/// process: each version etcd names is loaded (whole, checksum verified) off the async workers
/// and swapped into `slot`; a model that does not load is refused by field and the one in use
/// stays; unreadable files are retried. `on_swap` gets each model taken, once it is in the slot.
pub fn follow_two_tower(
    registry: &dyn coldstart_runtime::discovery::Registry,
    name: &'static str,
    slot: TwoTowerSlot,
    on_swap: impl Fn(std::sync::Arc<TwoTowerModel>) + Send + Sync + 'static,
) {
    let applied: std::sync::Arc<parking_lot::Mutex<Option<String>>> = Default::default();
    let on_swap = std::sync::Arc::new(on_swap);
    crate::follow(registry, name, move |value| {
        let (slot, applied, on_swap) = (slot.clone(), applied.clone(), on_swap.clone());
        async move {
            if *applied.lock() == value {
                return false;
            }
            let Some(v) = value.clone() else {
                slot.store(None);
                *applied.lock() = None;
                return false;
            };
            let loaded = async {
                let r: ModelRef = serde_json::from_str(&v)
                    .map_err(|e| ServiceError::invalid(format!("models/{name}: {e}")))?;
                let m = tokio::task::spawn_blocking(move || load_two_tower(&r))
                    .await
                    .map_err(|e| ServiceError::internal(format!("two-tower load task: {e}")))??;
                Ok::<_, ServiceError>(m)
            }
            .await;
            match loaded {
                Ok(m) => {
                    tracing::info!(model = name, version = %m.version, dim = m.model.cfg.dim, default = %m.model.cfg.default_method, "two-tower model swapped in");
                    let m = std::sync::Arc::new(m);
                    slot.store(Some(m.clone()));
                    on_swap(m);
                    *applied.lock() = value;
                    false
                }
                Err(e) => {
                    let retry = crate::transient(&e);
                    tracing::error!(model = name, error = %e, retry, "two-tower model refused, keeping the current one");
                    retry
                }
            }
        }
    });
}

/// [`follow_two_tower`] for a member that just runs the model it is given: it takes every
/// model that loads and announces its version in the member value.
pub fn run_two_tower(
    registry: &dyn coldstart_runtime::discovery::Registry,
    slot: TwoTowerSlot,
    announcer: coldstart_runtime::discovery::Announcer,
) {
    follow_two_tower(registry, TWO_TOWER_MODEL, slot, move |m| {
        announcer.set_tower_model(&m.version)
    });
}

/// Writes the model atomically (a reader never sees half a file).
pub fn write_two_tower(path: &Path, m: &TwoTower) -> ServiceResult<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    parquet_io::write_bytes_atomic(path, &bytes(m)).map_err(|e| io(path, e))
}

/// Reads a model written by [`write_two_tower`], whole or not at all.
pub fn read_two_tower(path: &Path) -> ServiceResult<TwoTower> {
    let b = std::fs::read(path).map_err(|e| io(path, e))?;
    from_bytes(path, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(method: DefaultMethod) -> TwoTower {
        let mut m = TwoTower::new(TwoTowerConfig {
            buckets: 32,
            hidden: 4,
            dim: 3,
            content_dim: 2,
            default_method: method,
            ..Default::default()
        })
        .unwrap();
        if method == DefaultMethod::Content {
            m.generator = Some(Generator {
                w: DMatrix::from_fn(4, 4 + 2 + 1, |i, j| (i * 7 + j) as f32 * 0.01),
                content_dim: 2,
            });
        }
        m.mean_id = DVector::from_element(4, 0.25);
        m.graduated = vec![3, 9, 1 << 40];
        m
    }

    /// A model with every user cold-start part: the bias part, the Meta-Embedding generator and
    /// an old-for-new table.
    fn model_with_users() -> TwoTower {
        let mut m = TwoTower::new(TwoTowerConfig {
            buckets: 32,
            hidden: 4,
            dim: 3,
            content_dim: 2,
            users: UserColdConfig {
                method: UserMethod::Combined,
                bias_features: true,
                meta_buckets: 8,
                knn_k: 3,
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
        m.theta = DMatrix::from_fn(BIAS_FEATURES, 32, |i, j| (i + j) as f32 * 0.01);
        m.mean_theta = DVector::from_element(BIAS_FEATURES, 0.5);
        m.meta = Some(MetaGenerator {
            w: DMatrix::from_fn(4, 8, |i, j| (i * 8 + j) as f32 * 0.1),
            b: DVector::from_element(4, -0.5),
        });
        m.old_users = Some(OldUsers::new(
            vec![5, 6],
            vec![vec![1, 2, 3], vec![9]],
            DMatrix::from_fn(4, 2, |i, j| (i + 10 * j) as f32),
        ));
        m.neighbors = coldstart_models::two_tower::Neighbors::build(
            &[(1, 10), (1, 11), (2, 10), (2, 11), (3, 10), (3, 12)],
            5,
        );
        m
    }

    #[test]
    fn a_saved_model_loads_by_its_reference_and_a_changed_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let r = save_two_tower(dir.path(), "tt1", &model(DefaultMethod::Mean)).unwrap();
        let loaded = load_two_tower(&r).unwrap();
        assert_eq!(
            (loaded.version.as_str(), &loaded.model),
            ("tt1", &model(DefaultMethod::Mean))
        );
        let other = ModelRef {
            sha256: "00".repeat(32),
            ..r
        };
        let e = load_two_tower(&other).unwrap_err();
        assert!(e.text().contains("sha256"), "{e}");
    }

    #[test]
    fn the_user_cold_start_parts_round_trip_and_a_cut_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users.bin");
        let m = model_with_users();
        write_two_tower(&p, &m).unwrap();
        assert_eq!(read_two_tower(&p).unwrap(), m);
        assert_eq!(read_two_tower(&p).unwrap().neighbors.of(10).len(), 2);
        let whole = std::fs::read(&p).unwrap();
        for cut in [1, 4, 8, 13, whole.len() / 3] {
            std::fs::write(&p, &whole[..whole.len() - cut]).unwrap();
            let e = read_two_tower(&p).unwrap_err();
            assert!(e.text().contains("half-written"), "{cut}: {e}");
        }
        // an unknown user method in the header
        let mut odd = whole.clone();
        let pos = odd
            .windows(10)
            .position(|w| w == b"\"combined\"")
            .expect("the method is in the header");
        odd[pos..pos + 10].copy_from_slice(b"\"combin3d\"");
        std::fs::write(&p, &odd).unwrap();
        let e = read_two_tower(&p).unwrap_err();
        assert!(
            e.text().contains("users.method") && e.text().contains("combin3d"),
            "{e}"
        );
        // a model of the first format is refused by name
        let mut v1 = whole.clone();
        v1[..8].copy_from_slice(b"CS2TW01\n");
        std::fs::write(&p, &v1).unwrap();
        let e = read_two_tower(&p).unwrap_err();
        assert!(e.text().contains("first format"), "{e}");
    }

    #[test]
    fn models_round_trip_and_damaged_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for method in DefaultMethod::ALL {
            let p = dir.path().join(format!("{method}.bin"));
            let m = model(method);
            write_two_tower(&p, &m).unwrap();
            assert_eq!(read_two_tower(&p).unwrap(), m, "{method}");
        }
        let p = dir.path().join("content.bin");
        let whole = std::fs::read(&p).unwrap();
        // half-written
        std::fs::write(&p, &whole[..whole.len() / 2]).unwrap();
        let e = read_two_tower(&p).unwrap_err();
        assert!(e.text().contains("half-written"), "{e}");
        // a NaN weight (the last one, before the graduated ids)
        let mut nan = whole.clone();
        let at = nan.len() - 3 * 8 - 4;
        nan[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        std::fs::write(&p, &nan).unwrap();
        assert!(read_two_tower(&p)
            .unwrap_err()
            .text()
            .contains("not finite"));
        // an unknown default method
        let mut odd = whole.clone();
        let pos = odd
            .windows(9)
            .position(|w| w == b"\"content\"")
            .expect("the method is in the header");
        odd[pos..pos + 9].copy_from_slice(b"\"cont3nt\"");
        std::fs::write(&p, &odd).unwrap();
        let e = read_two_tower(&p).unwrap_err();
        assert!(
            e.text().contains("default_method") && e.text().contains("cont3nt"),
            "{e}"
        );
    }
}
