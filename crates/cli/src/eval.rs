//! `coldstart eval` and `coldstart data movielens`: the flags; the work is in `coldstart_jobs`.

use crate::ConfigArgs;
use anyhow::Context as _;
use coldstart_encoder::training::TrainConfig;
use coldstart_jobs::dataset::{self, Dataset};
use coldstart_jobs::eval::{self, Options};
use coldstart_models::encoder::{Backbone, EncoderConfig};
use coldstart_models::two_tower::{DefaultMethod, TwoTowerConfig};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Items in the `items` import format (a Parquet file or a folder of them).
    #[arg(long)]
    items: PathBuf,
    /// Events in the `events` import format.
    #[arg(long)]
    events: PathBuf,
    /// Users in the `users` import format.
    #[arg(long)]
    users: PathBuf,
    /// A split.json whose keys (cold_items, new_users, new_user_seed_items, at) override the
    /// computed split; the split in force is written to OUT/split.json.
    #[arg(long)]
    split: Option<PathBuf>,
    /// Cutoffs, comma-separated.
    #[arg(long, default_value = "20,50,100", value_delimiter = ',')]
    k: Vec<usize>,
    /// Report directory: report.json, report.md, recall.svg, split.json, the model, the cluster's data.
    #[arg(long)]
    out: PathBuf,
    /// Content model clusters (default: one per 20 warm items, at least 8).
    #[arg(long)]
    clusters: Option<usize>,
    /// Encoder training epochs.
    #[arg(long, default_value_t = 8)]
    epochs: usize,
    /// Encoder output dimension.
    #[arg(long, default_value_t = 32)]
    dim: usize,
    /// Evaluate on the training part of the split instead, split again by the same rules: for
    /// tuning without touching a test user.
    #[arg(long)]
    validation: bool,
    /// With `--validation`: the share of the backtest's users (newest by sign-up) that are new.
    /// The test's rule is 0.1; a larger share makes the backtest's user task less noisy.
    #[arg(long, default_value_t = 0.1)]
    validation_new_users: f64,
    /// Content encoder backbones, each evaluated through its own served run: `hashed`,
    /// `minilm` (a build with the cargo feature `minilm`), or both, comma-separated.
    #[arg(long, default_value = "hashed", value_delimiter = ',')]
    backbones: Vec<Backbone>,
    /// The all-MiniLM-L6-v2 folder (config.json, tokenizer.json, model.safetensors), for
    /// `--backbones minilm`; default `encoder.minilm_dir` of the config.
    #[arg(long)]
    minilm: Option<PathBuf>,
    /// Sharders in the in-process cluster.
    #[arg(long, default_value_t = 2)]
    sharders: usize,
    /// The two-tower model's default ID methods to evaluate, comma-separated (`shared`, `mean`,
    /// `content`): the first is served through both tasks and the item task is also asked
    /// without the channel; each other one is rolled out and asked on the item task after it.
    /// `none`: no two-tower model.
    #[arg(long, default_value = "shared", value_delimiter = ',')]
    two_tower: Vec<String>,
    /// Passes of two-tower training over the training events.
    #[arg(long, default_value_t = 3)]
    two_tower_epochs: usize,
    /// The two-tower model's softmax temperature.
    #[arg(long, default_value_t = 0.05)]
    two_tower_temperature: f32,
    /// The two-tower model's AdaGrad learning rate.
    #[arg(long, default_value_t = 0.05)]
    two_tower_learning_rate: f32,
    /// The two-tower model's output dimension.
    #[arg(long, default_value_t = 64)]
    two_tower_dim: usize,
    /// The two-tower model's batch (its in-batch negatives).
    #[arg(long, default_value_t = 256)]
    two_tower_batch: usize,
    /// Extra negatives per two-tower batch drawn uniformly from the catalog (256: chosen on the
    /// backtest).
    #[arg(long, default_value_t = 256)]
    two_tower_uniform_negatives: usize,
    /// Weight of the two-tower model's co-engagement term (each item also scored from the item
    /// engaged before it through the item tower; 0: off; 1: chosen on the backtest).
    #[arg(long, default_value_t = 1.0)]
    two_tower_item_item: f32,
    /// The co-engagement term's anchor is one of the user's last this many engagements (1: the
    /// one just before).
    #[arg(long, default_value_t = 1)]
    two_tower_item_item_window: usize,
    /// Co-engagement neighbours the two-tower model keeps per item, for new users' channel
    /// (0: none).
    #[arg(long, default_value_t = 200)]
    two_tower_neighbors: usize,
    /// User cold-start variants asked on the user task beside the configured model
    /// (`[new_users]`), each its own two-tower model, comma-separated: none, weight, bias, meta,
    /// knn, group, or `all`; empty: only the configured model.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    user_variants: Vec<String>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(clap::Subcommand)]
pub enum DataCmd {
    /// Converts MovieLens 100k (ml-100k.inter, .item, .user from the recbole wheel; see
    /// ../shared/data/README.md) into items/events/users Parquet files in the import format.
    Movielens {
        /// Folder with the ml-100k files.
        #[arg(long)]
        from: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn data(cmd: DataCmd) -> anyhow::Result<()> {
    match cmd {
        DataCmd::Movielens { from, out } => {
            let d = dataset::movielens(&from)?;
            d.write(&out, 0)?;
            println!(
                "{} items, {} events, {} users written to {}",
                d.items.len(),
                d.events.len(),
                d.users.len(),
                out.display()
            );
            Ok(())
        }
    }
}

pub async fn run(a: EvalArgs) -> anyhow::Result<()> {
    if a.config.cluster.is_some() || a.config.etcd.is_some() {
        anyhow::bail!("eval runs its own in-process cluster: --cluster and --etcd do not apply");
    }
    let mut cfg = a.config.load()?;
    cfg.discovery.backend = "memory".into();
    let cfg_for_opts = cfg.clone();
    let users_cfg = cfg.new_users.model(cfg.profile.new_user_max_interactions)?;
    let data = Dataset::read(&a.items, &a.events, &a.users)?;
    let opts = Options {
        ks: a.k,
        out: a.out.clone(),
        split: a.split,
        clusters: a.clusters,
        train: TrainConfig {
            encoder: EncoderConfig {
                buckets: 1 << 16,
                hidden: 64,
                dim: a.dim,
                ..Default::default()
            },
            epochs: a.epochs,
            ..Default::default()
        },
        iterations: 20,
        cfg,
        sharders: a.sharders,
        concurrency: 8,
        validation: a.validation,
        validation_new_users: a.validation_new_users,
        minilm_dir: a.minilm.or_else(|| cfg_for_opts.encoder.minilm_dir.clone()),
        backbones: a.backbones,
        two_tower: a
            .two_tower
            .iter()
            .filter(|m| m.as_str() != "none")
            .map(|m| {
                m.parse::<DefaultMethod>()
                    .map_err(|e| anyhow::anyhow!("--two-tower: {e}"))
            })
            .collect::<anyhow::Result<_>>()?,
        two_tower_cfg: TwoTowerConfig {
            buckets: 1 << 16,
            epochs: a.two_tower_epochs,
            temperature: a.two_tower_temperature,
            learning_rate: a.two_tower_learning_rate,
            dim: a.two_tower_dim,
            batch: a.two_tower_batch,
            uniform_negatives: a.two_tower_uniform_negatives,
            item_item: a.two_tower_item_item,
            item_item_window: a.two_tower_item_item_window,
            neighbors: a.two_tower_neighbors,
            users: users_cfg.clone(),
            ..Default::default()
        },
        user_variants: a
            .user_variants
            .iter()
            .filter(|v| !v.is_empty())
            .flat_map(|v| {
                if v == "all" {
                    eval::USER_VARIANTS.to_vec()
                } else {
                    vec![v.as_str()]
                }
            })
            .map(|v| Ok((v.to_string(), eval::user_variant(v, &users_cfg)?)))
            .collect::<Result<_, coldstart_jobs::Error>>()?,
    };
    let report = eval::run(data, opts).await.context("eval")?;
    println!("{}", report.markdown());
    println!(
        "report: {}, {}, {}",
        a.out.join("report.md").display(),
        a.out.join("report.json").display(),
        a.out.join("recall.svg").display()
    );
    Ok(())
}
