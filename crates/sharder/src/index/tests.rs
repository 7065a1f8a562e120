//! The index: list bounds and order, dumps by owner, catch-up filtering, re-filing under a new
//! content model version.

use super::*;
use ListKind::{Category, Cluster, Keyword};

fn p(kind: ListKind, key: &str, id: u64, ts: i64) -> Posting {
    Posting::List(ListEntry::new(kind, key, id, ts))
}

fn ck(key: &str) -> ClusterKey {
    key.parse().unwrap()
}

#[test]
fn lists_stay_newest_first_bounded_and_deduplicated() {
    let idx = Index::new(3, 10);
    idx.apply(&[p(Category, "c", 1, 10), p(Category, "c", 2, 30)]);
    idx.apply(&[p(Category, "c", 3, 20), p(Category, "c", 2, 30)]);
    let ids: Vec<u64> = idx
        .read(Category, "c", 10)
        .iter()
        .map(|e| e.item_id)
        .collect();
    assert_eq!(ids, [2, 3, 1]);
    idx.apply(&[p(Category, "c", 4, 40), p(Category, "c", 5, 5)]);
    let ids: Vec<u64> = idx
        .read(Category, "c", 10)
        .iter()
        .map(|e| e.item_id)
        .collect();
    assert_eq!(ids, [4, 2, 3], "bounded to 3, oldest dropped");
    assert_eq!(idx.read(Category, "c", 1).len(), 1);
    assert!(idx.read(Category, "other", 5).is_empty());
}

/// A replay applies a batch of the log at once: the bounded lists come out as if the postings had
/// been applied one by one, repeated postings (a re-sent batch, a catch-up) and re-publications
/// to a later time included. (A re-publication to an earlier time can differ when its list
/// overflowed meanwhile: applied one by one, an entry truncated away never comes back.)
#[test]
fn one_batch_equals_one_by_one() {
    let posts: Vec<Posting> = (0..300u64)
        .map(|i| {
            let item = i * 13 % 40;
            p(
                Category,
                &format!("c{}", item % 7),
                item,
                (item * 37 % 101 + i / 100) as i64,
            )
        })
        .collect();
    let (one, all) = (Index::new(5, 10), Index::new(5, 10));
    for x in &posts {
        one.apply(std::slice::from_ref(x));
    }
    all.apply(&posts);
    for c in 0..7 {
        let key = format!("c{c}");
        let ids = |idx: &Index| -> Vec<(u64, i64)> {
            idx.read(Category, &key, 10)
                .iter()
                .map(|e| (e.item_id, e.publish_ts))
                .collect()
        };
        assert_eq!(ids(&all), ids(&one), "list {key}");
    }
}

/// A read `until` a time takes its limit from the newest entries published by then: what was
/// published after a request's time takes no place in its answer.
#[test]
fn reads_until_a_time_skip_later_entries() {
    let idx = Index::new(100, 100);
    idx.apply(
        &(1..=10)
            .map(|i| p(Category, "c", i, i as i64 * 10))
            .collect::<Vec<_>>(),
    );
    let read = |until| {
        let mut out = Vec::new();
        idx.read_many([(Category, "c", 3)], until, |_, e| {
            out.extend(e.iter().map(|e| e.item_id))
        });
        out
    };
    assert_eq!(read(None), [10, 9, 8]);
    assert_eq!(read(Some(55)), [5, 4, 3]);
    assert_eq!(read(Some(50)), [5, 4, 3], "at the time counts");
    assert_eq!(read(Some(15)), [1]);
    assert!(read(Some(5)).is_empty());
}

#[test]
fn dumps_return_exactly_the_requesters_keys() {
    let idx = Index::new(100, 100);
    let members: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
    let posts: Vec<Posting> = (0..200)
        .map(|i| p(Keyword, &format!("k{i}"), i, i as i64))
        .collect();
    idx.apply(&posts);
    let mine = idx.owned_by("a", &members, 1);
    for q in &mine {
        assert_eq!(owners(&q.routing_key(), &members, 1), vec!["a"]);
    }
    let total: usize = ["a", "b", "c"]
        .iter()
        .map(|m| idx.owned_by(m, &members, 1).len())
        .sum();
    assert_eq!(total, 200);
}

#[test]
fn missing_keeps_only_what_is_not_held() {
    let idx = Index::new(100, 100);
    idx.apply(&[p(Category, "c", 1, 10)]);
    let m = idx.missing(vec![
        p(Category, "c", 1, 10),
        p(Category, "c", 2, 20),
        p(Category, "d", 1, 10),
    ]);
    assert_eq!(
        m,
        [p(Category, "c", 2, 20), p(Category, "d", 1, 10)],
        "only what is not held"
    );
}

fn item(id: u64, ts: i64, cluster: Option<&str>) -> ItemRow {
    ItemRow {
        item_id: id,
        publish_ts: ts,
        category: "c".into(),
        keywords: vec!["k".into()],
        cluster: cluster.map(ck),
        ..Default::default()
    }
}

#[test]
fn reassignment_files_held_items_and_owned_lists_under_the_new_version() {
    let idx = Index::new(2, 10);
    // items 1..=4 filed under v1; item 5 published later under v1, unknown to v2's job
    let mut old: Vec<Posting> = (1..=5)
        .map(|i| {
            Posting::Item(ItemRow {
                vector: Some(vec![1.0, 0.0]),
                ..item(i, i as i64 * 10, Some("v1:0"))
            })
        })
        .collect();
    old.extend((1..=5).map(|i| p(Cluster, "v1:0", i, i as i64 * 10)));
    // item 6 was published while v2 was staged: filed under v1 and v2 by the encoder
    old.push(Posting::Item(ItemRow {
        next_cluster: Some(ck("v2:1")),
        next_vector: Some(vec![0.0, 6.0]),
        ..item(6, 60, Some("v1:0"))
    }));
    old.push(p(Cluster, "v2:1", 6, 60));
    idx.apply(&old);
    let asg: Vec<Assignment> = [(1, 0), (2, 1), (3, 1), (4, 1), (9, 1)]
        .iter()
        .map(|&(id, c)| Assignment {
            item_id: id,
            cluster: c,
            publish_ts: id as i64 * 10,
            vector: Some(vec![id as f32, 2.0]),
        })
        .collect();
    // this node owns v2:1 but not v2:0
    let owns = |k: &str| k.ends_with("v2:1");
    let (postings, stats) = idx.reassignment("v2", &asg, owns);
    assert_eq!(
        stats,
        Reassignment {
            postings: 2 + 5,
            items: 5,
            lists: 1,
            unassigned: 1,
        }
    );
    // lists come first, so that no entry names a list not built yet
    let is_item = |p: &Posting| matches!(p, Posting::Item(_));
    let first_item = postings.iter().position(is_item).unwrap();
    assert!(postings[first_item..].iter().all(is_item));
    idx.apply(&postings);
    let ids =
        |k: &str| -> Vec<u64> { idx.read(Cluster, k, 10).iter().map(|e| e.item_id).collect() };
    assert_eq!(ids("v2:1"), [9, 6], "newest first, bounded");
    assert_eq!(idx.item(6).unwrap().cluster, Some(ck("v2:1")));
    assert_eq!(idx.item(6).unwrap().next_cluster, None, "staging is over");
    assert!(ids("v2:0").is_empty(), "not owned here");
    assert_eq!(idx.item(2).unwrap().cluster, Some(ck("v2:1")));
    assert_eq!(idx.item(2).unwrap().category, "c", "metadata kept");
    assert_eq!(idx.item(5).unwrap().cluster, Some(ck("v1:0")));
    // vectors move with the cluster: from the model's forward index, or the staged one
    assert_eq!(idx.item(2).unwrap().vector, Some(vec![2.0, 2.0]));
    assert_eq!(idx.item(6).unwrap().vector, Some(vec![0.0, 6.0]));
    assert_eq!(idx.item(6).unwrap().next_vector, None);
    assert_eq!(
        idx.item(5).unwrap().vector,
        Some(vec![1.0, 0.0]),
        "v1's, with v1's cluster"
    );
    // again: nothing left to write
    let (again, stats) = idx.reassignment("v2", &asg, owns);
    assert!(again.is_empty());
    assert_eq!(stats.unassigned, 1);
    // retiring v1 drops its lists and nothing else
    assert_eq!(idx.drop_cluster_versions(&["v1".into()]), 1);
    assert!(ids("v1:0").is_empty());
    assert_eq!(ids("v2:1"), [9, 6]);
}

fn row(id: u64, ts: i64, cat: &str) -> Posting {
    Posting::Item(ItemRow {
        item_id: id,
        publish_ts: ts,
        category: cat.into(),
        keywords: vec![format!("{cat}-tag")],
        ..Default::default()
    })
}

/// With a two-tower model running, item rows are filed into the pools under it (whatever
/// vector they came with), a new model re-files what is held, and items more than the longest
/// pool behind the newest drop out.
#[test]
fn items_enter_the_pools_under_the_running_two_tower_model() {
    use coldstart_models::two_tower::{TwoTower, TwoTowerConfig};
    let idx = Index::new(100, 100);
    let hour = 3_600_000i64;
    let model = |v: &str| {
        std::sync::Arc::new(coldstart_artifact::TwoTowerModel {
            version: v.into(),
            model: TwoTower::new(TwoTowerConfig {
                buckets: 64,
                hidden: 4,
                dim: 3,
                ..Default::default()
            })
            .unwrap(),
        })
    };
    // rows before any model: no pools
    idx.apply(&[row(1, 0, "a")]);
    assert!(idx
        .pools("t1", &[1.0, 0.0, 0.0], 10, None, 5)
        .unwrap()
        .is_empty());
    let t1 = model("t1");
    idx.tower.store(Some(t1.clone()));
    assert_eq!(idx.refile_towers(&t1), 1);
    idx.apply(&[row(2, 10, "b")]);
    let hits = idx.pools("t1", &[1.0, 0.0, 0.0], 10, None, 5).unwrap();
    assert_eq!(hits.len(), 2, "{hits:?}");
    // 40 days on, the old ones drop out when a new one arrives
    idx.apply(&[row(3, 960 * hour, "a")]);
    let hits = idx
        .pools("t1", &[1.0, 0.0, 0.0], 960 * hour, None, 5)
        .unwrap();
    assert_eq!(hits.iter().map(|h| h.item_id).collect::<Vec<_>>(), [3]);
    // a dimension that disagrees with the pool is refused by field
    let e = idx
        .pools("t1", &[1.0, 0.0], 960 * hour, None, 5)
        .unwrap_err();
    assert!(e.text().contains("field `user`"), "{e}");
}

#[test]
fn unfiled_items_are_listed_a_page_at_a_time() {
    let idx = Index::new(100, 100);
    let mut rows: Vec<Posting> = (1..=7u64)
        .map(|id| Posting::Item(item(id, id as i64 * 10, None)))
        .collect();
    rows.push(Posting::Item(item(8, 80, Some("v1:0"))));
    idx.apply(&rows);
    assert_eq!((idx.stats().items, idx.stats().unfiled), (8, 7));
    let (page, total) = idx.unfiled(None, 3);
    assert_eq!((page, total), (vec![(1, 10), (2, 20), (3, 30)], 7));
    let (page, _) = idx.unfiled(Some(3), 3);
    assert_eq!(page, vec![(4, 40), (5, 50), (6, 60)]);
    let (page, _) = idx.unfiled(Some(6), 3);
    assert_eq!(page, vec![(7, 70)], "the filed item 8 is not listed");
    // filed again (a re-publish under a model): no longer unfiled
    idx.apply(&[Posting::Item(item(7, 70, Some("v1:1")))]);
    assert_eq!(idx.unfiled(None, 10).1, 6);
}
