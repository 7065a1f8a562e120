//! `coldstart train two-tower`: trains the two-tower model on a data set in the import format
//! (events from a file or a profile partition's event log), prints held-out recall per default
//! method, and writes the model of the chosen method as `{out}/{version}/two_tower.bin`.

use crate::train::fail;
use anyhow::Context;
use coldstart_jobs::dataset::{read_items, read_training_events, read_users};
use coldstart_jobs::two_tower::{compare_methods, prepare, train_and_evaluate, Run};
use coldstart_models::two_tower::{DefaultMethod, TwoTower, TwoTowerConfig};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct TwoTowerArgs {
    /// Items (the `items` import format).
    #[arg(long)]
    items: PathBuf,
    /// Events: the `events` import format (a file or a folder), or a profile partition's event
    /// log folder (`{data_dir}/profile-0/log`).
    #[arg(long)]
    events: PathBuf,
    /// Users (the `users` import format), for the user tower's attributes.
    #[arg(long)]
    users: Option<PathBuf>,
    /// A content model's manifest (`{out}/{version}/manifest.json`): items' content vectors
    /// become the item tower's dense input, and the mean of a user's recent items' the user
    /// tower's. Without it the towers use IDs, attributes, categories and keywords only.
    #[arg(long)]
    content_model: Option<PathBuf>,
    /// The MiniLM folder, for a content model with the `minilm` backbone.
    #[arg(long)]
    minilm: Option<PathBuf>,
    /// Model store: the model is written to `{out}/{version}/two_tower.bin`.
    #[arg(long)]
    out: PathBuf,
    /// Version name (default: `tt` and the time in ms).
    #[arg(long)]
    version: Option<String>,
    /// How new items get their ID embedding: shared, mean or content.
    #[arg(long, default_value = "shared")]
    default_method: DefaultMethod,
    /// Train and evaluate every default method on the same data, and the chosen one without the
    /// new-user weighting (the model written is the one of --default-method, as configured).
    #[arg(long)]
    compare: bool,
    /// Interactions an item needs before it uses its own ID.
    #[arg(long, default_value_t = 5)]
    min_interactions: u32,
    /// Output dimension.
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// Hidden width.
    #[arg(long, default_value_t = 128)]
    hidden: usize,
    /// Feature hash buckets per tower.
    #[arg(long, default_value_t = 1 << 18)]
    buckets: usize,
    /// Passes over the pairs.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Pairs per batch (the in-batch negatives).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Extra negatives per batch drawn uniformly from the catalog, beside the in-batch ones
    /// (mixed negative sampling; 0: in-batch only). 256 was chosen on the MovieLens backtest.
    #[arg(long, default_value_t = 256)]
    uniform_negatives: usize,
    /// Weight of the co-engagement term: each item also scored from the item engaged before it
    /// through the item tower, so that a new user's first items place them (0: off; 1 was
    /// chosen on the MovieLens backtest).
    #[arg(long, default_value_t = 1.0)]
    item_item: f32,
    /// The co-engagement term's anchor is one of the user's last this many engagements (1: the
    /// one just before).
    #[arg(long, default_value_t = 1)]
    item_item_window: usize,
    /// Co-engagement neighbours kept per item for new users' channel (0: none).
    #[arg(long, default_value_t = 200)]
    neighbors: usize,
    /// Softmax temperature.
    #[arg(long, default_value_t = 0.05)]
    temperature: f32,
    /// AdaGrad learning rate.
    #[arg(long, default_value_t = 0.05)]
    learning_rate: f32,
    /// Share of the engagements, the latest, held out for evaluation.
    #[arg(long, default_value_t = 0.1)]
    held_out: f64,
    /// Recall is measured at this k.
    #[arg(long, default_value_t = 50)]
    k: usize,
    /// Recent items (liked, collected, shared) a user keeps.
    #[arg(long, default_value_t = 20)]
    last_n: usize,
    /// Name the model in etcd (`models/two-tower`): encoders file new items with it, sharders
    /// re-file their pools under it, aggregators compute users' vectors with it; waits until
    /// every one of them runs it.
    #[arg(long)]
    publish: bool,
    /// Seconds to wait for the rollout.
    #[arg(long, default_value_t = 300)]
    wait_secs: u64,
    #[command(flatten)]
    config: crate::ConfigArgs,
}

fn print(runs: &[&Run]) {
    println!(
        "{:<9} {:<9} {:>8} {:>10} {:>9} {:>10} {:>10} {:>10} {:>10}",
        "default",
        "users",
        "pairs",
        "train s",
        "loss",
        "recall@k",
        "new items",
        "new users",
        "old users"
    );
    for r in runs {
        println!(
            "{:<9} {:<9} {:>8} {:>10.1} {:>9.4} {:>10.4} {:>10.4} {:>10.4} {:>10.4}",
            r.method,
            r.user_method,
            r.pairs,
            r.train_secs,
            r.last_loss,
            r.recall,
            r.recall_new,
            r.recall_new_users,
            r.recall_old_users
        );
    }
    if let Some(r) = runs.first() {
        println!(
            "(k = {}; {} held-out pairs, {} of items new at the cut, ranked among the new items)",
            r.k, r.held_out.0, r.held_out.1
        );
    }
}

pub fn run(a: TwoTowerArgs) -> anyhow::Result<()> {
    let items = read_items(&a.items).map_err(fail)?;
    // an events file, or a profile partition's event log folder (its user files left out)
    let events: Vec<coldstart_contracts::profile::Event> = read_training_events(&a.events)
        .map_err(fail)?
        .into_iter()
        .map(|l| l.event)
        .collect();
    let users = match &a.users {
        Some(p) => read_users(p).map_err(fail)?,
        None => Vec::new(),
    };
    let content: HashMap<u64, Vec<f32>> = match &a.content_model {
        Some(manifest) => {
            let files = coldstart_artifact::ModelRef::of_manifest(manifest)
                .and_then(|r| coldstart_artifact::ModelFiles::open(&r))
                .map_err(fail)?;
            let model = coldstart_artifact::ContentModel {
                version: String::new(),
                centroids: files.centroids().map_err(fail)?,
                encoder: files.encoder().map_err(fail)?,
            };
            let backbone =
                coldstart_jobs::training::backbone_for(&model.encoder.cfg, a.minilm.as_deref())?;
            coldstart_jobs::training::content_vectors(&model, &items, backbone.as_deref())
                .map_err(fail)?
        }
        None => HashMap::new(),
    };
    let content_dim = content.values().next().map_or(0, Vec::len);
    // who is new and how the model treats them: [new_users] and the profile's rule
    let config = a.config.load()?;
    let users_cfg = config
        .new_users
        .model(config.profile.new_user_max_interactions)
        .map_err(fail)?;
    let cfg = TwoTowerConfig {
        buckets: a.buckets,
        hidden: a.hidden,
        dim: a.dim,
        content_dim,
        temperature: a.temperature,
        learning_rate: a.learning_rate,
        batch: a.batch,
        epochs: a.epochs,
        seed: 1,
        default_method: a.default_method,
        min_interactions: a.min_interactions,
        uniform_negatives: a.uniform_negatives,
        item_item: a.item_item,
        item_item_window: a.item_item_window,
        neighbors: a.neighbors,
        users: users_cfg,
    };
    // featurising depends on the buckets and the users' part: one replay serves every default
    // method
    let shape = TwoTower::new(cfg.clone()).map_err(fail)?;
    let data = prepare(
        &shape, &items, &events, &users, &content, a.held_out, a.last_n,
    )
    .map_err(fail)?;
    drop(shape);
    eprintln!(
        "{} items, {} events: {} training pairs, {} held out",
        items.len(),
        events.len(),
        data.set.pairs.len(),
        data.held_out.len()
    );
    let (model, runs) = if a.compare {
        let mut all = compare_methods(&cfg, &data, a.k).map_err(fail)?;
        // and the chosen method without the new-user weighting (weight 1, no future targets):
        // what it does to new and to old users
        let plain_cfg = TwoTowerConfig {
            default_method: a.default_method,
            users: coldstart_models::two_tower::UserColdConfig {
                new_user_weight: 1.0,
                future_targets: 0,
                ..cfg.users.clone()
            },
            ..cfg.clone()
        };
        let plain_shape = TwoTower::new(plain_cfg.clone()).map_err(fail)?;
        let plain_data = prepare(
            &plain_shape,
            &items,
            &events,
            &users,
            &content,
            a.held_out,
            a.last_n,
        )
        .map_err(fail)?;
        let (_, mut plain) = train_and_evaluate(plain_cfg, &plain_data, a.k).map_err(fail)?;
        plain.user_method.push_str(" unweighted");
        let mut rows: Vec<&Run> = all.iter().map(|x| &x.1).collect();
        rows.push(&plain);
        print(&rows);
        let pick = all
            .iter()
            .position(|(m, _)| m.cfg.default_method == a.default_method)
            .context("the chosen method was trained")?;
        let (m, r) = all.swap_remove(pick);
        (m, vec![r])
    } else {
        let (m, r) = train_and_evaluate(cfg, &data, a.k).map_err(fail)?;
        print(&[&r]);
        (m, vec![r])
    };
    let version = a
        .version
        .unwrap_or_else(|| format!("tt{}", coldstart_runtime::now_ms()));
    let r = coldstart_artifact::save_two_tower(&a.out, &version, &model).map_err(fail)?;
    println!(
        "two-tower {version} ({} default): written to {}",
        model.cfg.default_method, r.uri
    );
    println!("{}", serde_json::to_string(&runs[0])?);
    println!("{}", serde_json::to_string(&r)?);
    if a.publish {
        let cfg = config;
        tokio::runtime::Handle::current().block_on(async {
            let reg = coldstart_runtime::discovery::EtcdRegistry::start(
                coldstart_runtime::discovery::EtcdSettings::from_config(&cfg.process()),
            )
            .await
            .map_err(fail)?;
            println!(
                "rolling out as /coldstart/{}/models/{} (staged at {}, then activated)",
                cfg.cluster,
                coldstart_artifact::TWO_TOWER_MODEL,
                coldstart_artifact::TWO_TOWER_MODEL_NEXT
            );
            coldstart_jobs::rollout::roll_out_two_tower(&reg, &r, |step| {
                let (reg, version) = (&reg, &r.version);
                async move {
                    crate::train::wait_for(reg, version, step, a.wait_secs)
                        .await
                        .map_err(|e| coldstart_runtime::ServiceError::unavailable(format!("{e:#}")))
                }
            })
            .await
            .map_err(fail)
        })?;
    }
    Ok(())
}
