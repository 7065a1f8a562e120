//! `coldstart train encoder` and `coldstart train clusters`: the offline jobs of cluster recall.
//! Items come in the `items` import format (Parquet), events from the profile service's Parquet
//! event log (or any Parquet file with the `events` columns). The model is written as a versioned
//! artifact; `--publish` names it in etcd (`models/content`): every encoder swaps to it, every
//! sharder re-files its index under it, and the command waits until all of them announce it.

use crate::ConfigArgs;
use anyhow::Context;
use coldstart_artifact::{ContentModel, ModelRef, CONTENT_MODEL, CONTENT_MODEL_NEXT};
use coldstart_contracts::sharder::Assignment;
use coldstart_encoder::training::TrainConfig;
use coldstart_jobs::dataset::{read_items, read_training_events};
use coldstart_jobs::rollout::{self, Step, STAGED_ASSIGNMENTS, STAGED_MANIFEST};
use coldstart_jobs::training::{backbone_for, fit_clusters, train_encoder_on};
use coldstart_models::encoder::{Backbone, EncoderConfig};
use coldstart_runtime::discovery::{EtcdRegistry, EtcdSettings, Registry};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Subcommand)]
pub enum TrainCmd {
    /// Train the content encoder on triplets mined from the event log.
    Encoder(EncoderArgs),
    /// Encode every item, cluster the vectors (spherical k-means) and write the model.
    Clusters(ClustersArgs),
    /// Train the two-tower model on the event log and report held-out recall (over every item,
    /// and over the items new at the cut, where the default ID embedding decides).
    TwoTower(crate::two_tower::TwoTowerArgs),
}

#[derive(clap::Args)]
pub struct EncoderArgs {
    /// Items: a Parquet file or a folder of them, in the `items` import format.
    #[arg(long)]
    items: PathBuf,
    /// Events: a Parquet file or a folder (e.g. `{data_dir}/profile-0/log`).
    #[arg(long)]
    events: PathBuf,
    /// Model store: the version is written to `{out}/{version}/`.
    #[arg(long)]
    out: PathBuf,
    /// Version name (default: `v` and the time in ms).
    #[arg(long)]
    version: Option<String>,
    /// Output dimension.
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// Hidden width.
    #[arg(long, default_value_t = 128)]
    hidden: usize,
    /// Feature hash buckets.
    #[arg(long, default_value_t = 1 << 18)]
    buckets: usize,
    /// Triplet margin.
    #[arg(long, default_value_t = 0.3)]
    margin: f32,
    /// Passes over the triplets.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Events an item needs to take part.
    #[arg(long, default_value_t = 5)]
    min_exposure: usize,
    /// Length of items' image vectors to use (0: ignore images; hashed backbone only).
    #[arg(long, default_value_t = 0)]
    image_dim: usize,
    /// The encoder's input: `hashed` n-grams (and images), or the sentence vector of `minilm`
    /// (all-MiniLM-L6-v2, frozen; the network above it is trained as a projection head).
    #[arg(long, default_value = "hashed")]
    backbone: Backbone,
    /// The MiniLM folder, for `--backbone minilm`.
    #[arg(long)]
    minilm: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ClustersArgs {
    /// Items to cluster (the `items` import format).
    #[arg(long)]
    items: PathBuf,
    /// Model store holding `{version}/encoder.bin` from `train encoder`.
    #[arg(long)]
    out: PathBuf,
    /// Version to complete.
    #[arg(long)]
    version: String,
    /// Clusters (capped by the number of items).
    #[arg(long, default_value_t = 2048)]
    k: usize,
    /// Lloyd iterations.
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Roll the model out: `--stage`, then `--activate`, in one run.
    #[arg(long, conflicts_with_all = ["stage", "activate"])]
    publish: bool,
    /// Stage the model (`models/content-next`): every encoder files new items under it as well
    /// as under the current one; waits until all encoders do.
    #[arg(long, conflicts_with = "activate")]
    stage: bool,
    /// Activate a staged model without training again: read the items once more, assign the
    /// ones published since training to their nearest centroid, write the final forward index
    /// and name the model in etcd (`models/content`); every encoder swaps to it and every
    /// sharder re-files its index under it (items filed under the staged model during the
    /// rollout included); waits until all of them announce the version.
    #[arg(long)]
    activate: bool,
    /// Seconds to wait for each rollout step before failing.
    #[arg(long, default_value_t = 300)]
    wait_secs: u64,
    #[command(flatten)]
    config: ConfigArgs,
}

/// Any error of the workflows, as the binary reports it.
pub(crate) fn fail(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

pub async fn run(cmd: TrainCmd) -> anyhow::Result<()> {
    match cmd {
        TrainCmd::Encoder(a) => tokio::task::spawn_blocking(move || encoder(a)).await?,
        TrainCmd::Clusters(a) => clusters(a).await,
        TrainCmd::TwoTower(a) => {
            tokio::task::spawn_blocking(move || crate::two_tower::run(a)).await?
        }
    }
}

fn encoder(a: EncoderArgs) -> anyhow::Result<()> {
    let items = read_items(&a.items).map_err(fail)?;
    let events = read_training_events(&a.events).map_err(fail)?;
    let version = a
        .version
        .unwrap_or_else(|| format!("v{}", coldstart_runtime::now_ms()));
    let cfg = TrainConfig {
        encoder: EncoderConfig {
            buckets: a.buckets,
            hidden: a.hidden,
            dim: a.dim,
            image_dim: a.image_dim,
            margin: a.margin,
            backbone: a.backbone,
            ..Default::default()
        },
        epochs: a.epochs,
        min_exposure: a.min_exposure,
        ..Default::default()
    };
    let run = train_encoder_on(&items, &events, cfg, a.minilm.as_deref()).map_err(fail)?;
    let m = &run.mined;
    eprintln!(
        "{} items, {} events: {} training and {} held-out triplets from {} positive pairs over {} items",
        items.len(),
        events.len(),
        m.train.len(),
        m.held_out.len(),
        m.positive_pairs,
        m.eligible_items
    );
    // stage the encoder; `train clusters` completes the version with its centroids and manifest
    coldstart_artifact::write_encoder(&a.out.join(&version).join("encoder.bin"), &run.encoder)
        .map_err(fail)?;
    let last = run.epochs.last().context("no epoch ran")?;
    println!("encoder {version}: training loss {:.4}, held-out triplet accuracy {:.3} ({} held-out triplets)", last.train_loss, last.held_out_accuracy, m.held_out.len());
    println!(
        "next: coldstart train clusters --items {} --out {} --version {version} --publish",
        a.items.display(),
        a.out.display()
    );
    Ok(())
}

async fn connect(
    a: &ClustersArgs,
) -> anyhow::Result<(coldstart_jobs::config::Config, Arc<dyn Registry>)> {
    let cfg = a.config.load()?;
    let reg: Arc<dyn Registry> = Arc::new(
        EtcdRegistry::start(EtcdSettings::from_config(&cfg.process()))
            .await
            .map_err(fail)?,
    );
    Ok((cfg, reg))
}

async fn clusters(a: ClustersArgs) -> anyhow::Result<()> {
    if a.activate {
        let (model, prior) = rollout::open_staged(&a.out, &a.version)
            .map_err(|e| anyhow::anyhow!("{e} (stage the version first: --stage)"))?;
        let (cfg, reg) = connect(&a).await?;
        return activate(&a, &cfg, reg.as_ref(), model, prior).await;
    }
    let items = read_items(&a.items).map_err(fail)?;
    let staged = a.out.join(&a.version).join("encoder.bin");
    let encoder = coldstart_artifact::read_encoder(&staged)
        .map_err(|e| anyhow::anyhow!("{e} (run train encoder first)"))?;
    let (k, iterations) = (a.k.min(items.len()), a.iterations);
    if k == 0 {
        anyhow::bail!("no items in {}", a.items.display());
    }
    let version = a.version.clone();
    let backbone = backbone_for(&encoder.cfg, a.config.load()?.encoder.minilm_dir.as_deref())?;
    let (model, assignments, stats) = tokio::task::spawn_blocking(move || {
        fit_clusters(
            &version,
            encoder,
            &items,
            k,
            iterations,
            backbone.as_deref(),
        )
    })
    .await??;
    for s in &stats {
        eprintln!(
            "iteration {:>2}: objective {:.6}  reseeded {}",
            s.iteration, s.objective, s.reseeded
        );
    }
    let mut counts = vec![0usize; model.centroids.k()];
    assignments
        .iter()
        .for_each(|a| counts[a.cluster as usize] += 1);
    let largest = counts.iter().max().copied().unwrap_or(0);
    // the forward index item -> (cluster, vector) is saved with the model: sharders re-file from it
    if !(a.publish || a.stage) {
        let r = model.save(&a.out, &assignments).map_err(fail)?;
        println!(
            "model {}: {k} clusters (largest {largest} items), written to {}",
            r.version, r.uri
        );
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    let r = model
        .save_as(&a.out, &assignments, STAGED_MANIFEST, STAGED_ASSIGNMENTS)
        .map_err(fail)?;
    println!(
        "model {}: {k} clusters (largest {largest} items), staged at {}",
        r.version, r.uri
    );
    let (cfg, reg) = connect(&a).await?;
    name_model(&cfg, reg.as_ref(), CONTENT_MODEL_NEXT, &r, "staged").await?;
    wait_for(reg.as_ref(), &r.version, Step::Stage, a.wait_secs).await?;
    if a.publish {
        activate(&a, &cfg, reg.as_ref(), model, assignments).await?;
    }
    Ok(())
}

/// Prints a model reference and puts it under `models/{name}`.
async fn name_model(
    cfg: &coldstart_jobs::config::Config,
    reg: &dyn Registry,
    name: &str,
    r: &ModelRef,
    verb: &str,
) -> anyhow::Result<()> {
    let value = rollout::name_model(reg, name, r).await.map_err(fail)?;
    println!("{value}");
    println!("{verb} as /coldstart/{}/models/{name}", cfg.cluster);
    Ok(())
}

/// Completes the forward index with the items published since training (read again from
/// `--items`; items published from now on are filed under the staged version by the encoders),
/// writes the final manifest and names it in etcd, then waits for every encoder and sharder.
async fn activate(
    a: &ClustersArgs,
    cfg: &coldstart_jobs::config::Config,
    reg: &dyn Registry,
    model: ContentModel,
    prior: Vec<Assignment>,
) -> anyhow::Result<()> {
    let items = read_items(&a.items).map_err(fail)?;
    let backbone = backbone_for(&model.encoder.cfg, cfg.encoder.minilm_dir.as_deref())?;
    let (model, all, added) = tokio::task::spawn_blocking(move || {
        rollout::complete_assignments(&model, prior, &items, backbone.as_deref())
            .map(|(all, added)| (model, all, added))
    })
    .await?
    .map_err(fail)?;
    let r = model.save(&a.out, &all).map_err(fail)?;
    println!(
        "forward index of {}: {} items, {added} of them published since training, written to {}",
        r.version,
        all.len(),
        r.uri
    );
    name_model(cfg, reg, CONTENT_MODEL, &r, "published").await?;
    wait_for(reg, &r.version, Step::Activate, a.wait_secs).await
}

/// Waits until every member a rollout step concerns announces `version`, showing who is still
/// behind; fails naming them after `secs`.
pub(crate) async fn wait_for(
    reg: &dyn Registry,
    version: &str,
    step: Step,
    secs: u64,
) -> anyhow::Result<()> {
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("rollout {spinner} {msg}").expect("template"));
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    let res = rollout::wait_for(
        reg,
        version,
        step,
        std::time::Duration::from_secs(secs),
        |left| pb.set_message(format!("{} behind: {}", left.len(), left.join(", "))),
    )
    .await;
    pb.finish_and_clear();
    res.map_err(fail)?;
    let total = {
        let m = reg.watch().borrow().clone();
        rollout::behind(&m, version, step).1
    };
    match step {
        Step::Stage => println!("staged: {total} encoders file new items under {version} too"),
        Step::Activate => {
            println!("rollout complete: {total} encoders and sharders run {version}")
        }
        Step::StageTwoTower => println!(
            "staged: {total} sharders hold the pools of two-tower {version} beside the running one's"
        ),
        Step::TwoTower => println!(
            "rollout complete: {total} encoders, sharders (pools re-filed) and aggregators run two-tower {version}"
        ),
    }
    Ok(())
}
