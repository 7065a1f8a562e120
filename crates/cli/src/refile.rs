//! `coldstart refile`: the re-filing sweep. Items stored in no cluster (published while no
//! content model ran, or before an encoder refused publishes without one) are out of cluster
//! recall, and the sharders keep no title or body to encode them from. The sweep asks every
//! sharder for the items it holds without a cluster, takes their rows from the platform's
//! catalog (items in the import format) and publishes them again through the public API, so the
//! encoder files each in its cluster under the running model. It then asks again and counts:
//! found, re-published, not in the catalog, and still without a cluster.

use crate::ConfigArgs;
use anyhow::{bail, Context};
use coldstart_contracts::encoder::Item;
use coldstart_runtime::discovery::{EtcdRegistry, EtcdSettings, Registry, Role};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct RefileArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The catalog: items in the import format (a Parquet file or a folder of them) holding at
    /// least the rows of the items to re-file.
    #[arg(long)]
    items: PathBuf,
    /// The public API to publish through (default: an aggregator found in etcd).
    #[arg(long)]
    api: Option<String>,
    /// Rows per publish request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Only list and count; publish nothing.
    #[arg(long)]
    dry_run: bool,
}

/// What a sweep found and did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Sweep {
    /// Items without a cluster on some sharder before the sweep.
    pub unfiled: usize,
    /// Of them, published again from the catalog.
    pub republished: usize,
    /// Of them, not in the catalog (the first ids in `missing_ids`).
    pub missing: usize,
    /// Up to 20 of the ids not in the catalog.
    pub missing_ids: Vec<u64>,
    /// Items still without a cluster after the sweep.
    pub still_unfiled: usize,
}

pub async fn run(a: RefileArgs) -> anyhow::Result<()> {
    let cfg = a.config.load()?;
    let reg = EtcdRegistry::start(EtcdSettings::from_config(&cfg.process()))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let membership = reg.watch().borrow().clone();
    let sharders: Vec<String> = membership
        .role(Role::Sharder)
        .iter()
        .map(|m| m.http_addr.clone())
        .collect();
    if sharders.is_empty() {
        bail!("no sharder in etcd (cluster {:?})", cfg.cluster);
    }
    let api = match &a.api {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => match membership.role(Role::Aggregator).first() {
            Some(m) => format!("http://{}", m.http_addr),
            None => bail!("no aggregator in etcd: give --api"),
        },
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let before = unfiled(&client, &sharders).await?;
    let mut sweep = Sweep {
        unfiled: before.len(),
        ..Sweep::default()
    };
    println!(
        "{} items without a cluster on {} sharders",
        before.len(),
        sharders.len()
    );
    if !before.is_empty() {
        let catalog: HashMap<u64, Item> = coldstart_jobs::dataset::read_items(&a.items)
            .with_context(|| format!("--items {}", a.items.display()))?
            .into_iter()
            .filter(|i| before.contains(&i.item_id))
            .map(|i| (i.item_id, i))
            .collect();
        let mut rows: Vec<Item> = Vec::with_capacity(catalog.len());
        for id in &before {
            match catalog.get(id) {
                Some(i) => rows.push(i.clone()),
                None => {
                    sweep.missing += 1;
                    if sweep.missing_ids.len() < 20 {
                        sweep.missing_ids.push(*id);
                    }
                }
            }
        }
        if !a.dry_run {
            publish(&client, &api, &rows, a.batch, cfg.limits.image_dim).await?;
            sweep.republished = rows.len();
        }
    }
    sweep.still_unfiled = unfiled(&client, &sharders).await?.len();
    println!("{}", serde_json::to_string_pretty(&sweep)?);
    if sweep.missing > 0 {
        bail!(
            "{} unfiled items are not in --items {} (first: {:?}): publish them again with their content",
            sweep.missing,
            a.items.display(),
            sweep.missing_ids
        );
    }
    if !a.dry_run && sweep.still_unfiled > 0 {
        bail!(
            "{} items are still without a cluster: does an encoder run a content model (`coldstart status`)?",
            sweep.still_unfiled
        );
    }
    Ok(())
}

/// Every item some sharder holds without a cluster (replicas answer for the same items once).
async fn unfiled(client: &reqwest::Client, sharders: &[String]) -> anyhow::Result<BTreeSet<u64>> {
    let mut ids = BTreeSet::new();
    for addr in sharders {
        let mut after: Option<u64> = None;
        loop {
            let mut url = format!("http://{addr}/v1/items/unfiled?limit=10000");
            if let Some(a) = after {
                url.push_str(&format!("&after={a}"));
            }
            let page: serde_json::Value = client
                .get(&url)
                .send()
                .await
                .with_context(|| format!("sharder {addr}"))?
                .error_for_status()
                .with_context(|| format!("sharder {addr}"))?
                .json()
                .await?;
            for it in page["items"].as_array().into_iter().flatten() {
                if let Some(id) = it["item_id"].as_u64() {
                    ids.insert(id);
                }
            }
            match page["next"].as_u64() {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    }
    Ok(ids)
}

/// Publishes `rows` through the public API in Arrow batches of `batch` rows.
async fn publish(
    client: &reqwest::Client,
    api: &str,
    rows: &[Item],
    batch: usize,
    image_dim: usize,
) -> anyhow::Result<()> {
    let pb = ProgressBar::new(rows.len() as u64);
    pb.set_style(
        ProgressStyle::with_template("re-filing [{bar:40}] {pos}/{len} {per_sec}")
            .expect("template")
            .progress_chars("=> "),
    );
    for chunk in rows.chunks(batch.max(1)) {
        let body = coldstart_runtime::ipc::encode(&Item::to_batch(chunk, image_dim));
        let r = client
            .post(format!("{api}/v1/items"))
            .header("content-type", coldstart_aggregator::api::ARROW_STREAM)
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {api}/v1/items"))?;
        let status = r.status();
        if !status.is_success() {
            let text = r.text().await.unwrap_or_default();
            bail!("POST {api}/v1/items: {status}: {text}");
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish();
    Ok(())
}
