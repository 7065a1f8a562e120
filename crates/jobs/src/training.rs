//! Training the content model with progress bars: the encoder on triplets mined from events, then
//! spherical k-means over every item's vector, giving the model and its forward index. `coldstart
//! train` and `coldstart eval` run the same code.

use coldstart_artifact::ContentModel;
use coldstart_contracts::encoder::Item;
use coldstart_contracts::profile::LoggedEvent;
use coldstart_contracts::sharder::Assignment;
use coldstart_encoder::training::{self, EpochStats, Mined, TrainConfig};
use coldstart_models::encoder::{Backbone, Encoder, Features, SentenceEncoder};
use coldstart_models::kmeans::{self, IterationStats, KMeansConfig};
use indicatif::{ProgressBar, ProgressStyle};

/// The backbone a model with `cfg` reads: none for hashed features; for MiniLM the model in
/// `dir` (an error naming what is missing otherwise).
pub fn backbone_for(
    cfg: &coldstart_models::encoder::EncoderConfig,
    dir: Option<&std::path::Path>,
) -> coldstart_models::Result<Option<std::sync::Arc<dyn SentenceEncoder>>> {
    match cfg.backbone {
        Backbone::Hashed => Ok(None),
        Backbone::MiniLm => {
            let dir = dir.ok_or_else(|| {
                coldstart_models::Error::Backbone(
                    "the minilm backbone needs its folder (--minilm DIR, or encoder.minilm_dir)"
                        .into(),
                )
            })?;
            coldstart_models::encoder::load_minilm(dir).map(Some)
        }
    }
}

/// A progress bar in the house style.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!("{what:<12} [{{bar:30}}] {{pos}}/{{len}} {{msg}}"))
            .expect("template")
            .progress_chars("=> "),
    );
    pb
}

/// Trains the encoder on mined triplets with a progress bar of steps and per-epoch loss and
/// held-out accuracy.
pub fn train_encoder(
    feats: &[Features],
    mined: &Mined,
    cfg: &TrainConfig,
) -> coldstart_models::Result<(Encoder, Vec<EpochStats>)> {
    let pb = bar(
        (mined.train.len().div_ceil(cfg.batch.max(1)) * cfg.epochs) as u64,
        "encoder",
    );
    let out = training::train(
        feats,
        mined,
        cfg,
        || pb.inc(1),
        |s| {
            pb.set_message(format!(
                "epoch {} loss {:.4} held-out acc {:.3}",
                s.epoch, s.train_loss, s.held_out_accuracy
            ))
        },
    );
    pb.finish();
    out
}

/// What training the encoder on a data set gives.
pub struct EncoderRun {
    /// The trained encoder (its config's `image_dim` set to the backbone's, if any).
    pub encoder: Encoder,
    /// Per epoch.
    pub epochs: Vec<EpochStats>,
    /// The triplets it was trained and checked on.
    pub mined: Mined,
}

/// Mines triplets from `events` over `items` and trains an encoder on them, with the backbone
/// `cfg` names (from `minilm`, for MiniLM). Fails, saying what the data lacks, when there is
/// nothing to train on.
pub fn train_encoder_on(
    items: &[Item],
    events: &[LoggedEvent],
    mut cfg: TrainConfig,
    minilm: Option<&std::path::Path>,
) -> crate::Result<EncoderRun> {
    let mined = training::mine(items, events, &cfg);
    if mined.train.is_empty() {
        return Err(crate::Error::Invalid(format!(
            "no training triplets in {} items and {} events: items need at least {} events and users who engaged two items of one category",
            items.len(),
            events.len(),
            cfg.min_exposure
        )));
    }
    let backbone = backbone_for(&cfg.encoder, minilm)?;
    if let Some(b) = &backbone {
        cfg.encoder.image_dim = b.dim();
    }
    let feats = training::item_features(items, &cfg.encoder, backbone.as_deref())?;
    let (encoder, epochs) = train_encoder(&feats, &mined, &cfg)?;
    Ok(EncoderRun {
        encoder,
        epochs,
        mined,
    })
}

/// Encodes `items` and clusters their vectors into `k` clusters (capped by the items), with a
/// progress bar of iterations. Returns the model, the forward index (each item's cluster and
/// vector) and the objective per iteration.
pub fn fit_clusters(
    version: &str,
    encoder: Encoder,
    items: &[Item],
    k: usize,
    iterations: usize,
    backbone: Option<&dyn SentenceEncoder>,
) -> coldstart_models::Result<(ContentModel, Vec<Assignment>, Vec<IterationStats>)> {
    let dim = encoder.cfg.dim;
    let feats = training::item_features(items, &encoder.cfg, backbone)?;
    let mut points = Vec::with_capacity(items.len() * dim);
    for f in &feats {
        points.extend_from_slice(encoder.encode(f)?.as_slice());
    }
    let pb = bar(iterations as u64, "k-means");
    let cfg = KMeansConfig {
        k: k.min(items.len()).max(1),
        iterations,
        ..Default::default()
    };
    let (centroids, labels, stats) = kmeans::train(&points, dim, &cfg, |s| {
        pb.set_message(format!(
            "objective {:.5}, reseeded {}",
            s.objective, s.reseeded
        ));
        pb.inc(1);
    })?;
    pb.finish();
    let assignments = items
        .iter()
        .zip(&labels)
        .zip(points.chunks(dim))
        .map(|((it, &cluster), v)| Assignment {
            item_id: it.item_id,
            cluster,
            publish_ts: it.publish_ts,
            vector: Some(v.to_vec()),
        })
        .collect();
    Ok((
        ContentModel {
            version: version.to_string(),
            encoder,
            centroids,
        },
        assignments,
        stats,
    ))
}

/// What training a content model reports.
#[derive(Debug, Clone)]
pub struct ContentTraining {
    /// Triplets mined for training and held out.
    pub triplets: (usize, usize),
    /// The encoder's last epoch.
    pub encoder: Option<EpochStats>,
    /// Clusters and the final k-means objective.
    pub clusters: (usize, f64),
}

/// The whole content model from items and their events: mine, train the encoder (with a
/// backbone, its projection head), cluster, and the forward index item → cluster.
pub fn train_content_model(
    version: &str,
    items: &[Item],
    events: &[LoggedEvent],
    cfg: &TrainConfig,
    k: usize,
    iterations: usize,
    backbone: Option<&dyn SentenceEncoder>,
) -> coldstart_models::Result<(ContentModel, Vec<Assignment>, ContentTraining)> {
    let mined = training::mine(items, events, cfg);
    let mut cfg = cfg.clone();
    if cfg.encoder.backbone == Backbone::MiniLm {
        if let Some(b) = backbone {
            cfg.encoder.image_dim = b.dim();
        }
    }
    let feats = training::item_features(items, &cfg.encoder, backbone)?;
    let (encoder, stats) = train_encoder(&feats, &mined, &cfg)?;
    let (model, assignments, kstats) =
        fit_clusters(version, encoder, items, k, iterations, backbone)?;
    let report = ContentTraining {
        triplets: (mined.train.len(), mined.held_out.len()),
        encoder: stats.last().copied(),
        clusters: (
            model.centroids.k(),
            kstats.last().map(|s| s.objective).unwrap_or(0.0),
        ),
    };
    Ok((model, assignments, report))
}

/// Every item's content vector under `model` (CPU work: call it off the async runtime).
pub fn content_vectors(
    model: &ContentModel,
    items: &[Item],
    backbone: Option<&dyn SentenceEncoder>,
) -> crate::Result<std::collections::HashMap<u64, Vec<f32>>> {
    let feats = training::item_features(items, &model.encoder.cfg, backbone)?;
    items
        .iter()
        .zip(&feats)
        .map(|(it, f)| Ok((it.item_id, model.encoder.encode(f)?.as_slice().to_vec())))
        .collect()
}
