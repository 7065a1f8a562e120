//! The content model artifact: one version = one directory holding the encoder's weights
//! (`encoder.bin`), its centroids (`centroids.parquet`), the forward index it was trained with
//! (`assignments.parquet`: item → cluster, publish time) and `manifest.json` with the SHA-256 of
//! each file. The manifest's own SHA-256 is what `models/content` in etcd names, so a service
//! loads exactly the bytes that were published, or refuses. Each service loads only the parts it
//! needs: encoders the encoder and centroids, sharders the centroids and the assignments.
//!
//! Used by the encoder, the sharder and the jobs only: the profile, traffic and aggregator
//! services never link the model code or the linear algebra. It holds no service state and
//! never writes anywhere but a version's own folder.
#![warn(missing_docs)]

use arrow::array::{
    Array, FixedSizeListArray, FixedSizeListBuilder, Float32Array, Float32Builder, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use coldstart_contracts::sharder::Assignment;
use coldstart_models::encoder::{Backbone, Encoder, EncoderConfig};
use coldstart_models::kmeans::Centroids;
use coldstart_models::tower::Tower;
use coldstart_runtime::discovery::Registry;
use coldstart_runtime::{parquet_io, ErrorCode, ServiceError, ServiceResult};
use nalgebra::{DMatrix, DVector};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const MAGIC: &[u8; 8] = b"CSENC01\n";

/// The etcd model name (`models/content`) of the content encoder, its centroids and assignments.
pub const CONTENT_MODEL: &str = "content";
/// The etcd model name of a content model being rolled out (`models/content-next`): encoders
/// file new items under it as well, so that no item published during a rollout is left out of
/// it; sharders move those items to it when it becomes `models/content`.
pub const CONTENT_MODEL_NEXT: &str = "content-next";

/// What etcd's `models/content` holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelRef {
    /// Version name.
    pub version: String,
    /// Path of the manifest.
    pub uri: String,
    /// SHA-256 of the manifest, hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Manifest {
    version: String,
    encoder: String,
    encoder_sha256: String,
    centroids: String,
    centroids_sha256: String,
    assignments: String,
    assignments_sha256: String,
}

/// A published version whose manifest has been read and checked against its reference; its files
/// are loaded (and each checked against the manifest) on demand.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    manifest: Manifest,
    dir: PathBuf,
}

/// A loaded content model: encoder and the centroids of its vector space.
#[derive(Debug)]
pub struct ContentModel {
    /// Version name (cluster list keys are `{version}:{cluster}`).
    pub version: String,
    /// The encoder.
    pub encoder: Encoder,
    /// The centroids.
    pub centroids: Centroids,
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> ServiceError {
    ServiceError::unavailable(format!("model file {}: {e}", path.display()))
}

pub(crate) fn f32s(out: &mut Vec<u8>, v: &[f32]) {
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

fn encoder_bytes(e: &Encoder) -> Vec<u8> {
    let header = serde_json::json!({
        "buckets": e.cfg.buckets, "hidden": e.cfg.hidden, "dim": e.cfg.dim, "image_dim": e.cfg.image_dim,
        "margin": e.cfg.margin, "learning_rate": e.cfg.learning_rate, "seed": e.cfg.seed,
        "backbone": e.cfg.backbone.as_str(),
    })
    .to_string();
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    tower_bytes(&mut out, &e.net);
    out
}

fn encoder_from_bytes(path: &Path, b: &[u8]) -> ServiceResult<Encoder> {
    let bad = |what: &str| ServiceError::invalid(format!("model file {}: {what}", path.display()));
    if b.len() < 12 || &b[..8] != MAGIC {
        return Err(bad("not a coldstart encoder (bad magic)"));
    }
    let hlen = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(
        b.get(12..12 + hlen)
            .ok_or_else(|| bad("truncated header"))?,
    )
    .map_err(|e| bad(&e.to_string()))?;
    let get = |k: &str| {
        header[k]
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| bad(&format!("header field `{k}` missing")))
    };
    let cfg = EncoderConfig {
        buckets: get("buckets")?,
        hidden: get("hidden")?,
        dim: get("dim")?,
        image_dim: get("image_dim")?,
        margin: header["margin"].as_f64().unwrap_or(0.3) as f32,
        learning_rate: header["learning_rate"].as_f64().unwrap_or(0.05) as f32,
        seed: header["seed"].as_u64().unwrap_or(0),
        // absent in files written before backbones existed
        backbone: match header["backbone"].as_str() {
            None => Backbone::Hashed,
            Some(b) => Backbone::parse(b).ok_or_else(|| {
                bad(&format!(
                    "header field `backbone`: {b:?} is not one of hashed, minilm"
                ))
            })?,
        },
    };
    let sizes = [
        cfg.hidden * cfg.buckets,
        cfg.hidden * cfg.image_dim,
        cfg.dim * cfg.hidden,
        cfg.hidden,
    ];
    let body = &b[12 + hlen..];
    if body.len() != sizes.iter().sum::<usize>() * 4 {
        return Err(bad(&format!(
            "weights are {} bytes, the header implies {}",
            body.len(),
            sizes.iter().sum::<usize>() * 4
        )));
    }
    let mut floats = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")));
    let net = tower_from(&mut floats, cfg.buckets, cfg.hidden, cfg.dim, cfg.image_dim);
    Ok(Encoder { cfg, net })
}

/// A tower's weights, in file order: embedding table, dense projection, output projection, bias
/// (column-major, little-endian f32).
pub(crate) fn tower_bytes(out: &mut Vec<u8>, t: &Tower) {
    for m in [&t.emb, &t.w_dense, &t.w_out] {
        f32s(out, m.as_slice());
    }
    f32s(out, t.bias.as_slice());
}

/// A tower of the given shape from floats in [`tower_bytes`]' order; the caller has checked
/// that enough floats remain.
pub(crate) fn tower_from(
    floats: &mut impl Iterator<Item = f32>,
    buckets: usize,
    hidden: usize,
    dim: usize,
    dense_dim: usize,
) -> Tower {
    let mut take = |n: usize| -> Vec<f32> { floats.by_ref().take(n).collect() };
    let emb = DMatrix::from_vec(hidden, buckets, take(hidden * buckets));
    let w_dense = DMatrix::from_vec(hidden, dense_dim, take(hidden * dense_dim));
    let w_out = DMatrix::from_vec(dim, hidden, take(dim * hidden));
    let bias = DVector::from_vec(take(hidden));
    Tower {
        emb,
        w_dense,
        bias,
        w_out,
    }
}

fn centroids_batch(c: &Centroids) -> RecordBatch {
    let d = c.dim();
    let mut b = FixedSizeListBuilder::new(Float32Builder::new(), d as i32)
        .with_field(Arc::new(Field::new("item", DataType::Float32, false)));
    for col in c.matrix.column_iter() {
        b.values().append_slice(col.as_slice());
        b.append(true);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("cluster", DataType::UInt32, false),
        Field::new(
            "centroid",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, false)),
                d as i32,
            ),
            false,
        ),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(UInt32Array::from_iter_values(0..c.k() as u32)),
            Arc::new(b.finish()),
        ],
    )
    .expect("centroid columns match their schema")
}

fn centroids_from(path: &Path, batches: &[RecordBatch]) -> ServiceResult<Centroids> {
    let bad =
        |what: &str| ServiceError::invalid(format!("centroids file {}: {what}", path.display()));
    let mut rows: Vec<(u32, Vec<f32>)> = Vec::new();
    let mut d = 0;
    for b in batches {
        let ids = b
            .column_by_name("cluster")
            .and_then(|c| c.as_any().downcast_ref::<UInt32Array>())
            .ok_or_else(|| bad("column `cluster` (uint32) missing"))?;
        let cs = b
            .column_by_name("centroid")
            .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
            .ok_or_else(|| bad("column `centroid` (fixed_size_list<float32>) missing"))?;
        d = cs.value_length() as usize;
        for r in 0..b.num_rows() {
            let v = cs.value(r);
            let v = v
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or_else(|| bad("centroid items must be float32"))?;
            rows.push((ids.value(r), v.values().to_vec()));
        }
    }
    rows.sort_by_key(|r| r.0);
    if rows.iter().enumerate().any(|(i, r)| r.0 as usize != i) {
        return Err(bad("cluster ids must be 0..k"));
    }
    let flat: Vec<f32> = rows.into_iter().flat_map(|r| r.1).collect();
    Centroids::from_rows(&flat, d).map_err(|e| bad(&e.to_string()))
}

/// Writes a trained encoder alone (a version staged for `train clusters`; it has no manifest, so
/// nothing can load it as a content model before its centroids exist).
pub fn write_encoder(path: &Path, encoder: &Encoder) -> ServiceResult<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    parquet_io::write_bytes_atomic(path, &encoder_bytes(encoder)).map_err(|e| io(path, e))
}

/// Reads an encoder written by [`write_encoder`].
pub fn read_encoder(path: &Path) -> ServiceResult<Encoder> {
    let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
    encoder_from_bytes(path, &bytes)
}

impl ContentModel {
    /// Writes the model and the forward index it was trained with as `{dir}/{version}/` and
    /// returns the reference to publish. Every assignment must name one of the centroids.
    pub fn save(&self, dir: &Path, assignments: &[Assignment]) -> ServiceResult<ModelRef> {
        self.save_as(dir, assignments, "manifest.json", "assignments.parquet")
    }

    /// [`ContentModel::save`] under other manifest and assignments file names (a staged
    /// version's manifest stays valid when the final one is written beside it).
    pub fn save_as(
        &self,
        dir: &Path,
        assignments: &[Assignment],
        manifest_name: &str,
        assignments_name: &str,
    ) -> ServiceResult<ModelRef> {
        if let Some(a) = assignments
            .iter()
            .find(|a| a.cluster as usize >= self.centroids.k())
        {
            return Err(ServiceError::invalid(format!(
                "item {} is assigned to cluster {}, the model has {}",
                a.item_id,
                a.cluster,
                self.centroids.k()
            )));
        }
        let dim = self.encoder.cfg.dim;
        if let Some(a) = assignments
            .iter()
            .find(|a| a.vector.as_ref().is_some_and(|v| v.len() != dim))
        {
            return Err(ServiceError::invalid(format!(
                "item {}'s vector has {} dimensions, the model {dim}",
                a.item_id,
                a.vector.as_ref().map_or(0, Vec::len)
            )));
        }
        let vdir = dir.join(&self.version);
        std::fs::create_dir_all(&vdir).map_err(|e| io(&vdir, e))?;
        let enc_path = vdir.join("encoder.bin");
        let enc = encoder_bytes(&self.encoder);
        parquet_io::write_bytes_atomic(&enc_path, &enc).map_err(|e| io(&enc_path, e))?;
        let cen_path = vdir.join("centroids.parquet");
        parquet_io::write_atomic(&cen_path, &[centroids_batch(&self.centroids)])
            .map_err(|e| io(&cen_path, e))?;
        let cen = std::fs::read(&cen_path).map_err(|e| io(&cen_path, e))?;
        let asg_path = vdir.join(assignments_name);
        let batches: Vec<RecordBatch> = assignments
            .chunks(256 * 1024)
            .map(Assignment::to_batch)
            .collect();
        parquet_io::write_atomic(&asg_path, &batches).map_err(|e| io(&asg_path, e))?;
        let asg = std::fs::read(&asg_path).map_err(|e| io(&asg_path, e))?;
        let manifest = Manifest {
            version: self.version.clone(),
            encoder: "encoder.bin".into(),
            encoder_sha256: sha256_hex(&enc),
            centroids: "centroids.parquet".into(),
            centroids_sha256: sha256_hex(&cen),
            assignments: assignments_name.into(),
            assignments_sha256: sha256_hex(&asg),
        };
        let m_path = vdir.join(manifest_name);
        let m = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
        parquet_io::write_bytes_atomic(&m_path, &m).map_err(|e| io(&m_path, e))?;
        let uri = std::fs::canonicalize(&m_path)
            .unwrap_or(m_path)
            .display()
            .to_string();
        Ok(ModelRef {
            version: self.version.clone(),
            uri,
            sha256: sha256_hex(&m),
        })
    }

    /// Loads the encoder and centroids a reference names, verifying every checksum.
    pub fn load(r: &ModelRef) -> ServiceResult<ContentModel> {
        let files = ModelFiles::open(r)?;
        let encoder = files.encoder()?;
        let centroids = files.centroids()?;
        if centroids.dim() != encoder.cfg.dim {
            return Err(ServiceError::invalid(format!(
                "centroids have dimension {}, the encoder {}",
                centroids.dim(),
                encoder.cfg.dim
            )));
        }
        Ok(ContentModel {
            version: files.manifest.version,
            encoder,
            centroids,
        })
    }
}

fn check(field: &str, bytes: &[u8], want: &str) -> ServiceResult<()> {
    let got = sha256_hex(bytes);
    if got != want {
        return Err(ServiceError::invalid(format!(
            "field `{field}`: sha256 {got} does not match the published {want}"
        )));
    }
    Ok(())
}

impl ModelRef {
    /// The reference of a manifest on disk.
    pub fn of_manifest(path: &Path) -> ServiceResult<ModelRef> {
        let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| ServiceError::invalid(format!("manifest {}: {e}", path.display())))?;
        let uri = std::fs::canonicalize(path)
            .unwrap_or(path.to_path_buf())
            .display()
            .to_string();
        Ok(ModelRef {
            version: m.version,
            uri,
            sha256: sha256_hex(&bytes),
        })
    }

    /// Parses the JSON value of `models/content`, naming the key on failure.
    pub fn parse(value: &str) -> ServiceResult<ModelRef> {
        serde_json::from_str(value)
            .map_err(|e| ServiceError::invalid(format!("models/{CONTENT_MODEL}: {e}")))
    }
}

impl ModelFiles {
    /// Reads the manifest a reference names and checks its checksum and version.
    pub fn open(r: &ModelRef) -> ServiceResult<ModelFiles> {
        let m_path = PathBuf::from(&r.uri);
        let m_bytes = std::fs::read(&m_path).map_err(|e| io(&m_path, e))?;
        check("sha256", &m_bytes, &r.sha256)?;
        let manifest: Manifest = serde_json::from_slice(&m_bytes)
            .map_err(|e| ServiceError::invalid(format!("manifest {}: {e}", m_path.display())))?;
        if manifest.version != r.version {
            return Err(ServiceError::invalid(format!(
                "field `version`: {:?} names a manifest of version {:?}",
                r.version, manifest.version
            )));
        }
        let dir = m_path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok(ModelFiles { manifest, dir })
    }

    /// The version.
    pub fn version(&self) -> &str {
        &self.manifest.version
    }

    fn read(&self, name: &str, field: &str, sha: &str) -> ServiceResult<(PathBuf, Vec<u8>)> {
        let path = self.dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
        check(field, &bytes, sha)?;
        Ok((path, bytes))
    }

    /// The encoder's weights.
    pub fn encoder(&self) -> ServiceResult<Encoder> {
        let m = &self.manifest;
        let (path, bytes) = self.read(&m.encoder, "encoder_sha256", &m.encoder_sha256)?;
        encoder_from_bytes(&path, &bytes)
    }

    /// The centroids.
    pub fn centroids(&self) -> ServiceResult<Centroids> {
        let m = &self.manifest;
        let (path, bytes) = self.read(&m.centroids, "centroids_sha256", &m.centroids_sha256)?;
        centroids_from(
            &path,
            &parquet_io::read_bytes(bytes).map_err(|e| io(&path, e))?,
        )
    }

    /// The forward index the model was trained with; every cluster must be below `k`, and every
    /// vector of length `dim` (the model's output dimension).
    pub fn assignments(&self, k: usize, dim: usize) -> ServiceResult<Vec<Assignment>> {
        let m = &self.manifest;
        let (path, bytes) =
            self.read(&m.assignments, "assignments_sha256", &m.assignments_sha256)?;
        let mut out = Vec::new();
        for b in parquet_io::read_bytes(bytes).map_err(|e| io(&path, e))? {
            out.extend(Assignment::from_batch(&b).map_err(|e| {
                ServiceError::invalid(format!(
                    "assignments file {}: {}",
                    path.display(),
                    e.message
                ))
            })?);
        }
        if let Some(a) = out.iter().find(|a| a.cluster as usize >= k) {
            return Err(ServiceError::invalid(format!(
                "assignments file {}: field `cluster`: item {} is in cluster {}, the model has {k}",
                path.display(),
                a.item_id,
                a.cluster
            )));
        }
        if let Some((a, v)) = out
            .iter()
            .find_map(|a| a.vector.as_ref().filter(|v| v.len() != dim).map(|v| (a, v)))
        {
            return Err(ServiceError::invalid(format!(
                "assignments file {}: field `vector`: item {} has {} dimensions, the model {dim}",
                path.display(),
                a.item_id,
                v.len()
            )));
        }
        Ok(out)
    }
}

/// Follows `models/{name}` for the life of the process: `handle` is called with every value etcd
/// holds there (`None` once it is deleted), one at a time, and answers whether its failure is
/// worth retrying (files not there yet, a store that failed); such a value is retried with
/// backoff (1 s doubling to 30 s) until it succeeds or etcd names another.
pub fn follow<F, Fut>(registry: &dyn Registry, name: &str, mut handle: F)
where
    F: FnMut(Option<String>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let mut rx = registry.watch_model(name);
    tokio::spawn(async move {
        let mut backoff: Option<Duration> = None;
        loop {
            let value = rx.borrow_and_update().clone();
            let retry = handle(value).await;
            if retry {
                let delay = backoff.map_or(Duration::from_secs(1), |d| {
                    (d * 2).min(Duration::from_secs(30))
                });
                backoff = Some(delay);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    r = rx.changed() => if r.is_err() { break } else { continue },
                }
            }
            backoff = None;
            if rx.changed().await.is_err() {
                break;
            }
        }
    });
}

/// Whether a failed model load or swap is worth retrying: the files or a store were unavailable,
/// as opposed to a reference that is wrong (refused by field).
pub fn transient(e: &ServiceError) -> bool {
    matches!(e.code, ErrorCode::Unavailable | ErrorCode::Internal)
}

mod neighbors;
pub mod two_tower;

pub use two_tower::{
    follow_two_tower, load_two_tower, read_two_tower, run_two_tower, save_two_tower, two_tower_ref,
    write_two_tower, TwoTowerModel, TwoTowerSlot, TWO_TOWER_MODEL, TWO_TOWER_MODEL_NEXT,
};

#[cfg(test)]
mod tests;
