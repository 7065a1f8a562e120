//! One recall: profile → interest keys → the owning sharders (one Flight call per sharder, in
//! parallel) → merge by quota → top k with the channels that recalled each item.

use crate::merge::{merge, ChannelHits, IdSet, MergeParams};
use coldstart_common::cluster::Cluster;
use coldstart_common::config::AggregatorConfig;
use coldstart_common::discovery::Role;
use coldstart_common::routing::normalise;
use coldstart_common::rows::{Candidate, ProfileView};
use coldstart_common::validate::now_ms;
use coldstart_common::ServiceResult;
use coldstart_proto::{ticket, ListQuery, ProfileRequest, Ticket};
use tracing::Instrument;

/// Reads a user's profile from the profile partition that owns the user (empty when unknown).
pub async fn profile(cluster: &Cluster, user_id: u64) -> ServiceResult<ProfileView> {
    let m = cluster.owner(Role::Profile, user_id)?;
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
    let hits = cluster
        .read_lists(&queries)
        .instrument(tracing::info_span!(
            "recall.lists",
            categories = cats.len(),
            keywords = kws.len()
        ))
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
