//! `coldstart-bench two-tower`: the time to train the two-tower model on a synthetic event log
//! of a given size (topics of items, users who prefer a few topics, Zipf-popular items), with
//! held-out recall printed beside it so a fast but useless run shows.

use coldstart_contracts::encoder::Item;
use coldstart_contracts::profile::{Event, User};
use coldstart_contracts::types::Action;
use coldstart_jobs::two_tower::{prepare, train_and_evaluate};
use coldstart_models::two_tower::{TwoTower, TwoTowerConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::time::Instant;

#[derive(clap::Args)]
pub struct TwoTowerBench {
    /// Events.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Items.
    #[arg(long, default_value_t = 50_000)]
    items: u64,
    /// Users.
    #[arg(long, default_value_t = 20_000)]
    users: u64,
    /// Output dimension.
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// Passes over the pairs.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Uniform catalog negatives per batch beside the in-batch ones (`train two-tower`'s
    /// default is 256).
    #[arg(long, default_value_t = 256)]
    uniform_negatives: usize,
    /// Weight of the co-engagement term (`train two-tower`'s default is 1; 0: off).
    #[arg(long, default_value_t = 1.0)]
    item_item: f32,
    /// Random seed.
    #[arg(long, default_value_t = 9)]
    seed: u64,
}

const TOPICS: u64 = 100;

fn data(a: &TwoTowerBench) -> (Vec<Item>, Vec<Event>, Vec<User>) {
    let mut rng = SmallRng::seed_from_u64(a.seed);
    let items: Vec<Item> = (0..a.items)
        .map(|i| Item {
            item_id: i,
            publish_ts: i as i64 * 1000,
            author_id: None,
            category: format!("topic{}", i % TOPICS),
            keywords: vec![format!("tag{}", (i * 7) % 500)],
            title: format!("item {i}"),
            body: None,
            image_vec: None,
            quality: None,
            author_quality: None,
        })
        .collect();
    let users: Vec<User> = (0..a.users)
        .map(|u| User {
            user_id: u,
            signup_ts: 0,
            gender: Some(if u.is_multiple_of(2) { "f" } else { "m" }.into()),
            region: Some(format!("r{}", u % 10)),
            ..Default::default()
        })
        .collect();
    let per_topic = (a.items / TOPICS).max(1);
    let actions = [
        Action::Click,
        Action::Like,
        Action::Like,
        Action::Collect,
        Action::Share,
    ];
    let events = (0..a.events)
        .map(|n| {
            let u = rng.random_range(0..a.users);
            // each user prefers two topics; one event in five is anywhere
            let topic = if rng.random_bool(0.8) {
                (u * 13 + rng.random_range(0..2)) % TOPICS
            } else {
                rng.random_range(0..TOPICS)
            };
            // Zipf-like popularity within the topic
            let rank = (per_topic as f64 * rng.random::<f64>().powi(3)) as u64;
            Event {
                user_id: u,
                item_id: (rank * TOPICS + topic).min(a.items - 1),
                ts: n as i64,
                action: actions[rng.random_range(0..actions.len())],
                dwell_ms: None,
                request_id: None,
            }
        })
        .collect();
    (items, events, users)
}

pub fn run(a: TwoTowerBench) -> anyhow::Result<()> {
    let (items, events, users) = data(&a);
    let cfg = TwoTowerConfig {
        dim: a.dim,
        epochs: a.epochs,
        uniform_negatives: a.uniform_negatives,
        item_item: a.item_item,
        ..Default::default()
    };
    let t = Instant::now();
    let shape = TwoTower::new(cfg.clone())?;
    let prepared = prepare(&shape, &items, &events, &users, &HashMap::new(), 0.1, 20)?;
    let prepare_s = t.elapsed().as_secs_f64();
    let (_, run) = train_and_evaluate(cfg, &prepared, 50)?;
    println!(
        "two-tower: {} events ({} training pairs), dim {}, {} uniform negatives a batch, co-engagement weight {}, {} epoch(s): replay {prepare_s:.1} s, training {:.1} s ({:.1} s per epoch); held-out recall@50 {:.4}, of new items {:.4}",
        a.events,
        run.pairs,
        a.dim,
        a.uniform_negatives,
        a.item_item,
        a.epochs,
        run.train_secs,
        run.train_secs / a.epochs.max(1) as f64,
        run.recall,
        run.recall_new
    );
    let result = serde_json::json!({
        "events": a.events, "pairs": run.pairs, "dim": a.dim, "epochs": a.epochs,
        "uniform_negatives": a.uniform_negatives, "item_item": a.item_item,
        "prepare_s": prepare_s, "train_s": run.train_secs, "recall": run.recall,
        "recall_new": run.recall_new,
    });
    println!("BENCH {result}");
    Ok(())
}
