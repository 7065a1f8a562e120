//! One recall at a request time `at`, hop by hop: the profile client (the user's profile decayed
//! to `at`) → the channels the user's state calls for, in parallel through the sharder client
//! (inverted lists on the owning sharders, fewest calls; cluster recall through the forward
//! index) and, for new users, the profile client's popularity boards → similarity ranking on the
//! sharders → [`crate::merge`] by quota → top k with the channels that recalled each item.

use crate::cluster_recall;
use crate::config::{AggregatorConfig, Settings};
use crate::hops::{Degraded, Hop};
use crate::merge::{merge, Adjust, ChannelHits, IdMap, IdSet, MergeParams};
use crate::request::{Channel, RecallQuery};
pub use crate::two_tower_channel::UserPhase;
use crate::two_tower_channel::{two_tower_channel, TowerAsk};
use coldstart_artifact::TwoTowerModel;
use coldstart_contracts::aggregator::Candidate;
use coldstart_contracts::profile::ProfileView;
use coldstart_contracts::sharder::proto::ListQuery;
use coldstart_contracts::sharder::ItemRow;
use coldstart_contracts::types::{ClusterKey, ListKind};
use coldstart_contracts::Clients;
use coldstart_runtime::routing::normalise;
use coldstart_runtime::{ServiceError, ServiceResult};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tracing::Instrument;

fn normalised_top(list: &[(String, f32)], n: usize) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for (k, w) in list {
        let k = normalise(k);
        if k.is_empty() || out.iter().any(|(o, _)| *o == k) {
            continue;
        }
        out.push((k, *w as f64));
        if out.len() == n {
            break;
        }
    }
    let max = out.iter().map(|x| x.1).fold(0.0f64, f64::max);
    if max > 0.0 {
        out.iter_mut().for_each(|x| x.1 /= max);
    }
    out
}

/// The user's content vector: the normalised sum of the seed items' vectors (those filed under
/// the model version most of them share; vectors of different models do not mix).
fn user_vector(seeds: &[u64], meta: &HashMap<u64, ItemRow>) -> Option<(String, Vec<f32>)> {
    let version = |p: &ItemRow| p.cluster.as_ref().map(|c| c.version.clone());
    let mut counts: HashMap<String, usize> = HashMap::new();
    for p in seeds.iter().filter_map(|s| meta.get(s)) {
        if let (Some(v), Some(_)) = (version(p), &p.vector) {
            *counts.entry(v).or_default() += 1;
        }
    }
    let (best, _) = counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))?;
    let mut sum: Vec<f32> = Vec::new();
    for p in seeds.iter().filter_map(|s| meta.get(s)) {
        if version(p).as_deref() != Some(best.as_str()) {
            continue;
        }
        if let Some(v) = &p.vector {
            if sum.is_empty() {
                sum = vec![0.0; v.len()];
            }
            if v.len() == sum.len() {
                sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
            }
        }
    }
    let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
    (norm > 0.0).then(|| (best, sum.into_iter().map(|x| x / norm).collect()))
}

/// The user's seeds: last liked, collected and shared items (up to `cluster_seeds` each).
fn seeds(cfg: &AggregatorConfig, view: &ProfileView) -> Vec<u64> {
    let n = cfg.cluster_seeds;
    view.liked
        .iter()
        .take(n)
        .chain(view.collected.iter().take(n))
        .chain(view.shared.iter().take(n))
        .copied()
        .collect()
}

/// What the seeds give: cluster recall's hits and the user's content vector.
#[derive(Default)]
struct SeedRecall {
    hits: Vec<(u64, i64, f64)>,
    user: Option<(String, Vec<f32>)>,
    /// The mean content vector of the user's recent items, as the two-tower user tower reads it.
    content: Vec<f32>,
}

/// The user's recent items as the two-tower model was trained on them: liked, then collected,
/// then shared, each newest first.
pub(crate) fn recent(view: &ProfileView) -> Vec<u64> {
    view.liked
        .iter()
        .chain(&view.collected)
        .chain(&view.shared)
        .copied()
        .collect()
}

/// The mean of the content vectors the forward index holds for `items` (those of the dimension
/// of the first found).
fn mean_content(items: &[u64], meta: &HashMap<u64, ItemRow>) -> Vec<f32> {
    let mut sum: Vec<f32> = Vec::new();
    let mut n = 0usize;
    for v in items.iter().filter_map(|i| meta.get(i)?.vector.as_ref()) {
        if sum.is_empty() {
            sum = vec![0.0; v.len()];
        }
        if v.len() == sum.len() {
            sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
            n += 1;
        }
    }
    sum.iter_mut().for_each(|s| *s /= n.max(1) as f32);
    sum
}

/// Cluster recall: the user's last liked, collected and shared items (seeds) → their clusters
/// through the forward index → the newest `cluster_m` items of each cluster → ranked by how many
/// seeds point at the cluster, then recency. Hits carry weight `seeds / most seeds`. The seeds'
/// content vectors give the user's vector on the way.
async fn cluster_channel(
    clients: &Clients,
    cfg: &AggregatorConfig,
    view: &ProfileView,
    want_hits: bool,
    at: i64,
) -> ServiceResult<SeedRecall> {
    let seeds = seeds(cfg, view);
    if seeds.is_empty() {
        return Ok(SeedRecall::default());
    }
    let meta = clients.sharder.item_meta(&seeds).await?;
    let user = user_vector(&seeds, &meta);
    let content = mean_content(&recent(view), &meta);
    let seed_clusters: Vec<ClusterKey> = seeds
        .iter()
        .filter_map(|s| meta.get(s).and_then(|p| p.cluster.clone()))
        .collect();
    if seed_clusters.is_empty() || cfg.cluster_m == 0 || !want_hits {
        return Ok(SeedRecall {
            hits: Vec::new(),
            user,
            content,
        });
    }
    let ranked = cluster_recall::rank_clusters(&seed_clusters);
    let queries: Vec<ListQuery> = ranked
        .iter()
        .map(|(c, _)| ListQuery::of(ListKind::Cluster, c.to_string(), cfg.cluster_m as u32))
        .collect();
    let mut lists: HashMap<&ClusterKey, Vec<(u64, i64)>> = HashMap::new();
    for h in clients.sharder.read_lists(&queries, Some(at)).await? {
        if let Some((c, _)) = ranked.get(h.query as usize) {
            lists.entry(c).or_default().push((h.item_id, h.publish_ts));
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
    let most = ranked.first().map(|r| r.1).unwrap_or(1).max(1) as f64;
    Ok(SeedRecall {
        hits: hits
            .into_iter()
            .map(|(item, seeds, ts)| (item, ts, seeds as f64 / most))
            .collect(),
        user,
        content,
    })
}

/// A recall answer: the items, the user's phase, and the ID embedding their two-tower vector
/// was computed with (`id` for an old user, the model's user method for a warming one; none
/// without a two-tower model or for a user not handed over).
#[derive(Debug, Clone, PartialEq)]
pub struct Recalled {
    /// Best first.
    pub items: Vec<Candidate>,
    /// The user's phase.
    pub user_state: UserPhase,
    /// The user method that placed the user's ID embedding.
    pub user_embedding: Option<&'static str>,
    /// The parts that failed, so that the answer was built without them (empty: a whole
    /// answer): `profile`, `popular`, `lists`, `clusters`, `two_tower`, `similarity`, `traffic`.
    pub degraded: Vec<&'static str>,
}

/// The `n` candidates of `hits` with the most channel weight (summed over the channels that
/// recalled each), strongest first (ties: higher id): the caps of the per-request lookups keep
/// the candidates that can reach the answer.
fn strongest<'a>(hits: impl Iterator<Item = &'a (u64, i64, f64)>, n: usize) -> Vec<u64> {
    let mut weight: IdMap<f64> = IdMap::default();
    for &(id, _, w) in hits {
        *weight.entry(id).or_default() += w;
    }
    let mut ids: Vec<(f64, u64)> = weight.into_iter().map(|(id, w)| (w, id)).collect();
    if ids.len() > n {
        ids.select_nth_unstable_by(n, |a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
        ids.truncate(n);
    }
    ids.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    ids.into_iter().map(|x| x.1).collect()
}

/// The channels whose candidates are ranked by content similarity to the user.
const CONTENT_CHANNELS: [Channel; 4] = [
    Channel::Category,
    Channel::Keyword,
    Channel::Cluster,
    Channel::Onboarding,
];

/// Ranks the candidates of content channels by their content vector's cosine `s` to the user's
/// vector: each weight is multiplied by `exp((s - s_max) / temperature)`, so within a list that
/// ties on interest weight the items most like what the user engaged with come first. The
/// `similarity_candidates` with the most channel weight are looked up; the rest, and candidates
/// without a vector of the user's model, count as orthogonal to the user (cosine 0).
async fn similarities(
    clients: &Clients,
    cfg: &AggregatorConfig,
    user: &(String, Vec<f32>),
    order: &[ChannelHits],
) -> ServiceResult<IdMap<f64>> {
    let ids = strongest(
        order
            .iter()
            .filter(|c| CONTENT_CHANNELS.contains(&c.channel))
            .flat_map(|c| c.hits.iter()),
        cfg.similarity_candidates,
    );
    if ids.is_empty() {
        return Ok(IdMap::default());
    }
    Ok(clients
        .sharder
        .similarity(&ids, &user.0, &user.1)
        .await?
        .into_iter()
        .map(|(id, s)| (id, s as f64))
        .collect())
}

/// Applies the similarities `sim` of [`similarities`] to the content channels of `order`.
fn rank_by_similarity(cfg: &AggregatorConfig, sim: &IdMap<f64>, order: &mut [ChannelHits]) {
    let t = cfg.similarity_temperature;
    // relative to the most similar candidate, so weights stay in (0, 1] beside the popularity
    // channels, and the content channels' candidates keep one order between them
    let best = sim.values().fold(0.0f64, |a, &b| a.max(b));
    for ch in order
        .iter_mut()
        .filter(|c| CONTENT_CHANNELS.contains(&c.channel))
    {
        for h in &mut ch.hits {
            let s = sim.get(&h.0).copied().unwrap_or(0.0);
            h.2 *= ((s - best) / t).exp();
        }
    }
}

/// Recalls up to `q.k` items for `q.user_id` at `q.at`.
pub async fn recall(
    clients: &Clients,
    settings: &Settings,
    tower: Option<Arc<TwoTowerModel>>,
    q: &RecallQuery,
) -> ServiceResult<Recalled> {
    let cfg = &settings.aggregator;
    let recent_len = settings.peers.recent_list_len;
    let mut degraded = Degraded::default();
    let hop = Hop::of(cfg);
    // without the profile the answer is built from what needs none: the newest items (and the
    // two-tower model's answer for the user's ID), marked degraded
    let view = hop
        .call("profile", || {
            clients
                .profile
                .profile(q.user_id, q.at)
                .instrument(tracing::info_span!("recall.profile", user_id = q.user_id))
        })
        .await;
    let view = degraded.or(
        "profile",
        view,
        ProfileView {
            user_id: q.user_id,
            ..Default::default()
        },
    );
    let new_user = view.is_new;
    let phase = UserPhase::of(&view, cfg, q.at);
    // the two-tower channel this user gets, if any, and its quota
    let tower_channel = match phase {
        UserPhase::Old => Some((Channel::TwoTower, cfg.quota_two_tower)),
        UserPhase::Warming => Some((Channel::NewUserTower, cfg.quota_new_user_tower)),
        UserPhase::New => None,
    }
    .filter(|(c, quota)| q.wants(*c) && *quota > 0.0);
    let user_embedding = match (&tower, tower_channel) {
        (Some(_), Some((Channel::TwoTower, _))) => Some("id"),
        (Some(t), Some(_)) => Some(t.model.cfg.users.method.as_str()),
        _ => None,
    };
    // lifecycle: a new user's content channels earn their quota as their own events accrue
    let maturity = if new_user {
        view.interactions as f64 / settings.peers.new_user_max_interactions.max(1) as f64
    } else {
        1.0
    };
    // every list read with the channel it feeds and the weight of its key
    let mut reads: Vec<(ListQuery, Channel, f64)> = Vec::new();
    let mut ask = |kind: ListKind, key: String, limit: u32, channel: Channel, weight: f64| {
        reads.push((ListQuery::of(kind, key, limit), channel, weight));
    };
    let per_key = cfg.per_key_limit as u32;
    if q.wants(Channel::Category) {
        for (c, w) in normalised_top(&view.categories, cfg.top_categories) {
            ask(ListKind::Category, c, per_key, Channel::Category, w);
        }
    }
    if q.wants(Channel::Keyword) {
        for (c, w) in normalised_top(&view.keywords, cfg.top_keywords) {
            ask(ListKind::Keyword, c, per_key, Channel::Keyword, w);
        }
    }
    if new_user && q.wants(Channel::Onboarding) {
        let mut keys: Vec<String> = view.interests.iter().map(|i| normalise(i)).collect();
        keys.retain(|k| !k.is_empty());
        keys.dedup();
        for k in keys.into_iter().take(cfg.top_categories + cfg.top_keywords) {
            let onboarding = Channel::Onboarding;
            ask(ListKind::Category, k.clone(), per_key, onboarding, 1.0);
            ask(ListKind::Keyword, k, per_key, onboarding, 1.0);
        }
    }
    if q.wants(Channel::Fallback) {
        let limit = (q.k + view.seen.len()).min(recent_len) as u32;
        ask(
            ListKind::Recent,
            String::new(),
            limit,
            Channel::Fallback,
            1.0,
        );
    }
    // the popularity boards a new user gets, by the group each is of (`""`: everyone)
    let mut boards_wanted: Vec<(Channel, String)> = Vec::new();
    if new_user && q.wants(Channel::Popular) {
        boards_wanted.push((Channel::Popular, String::new()));
    }
    if new_user && q.wants(Channel::GroupPopular) {
        if let Some(g) = &view.group {
            boards_wanted.push((Channel::GroupPopular, g.clone()));
        }
    }
    let queries: Vec<ListQuery> = reads.iter().map(|r| r.0.clone()).collect();
    let groups: Vec<String> = boards_wanted.iter().map(|b| b.1.clone()).collect();
    let lists = || async {
        if queries.is_empty() {
            Ok(Vec::new())
        } else {
            clients.sharder.read_lists(&queries, Some(q.at)).await
        }
    };
    let rank = cfg.similarity_temperature > 0.0;
    let tower = tower.filter(|_| tower_channel.is_some());
    let clusters = || async {
        if q.wants(Channel::Cluster) || rank || tower.is_some() {
            cluster_channel(clients, cfg, &view, q.wants(Channel::Cluster), q.at).await
        } else {
            Ok(SeedRecall::default())
        }
    };
    let boards = || async {
        if groups.is_empty() {
            Ok(HashMap::new())
        } else {
            clients
                .profile
                .popular(&groups, q.at, cfg.popular_limit)
                .await
        }
    };
    let (hits, seeded, boards) = futures::future::join3(
        hop.call("lists", || {
            lists().instrument(tracing::info_span!("recall.lists", queries = queries.len()))
        }),
        hop.call("clusters", || {
            clusters().instrument(tracing::info_span!("recall.clusters"))
        }),
        hop.call("popular", || {
            boards().instrument(tracing::info_span!("recall.popular", groups = groups.len()))
        }),
    )
    .await;
    let hits = degraded.or("lists", hits, Vec::new());
    let seeded = degraded.or("clusters", seeded, SeedRecall::default());
    let mut boards = degraded.or("popular", boards, HashMap::new());

    // every channel's candidates, by channel: (item, publish_ts, weight)
    let mut found: HashMap<Channel, Vec<(u64, i64, f64)>> = HashMap::new();
    for h in &hits {
        if let Some((_, channel, weight)) = reads.get(h.query as usize) {
            found
                .entry(*channel)
                .or_default()
                .push((h.item_id, h.publish_ts, *weight));
        }
    }
    found.insert(Channel::Cluster, seeded.hits);
    if let (Some(t), Some((channel, _))) = (&tower, tower_channel) {
        // new_user_tower may take the whole answer: enough to fill it once what the user has
        // seen is dropped, no more than a sharder answers; two_tower takes its small quota
        let per_pool = match channel {
            Channel::NewUserTower => cfg
                .two_tower_per_pool
                .max(q.k + view.seen.len())
                .min(settings.peers.max_batch_rows.max(1)),
            _ => cfg.two_tower_per_pool,
        };
        let warming = channel == Channel::NewUserTower;
        let ask = TowerAsk {
            per_pool,
            seed_weight: if warming {
                cfg.new_user_seed_weight as f32
            } else {
                0.0
            },
            cf_weight: if warming { cfg.new_user_cf_weight } else { 0.0 },
            fusion_k: cfg.new_user_fusion_k,
        };
        let hits = hop
            .call("two_tower", || {
                two_tower_channel(clients, t, &view, &seeded.content, q, &ask)
                    .instrument(
                        tracing::info_span!("recall.two_tower", version = %t.version, channel = %channel),
                    )
            })
            .await;
        found.insert(channel, degraded.or("two_tower", hits, Vec::new()));
    }
    for (channel, group) in boards_wanted {
        let board = boards.remove(&group).unwrap_or_default();
        let best = board.first().map(|x| x.2).unwrap_or(0.0);
        if best > 0.0 {
            let weighted = board.into_iter().map(|(i, ts, s)| (i, ts, s / best));
            found.insert(channel, weighted.collect());
        }
    }

    // quotas are filled in this order: for a new user the channels made for them come first
    let recency = cfg.recency_half_life_h > 0.0;
    // (channel, quota, score scale, recency)
    let mut plan: Vec<(Channel, f64, f64, bool)> = Vec::new();
    if phase == UserPhase::Warming {
        plan.push((
            Channel::NewUserTower,
            cfg.quota_new_user_tower,
            1.0,
            recency,
        ));
    }
    if new_user {
        plan.extend([
            (Channel::Onboarding, cfg.quota_onboarding, 1.0, recency),
            (Channel::GroupPopular, cfg.quota_group_popular, 1.0, false),
            (Channel::Popular, cfg.quota_popular, 1.0, false),
        ]);
    }
    plan.extend([
        (
            Channel::Category,
            cfg.quota_category * maturity,
            1.0,
            recency,
        ),
        (Channel::Keyword, cfg.quota_keyword * maturity, 1.0, recency),
        (Channel::Cluster, cfg.quota_cluster * maturity, 1.0, recency),
        (
            Channel::TwoTower,
            cfg.quota_two_tower * maturity,
            1.0,
            recency,
        ),
        (Channel::Fallback, 0.0, 0.1, recency),
    ]);
    let mut order: Vec<ChannelHits> = plan
        .into_iter()
        .map(|(c, quota, scale, recency)| {
            let mut ch = ChannelHits::new(c, quota, scale, recency);
            ch.hits = found.remove(&c).unwrap_or_default();
            ch
        })
        .collect();
    if let (true, Some(user)) = (rank, &seeded.user) {
        let sim = hop
            .call("similarity", || {
                similarities(clients, cfg, user, &order)
                    .instrument(tracing::info_span!("recall.similarity"))
            })
            .await;
        if let Some(sim) = degraded.or("similarity", sim.map(Some), None) {
            rank_by_similarity(cfg, &sim, &mut order);
        }
    }
    let seen: IdSet = view.seen.iter().copied().collect();
    let params = MergeParams {
        k: q.k,
        at: q.at,
        since: q.since,
        recency_half_life_ms: cfg.recency_half_life_h * 3_600_000.0,
    };
    let adjust = if cfg.traffic_control {
        let a = hop
            .call("traffic", || {
                traffic_adjust(clients, settings, &order, &seen, q.at)
                    .instrument(tracing::info_span!("recall.traffic"))
            })
            .await;
        degraded.or("traffic", a, Adjust::default())
    } else {
        Adjust::default()
    };
    let items = merge(&order, &seen, params, &adjust);
    // only a request that can produce nothing fails: every part it needed is missing
    if items.is_empty() && !degraded.0.is_empty() {
        return Err(ServiceError::unavailable(format!(
            "recall: nothing to answer with; unavailable: {}",
            degraded.0.join(", ")
        )));
    }
    Ok(Recalled {
        items,
        user_state: phase,
        user_embedding,
        degraded: degraded.0,
    })
}

/// Candidates asked of the traffic controller at most (its bound per call).
const MAX_TRAFFIC_IDS: usize = 10_000;

/// The traffic controller's boosts and forceable items for the candidates (one call per
/// partition owning some of them). Traffic control helps new items; recall does not depend on
/// it: when the controller cannot answer, the answer goes without it (degraded).
async fn traffic_adjust(
    clients: &Clients,
    settings: &Settings,
    order: &[ChannelHits],
    seen: &IdSet,
    at: i64,
) -> ServiceResult<Adjust> {
    let cfg = &settings.aggregator;
    // only items young enough for help at the request time (published by then, within the
    // window and the promotion)
    let oldest = at.saturating_sub(settings.peers.traffic_horizon.ms());
    let mut ids = strongest(
        order
            .iter()
            .flat_map(|c| c.hits.iter())
            .filter(|h| h.1 >= oldest && h.1 <= at && !seen.contains(&h.0)),
        cfg.traffic_candidates.min(MAX_TRAFFIC_IDS),
    );
    ids.sort_unstable();
    if ids.is_empty() {
        return Ok(Adjust::default());
    }
    let rows = clients.traffic.boosts(&ids, at).await?;
    let mut forceable: Vec<(f32, u64)> = rows
        .iter()
        .filter(|r| r.forceable)
        .map(|r| (r.behind, r.item_id))
        .collect();
    forceable.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    Ok(Adjust {
        boosts: rows
            .iter()
            .filter(|r| r.boost > 1.0)
            .map(|r| (r.item_id, r.boost as f64))
            .collect(),
        forceable: forceable.into_iter().map(|f| f.1).collect(),
        slots: cfg.forced_slots,
    })
}
