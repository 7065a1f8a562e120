//! What an item becomes in the index.

use coldstart_contracts::encoder::Item;
use coldstart_contracts::sharder::Posting;
use coldstart_runtime::routing::normalise;

/// Where a model files an item: its cluster list key `{version}:{id}` and its content vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Filing {
    /// Cluster list key.
    pub cluster: String,
    /// Content vector under the same model.
    pub vector: Vec<f32>,
}

/// The postings of one item: its forward-index entry (with its content vector under each model),
/// its category list, one list per distinct keyword, its cluster list when the item was encoded,
/// its cluster list under the staged model being rolled out (`next`), and the `recent` list of
/// newest items overall.
pub fn of_item(it: &Item, current: Option<Filing>, next: Option<Filing>) -> Vec<Posting> {
    let (cluster, vector) = current.map(|f| (f.cluster, f.vector)).unzip();
    let (next_cluster, next_vector) = next.map(|f| (f.cluster, f.vector)).unzip();
    let category = normalise(&it.category);
    let mut keywords: Vec<String> = it
        .keywords
        .iter()
        .map(|k| normalise(k))
        .filter(|k| !k.is_empty())
        .collect();
    let mut seen = std::collections::HashSet::new();
    keywords.retain(|k| seen.insert(k.clone()));
    let list = |kind: &str, key: &str| Posting {
        kind: kind.into(),
        key: key.into(),
        item_id: it.item_id,
        publish_ts: it.publish_ts,
        ..Default::default()
    };
    let mut out = Vec::with_capacity(keywords.len() + 3);
    out.push(Posting {
        kind: "item".into(),
        key: it.item_id.to_string(),
        item_id: it.item_id,
        publish_ts: it.publish_ts,
        category: Some(category.clone()),
        keywords: Some(keywords.clone()),
        cluster: cluster.clone(),
        next_cluster: next_cluster.clone(),
        vector,
        next_vector,
    });
    out.push(list("category", &category));
    out.extend(keywords.iter().map(|k| list("keyword", k)));
    for c in cluster.iter().chain(next_cluster.iter()) {
        out.push(list("cluster", c));
    }
    out.push(list("recent", ""));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filing(key: &str) -> Filing {
        Filing {
            cluster: key.into(),
            vector: vec![1.0, 0.0],
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
        };
        let p = of_item(&it, Some(filing("v1:3")), None);
        let keys: Vec<(String, String)> =
            p.iter().map(|p| (p.kind.clone(), p.key.clone())).collect();
        assert_eq!(
            keys,
            vec![
                ("item".into(), "7".into()),
                ("category".into(), "pets cats".into()),
                ("keyword".into(), "kitten".into()),
                ("keyword".into(), "cute".into()),
                ("cluster".into(), "v1:3".into()),
                ("recent".into(), "".into()),
            ]
        );
        assert_eq!(
            p[0].keywords.as_ref().unwrap(),
            &vec!["kitten".to_string(), "cute".to_string()]
        );
        assert_eq!(p[0].cluster.as_deref(), Some("v1:3"));
        assert_eq!(
            of_item(&it, None, None).len(),
            5,
            "no cluster list without a model"
        );
        // while v2 is staged the item is filed under both versions
        let p = of_item(&it, Some(filing("v1:3")), Some(filing("v2:8")));
        assert_eq!(p[0].next_cluster.as_deref(), Some("v2:8"));
        let clusters: Vec<&str> = p
            .iter()
            .filter(|p| p.kind == "cluster")
            .map(|p| p.key.as_str())
            .collect();
        assert_eq!(clusters, ["v1:3", "v2:8"]);
    }
}
