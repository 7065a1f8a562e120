//! One recall: profile → interest keys → the owning sharders (one Flight call per sharder, in
//! parallel) → merge by quota → top k with the channels that recalled each item.

use crate::cluster_recall;
use crate::merge::{merge, ChannelHits, IdSet, MergeParams};
use coldstart_common::cluster::Cluster;
use coldstart_common::config::AggregatorConfig;
use coldstart_common::discovery::Role;
use coldstart_common::routing::normalise;
use coldstart_common::rows::{Candidate, ProfileView};
use coldstart_common::validate::now_ms;
use coldstart_common::ServiceResult;
use coldstart_proto::{ticket, ListQuery, ProfileRequest, Ticket};
use std::collections::{HashMap, HashSet};
use tracing::Instrument;

/// Reads a user's profile from the profile partition that owns the user (empty when unknown).
pub async fn profile(cluster: &Cluster, user_id: u64) -> ServiceResult<ProfileView> {
    let m = cluster.owner(Role::Profile, user_id).await?;
    let t = Ticket {
        kind: Some(ticket::Kind::Profile(ProfileRequest { user_id })),
    };
    let batches = cluster.pool.get(&m.flight_addr, &t).await?;
    for b in &batches {
        if let Some(v) = ProfileView::from_batch(b)?.into_iter().next() {
            return Ok(v);
        }
    }
    Ok(ProfileView {
        user_id,
        is_new: true,
        ..Default::default()
    })
}

fn normalised_top(list: &[(String, f32)], n: usize) -> Vec<(String, f32)> {
    let mut out: Vec<(String, f32)> = Vec::new();
    for (k, w) in list {
        let k = normalise(k);
        if k.is_empty() || out.iter().any(|(o, _)| *o == k) {
            continue;
        }
        out.push((k, *w));
        if out.len() == n {
            break;
        }
    }
    let max = out.iter().map(|x| x.1).fold(0.0f32, f32::max);
    if max > 0.0 {
        out.iter_mut().for_each(|x| x.1 /= max);
    }
    out
}

/// Cluster recall: the user's last liked, collected and shared items (seeds) → their clusters
/// through the forward index → the newest `cluster_m` items of each cluster → ranked by how many
/// seeds point at the cluster, then recency. Hits carry weight `seeds / most seeds`.
async fn cluster_channel(
    cluster: &Cluster,
    cfg: &AggregatorConfig,
    view: &ProfileView,
) -> ServiceResult<Vec<(u64, i64, f32)>> {
    let n = cfg.cluster_seeds;
    let seeds: Vec<u64> = view
        .liked
        .iter()
        .take(n)
        .chain(view.collected.iter().take(n))
        .chain(view.shared.iter().take(n))
        .copied()
        .collect();
    if seeds.is_empty() || cfg.cluster_m == 0 {
        return Ok(Vec::new());
    }
    let meta = cluster.item_meta(&seeds).await?;
    let seed_clusters: Vec<String> = seeds
        .iter()
        .filter_map(|s| meta.get(s).and_then(|p| p.cluster.clone()))
        .collect();
    if seed_clusters.is_empty() {
        return Ok(Vec::new());
    }
    let ranked = cluster_recall::rank_clusters(&seed_clusters);
    let queries: Vec<ListQuery> = ranked
        .iter()
        .map(|(c, _)| ListQuery {
            kind: "cluster".into(),
            key: c.clone(),
            limit: cfg.cluster_m as u32,
        })
        .collect();
    let mut lists: HashMap<String, Vec<(u64, i64)>> = HashMap::new();
    for h in cluster.read_lists(&queries).await? {
        if let Some(q) = queries.get(h.query as usize) {
            lists
                .entry(q.key.clone())
                .or_default()
                .push((h.item_id, h.publish_ts));
        }
    }
    for l in lists.values_mut() {
        l.sort_by_key(|x| std::cmp::Reverse(x.1));
    }
    let hits = cluster_recall::recall(
        &seed_clusters,
        cfg.cluster_m,
        |c, m| {
            lists
                .get(&c)
                .map(|l| l.iter().take(m).copied().collect())
                .unwrap_or_default()
        },
        &HashSet::new(),
    );
    let most = ranked.first().map(|r| r.1).unwrap_or(1).max(1) as f32;
    Ok(hits
        .into_iter()
        .map(|(item, seeds, ts)| (item, ts, seeds as f32 / most))
        .collect())
}

/// Recalls up to `k` items for `user_id`.
pub async fn recall(
    cluster: &Cluster,
    cfg: &AggregatorConfig,
    recent_len: usize,
    user_id: u64,
    k: usize,
) -> ServiceResult<Vec<Candidate>> {
    let view = profile(cluster, user_id)
        .instrument(tracing::info_span!("recall.profile", user_id))
        .await?;
    let cats = normalised_top(&view.categories, cfg.top_categories);
    let kws = normalised_top(&view.keywords, cfg.top_keywords);
    let per_key = cfg.per_key_limit as u32;
    let mut queries: Vec<ListQuery> = Vec::new();
    queries.extend(cats.iter().map(|(c, _)| ListQuery {
        kind: "category".into(),
        key: c.clone(),
        limit: per_key,
    }));
    queries.extend(kws.iter().map(|(c, _)| ListQuery {
        kind: "keyword".into(),
        key: c.clone(),
        limit: per_key,
    }));
    let fallback_limit = (k + view.seen.len()).min(recent_len) as u32;
    queries.push(ListQuery {
        kind: "recent".into(),
        key: String::new(),
        limit: fallback_limit,
    });
    // what each query stands for: its channel and the normalised weight of its interest
    let meaning: Vec<(usize, f32)> = cats
        .iter()
        .map(|(_, w)| (0, *w))
        .chain(kws.iter().map(|(_, w)| (1, *w)))
        .chain(std::iter::once((2, 1.0)))
        .collect();
    let (hits, cluster_hits) = futures::future::try_join(
        cluster.read_lists(&queries).instrument(tracing::info_span!(
            "recall.lists",
            categories = cats.len(),
            keywords = kws.len()
        )),
        cluster_channel(cluster, cfg, &view).instrument(tracing::info_span!("recall.clusters")),
    )
    .await?;
    let mut channels = [
        ChannelHits {
            name: "category",
            quota: cfg.quota_category,
            scale: 1.0,
            hits: vec![],
        },
        ChannelHits {
            name: "keyword",
            quota: cfg.quota_keyword,
            scale: 1.0,
            hits: vec![],
        },
        ChannelHits {
            name: "fallback",
            quota: 0.0,
            scale: 0.1,
            hits: vec![],
        },
        ChannelHits {
            name: "cluster",
            quota: cfg.quota_cluster,
            scale: 1.0,
            hits: cluster_hits,
        },
    ];
    for h in &hits {
        if let Some(&(ch, w)) = meaning.get(h.query as usize) {
            channels[ch].hits.push((h.item_id, h.publish_ts, w));
        }
    }
    let seen: IdSet = view.seen.iter().copied().collect();
    let params = MergeParams {
        k,
        now: now_ms(),
        recency_half_life_ms: cfg.recency_half_life_h * 3_600_000.0,
    };
    Ok(merge(&channels, &seen, params))
}
