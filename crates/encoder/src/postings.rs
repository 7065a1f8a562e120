//! What an item becomes in the index.

use coldstart_contracts::encoder::Item;
use coldstart_contracts::sharder::{ItemRow, ListEntry, Posting, TowerVector};
use coldstart_contracts::types::{ClusterKey, ListKind};
use coldstart_runtime::routing::normalise;

/// Where a model files an item: its cluster and its content vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Filing {
    /// The cluster, under the model's version.
    pub cluster: ClusterKey,
    /// Content vector under the same model.
    pub vector: Vec<f32>,
}

/// An item's category and its distinct keywords as the index keeps them (normalised, the empty
/// left out): the keys of its lists, and what the two-tower item tower reads.
pub fn normalised(it: &Item) -> (String, Vec<String>) {
    let mut keywords: Vec<String> = it
        .keywords
        .iter()
        .map(|k| normalise(k))
        .filter(|k| !k.is_empty())
        .collect();
    let mut seen = std::collections::HashSet::new();
    keywords.retain(|k| seen.insert(k.clone()));
    (normalise(&it.category), keywords)
}

/// The postings of one item: its forward-index row (with its content vector under each model,
/// and its two-tower vector when a two-tower model runs),
/// its category list, one list per distinct keyword, its cluster list when the item was encoded,
/// its cluster list under the staged model being rolled out (`next`), and the `recent` list of
/// newest items overall.
pub fn of_item(
    it: &Item,
    current: Option<Filing>,
    next: Option<Filing>,
    tower: Option<TowerVector>,
) -> Vec<Posting> {
    let (cluster, vector) = current.map(|f| (f.cluster, f.vector)).unzip();
    let (next_cluster, next_vector) = next.map(|f| (f.cluster, f.vector)).unzip();
    let (category, keywords) = normalised(it);
    let list = |kind: ListKind, key: String| {
        Posting::List(ListEntry::new(kind, key, it.item_id, it.publish_ts))
    };
    let mut out = Vec::with_capacity(keywords.len() + 5);
    out.push(list(ListKind::Category, category.clone()));
    out.extend(keywords.iter().map(|k| list(ListKind::Keyword, k.clone())));
    for c in cluster.iter().chain(next_cluster.iter()) {
        out.push(list(ListKind::Cluster, c.to_string()));
    }
    out.push(list(ListKind::Recent, String::new()));
    out.insert(
        0,
        Posting::Item(ItemRow {
            item_id: it.item_id,
            publish_ts: it.publish_ts,
            category,
            keywords,
            cluster,
            next_cluster,
            vector,
            next_vector,
            tower,
        }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filing(key: &str) -> Filing {
        Filing {
            cluster: key.parse().unwrap(),
            vector: vec![1.0, 0.0],
        }
    }

    fn keys(p: &[Posting]) -> Vec<(String, String)> {
        p.iter()
            .map(|p| match p {
                Posting::Item(r) => ("item".into(), r.item_id.to_string()),
                Posting::List(e) => (e.kind.to_string(), e.key.clone()),
            })
            .collect()
    }

    fn row(p: &[Posting]) -> &ItemRow {
        match &p[0] {
            Posting::Item(r) => r,
            other => panic!("the item row comes first, got {other:?}"),
        }
    }

    #[test]
    fn an_item_posts_to_each_of_its_lists_once() {
        let it = Item {
            item_id: 7,
            publish_ts: 9,
            author_id: None,
            category: " Pets  Cats ".into(),
            keywords: vec!["Kitten".into(), "kitten ".into(), "cute".into()],
            title: "t".into(),
            body: None,
            image_vec: None,
            quality: None,
            author_quality: None,
        };
        let p = of_item(&it, Some(filing("v1:3")), None, None);
        assert_eq!(
            keys(&p),
            vec![
                ("item".into(), "7".into()),
                ("category".into(), "pets cats".into()),
                ("keyword".into(), "kitten".into()),
                ("keyword".into(), "cute".into()),
                ("cluster".into(), "v1:3".into()),
                ("recent".into(), "".into()),
            ]
        );
        assert_eq!(row(&p).keywords, ["kitten", "cute"]);
        assert_eq!(row(&p).cluster, Some(ClusterKey::new("v1", 3)));
        assert_eq!(
            of_item(&it, None, None, None).len(),
            5,
            "no cluster list without a model"
        );
        // while v2 is staged the item is filed under both versions
        let p = of_item(&it, Some(filing("v1:3")), Some(filing("v2:8")), None);
        assert_eq!(row(&p).next_cluster, Some(ClusterKey::new("v2", 8)));
        let clusters: Vec<String> = keys(&p)
            .into_iter()
            .filter(|(k, _)| k == "cluster")
            .map(|(_, key)| key)
            .collect();
        assert_eq!(clusters, ["v1:3", "v2:8"]);
    }
}
