//! Every row type round-trips through its batch; a wrong column names its field.

use crate::aggregator::*;
use crate::encoder::*;
use crate::profile::*;
use crate::sharder::*;
use crate::traffic::*;
use crate::types::{Action, Channel, ClusterKey, ListKind};
use arrow::array::*;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use std::sync::Arc;

fn item(id: u64) -> Item {
    Item {
        item_id: id,
        publish_ts: 1_700_000_000_000 + id as i64,
        author_id: Some(7),
        category: "cats".into(),
        keywords: vec!["kitten".into(), "cute".into()],
        title: "a cat".into(),
        body: None,
        image_vec: if id.is_multiple_of(2) {
            Some(vec![0.5; 4])
        } else {
            None
        },
        quality: Some(0.5),
        author_quality: None,
    }
}

#[test]
fn rows_round_trip_through_batches() {
    let items: Vec<Item> = (0..5).map(item).collect();
    assert_eq!(Item::from_batch(&Item::to_batch(&items, 4)).unwrap(), items);
    let p = ProfileView {
        user_id: 3,
        is_new: true,
        interactions: 2,
        categories: vec![("cats".into(), 1.5)],
        keywords: vec![],
        seen: vec![1, 2],
        liked: vec![2],
        collected: vec![],
        shared: vec![],
        group: Some("25-34|f|9".into()),
        interests: vec!["cats".into()],
        attrs: vec!["gender:f".into(), "region:north".into()],
        signup_ts: Some(1_000),
        clicked: vec![7],
    };
    // a profile node from before groups, onboarding channels, the two-tower channel and user
    // cold start sends none of those columns
    let full = p.to_batch();
    let old = full
        .project(&(0..full.num_columns() - 5).collect::<Vec<_>>())
        .unwrap();
    let back = ProfileView::from_batch(&old).unwrap().remove(0);
    assert_eq!(
        (back.group.clone(), back.interests.len(), back.attrs.len()),
        (None, 0, 0)
    );
    assert_eq!(back.categories, p.categories);
    assert_eq!(ProfileView::from_batch(&p.to_batch()).unwrap(), vec![p]);
    let none = ProfileView {
        group: None,
        ..Default::default()
    };
    assert_eq!(
        ProfileView::from_batch(&none.to_batch()).unwrap(),
        vec![none]
    );
    let pop = vec![PopularHit {
        query: 1,
        item_id: 4,
        publish_ts: 5,
        score: 1e-200,
    }];
    assert_eq!(
        PopularHit::from_batch(&PopularHit::to_batch(&pop)).unwrap(),
        pop
    );
    let c = vec![Candidate {
        item_id: 1,
        score: 0.5,
        channels: vec![Channel::Category, Channel::Cluster],
        publish_ts: 9,
        boost: 1.0,
        forced: false,
    }];
    assert_eq!(Candidate::from_batch(&Candidate::to_batch(&c)).unwrap(), c);
}

/// Every row type through its batch and back: a schema and a builder that disagree would
/// otherwise panic inside a request handler.
#[test]
fn every_row_type_round_trips() {
    let postings = vec![
        Posting::Item(ItemRow {
            item_id: 1,
            publish_ts: 2,
            category: "c".into(),
            keywords: vec!["k".into()],
            cluster: Some(ClusterKey::new("v1", 3)),
            next_cluster: Some(ClusterKey::new("v2", 1)),
            vector: Some(vec![0.5, -0.25]),
            next_vector: None,
            tower: Some(TowerVector {
                version: "tt1".into(),
                vector: vec![0.25, 0.5, -1.0],
            }),
        }),
        Posting::List(ListEntry::new(ListKind::Category, "c", 1, 2)),
        Posting::List(ListEntry::new(ListKind::Recent, "", 1, 2)),
    ];
    assert_eq!(
        Posting::from_batch(&Posting::to_batch(&postings)).unwrap(),
        postings
    );
    let hits = vec![ListHit {
        query: 2,
        item_id: 9,
        publish_ts: 8,
    }];
    assert_eq!(
        ListHit::from_batch(&ListHit::to_batch(&hits)).unwrap(),
        hits
    );
    let events = vec![Event {
        user_id: 1,
        item_id: 2,
        ts: 3,
        action: Action::Like,
        dwell_ms: Some(4),
        request_id: None,
    }];
    assert_eq!(
        Event::from_batch(&Event::to_batch(&events)).unwrap(),
        events
    );
    let logged = vec![LoggedEvent {
        event: events[0].clone(),
        item_publish_ts: 1,
        category: "c".into(),
        keywords: vec!["k".into()],
    }];
    assert_eq!(
        LoggedEvent::from_batch(&LoggedEvent::to_batch(&logged)).unwrap(),
        logged
    );
    let users = vec![User {
        user_id: 1,
        signup_ts: 2,
        age_bucket: Some("a".into()),
        gender: None,
        occupation: None,
        region: Some("r".into()),
        interests: vec!["i".into()],
    }];
    assert_eq!(User::from_batch(&User::to_batch(&users)).unwrap(), users);
    let regs = vec![Registration {
        item_id: 1,
        publish_ts: 2,
        author_id: Some(3),
        quality: None,
        author_quality: None,
    }];
    assert_eq!(
        Registration::from_batch(&Registration::to_batch(&regs)).unwrap(),
        regs
    );
    let ex = vec![Exposure {
        item_id: 1,
        user_id: 2,
        ts: 3,
        action: Action::Click,
        request_id: None,
    }];
    assert_eq!(Exposure::from_batch(&Exposure::to_batch(&ex)).unwrap(), ex);
    let ledger = vec![LedgerRow {
        item_id: 1,
        publish_ts: 2,
        quality: Some(0.5),
        target_impressions: 100,
        impressions: 3,
        clicks: 1,
    }];
    assert_eq!(
        LedgerRow::from_batch(&LedgerRow::to_batch(&ledger)).unwrap(),
        ledger
    );
    let boosts = vec![
        BoostRow {
            item_id: 1,
            boost: 3.5,
            behind: 0.25,
            forceable: true,
        },
        BoostRow {
            item_id: 2,
            boost: 1.0,
            behind: -0.1,
            forceable: false,
        },
    ];
    assert_eq!(
        BoostRow::from_batch(&BoostRow::to_batch(&boosts)).unwrap(),
        boosts
    );
    // a boost below 1 would bury an item: refused, naming the row and the item
    let sunk = BoostRow::to_batch(&[BoostRow {
        boost: 0.5,
        ..boosts[0].clone()
    }]);
    let e = BoostRow::from_batch(&sunk).unwrap_err().to_string();
    assert!(e.contains("row 0 (item 1)") && e.contains("0.5"), "{e}");
    let no_image: Vec<Item> = (0..2)
        .map(|i| Item {
            image_vec: None,
            ..item(i)
        })
        .collect();
    assert_eq!(
        Item::from_batch(&Item::to_batch(&no_image, 0)).unwrap(),
        no_image
    );
}

#[test]
fn wrong_column_type_names_the_field() {
    let b = Event::to_batch(&[Event {
        user_id: 1,
        item_id: 2,
        ts: 3,
        action: Action::Like,
        dwell_ms: None,
        request_id: None,
    }]);
    let schema = Arc::new(Schema::new(vec![Field::new(
        "user_id",
        DataType::Utf8,
        false,
    )]));
    let bad = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["x"]))]).unwrap();
    let err = Event::from_batch(&bad).unwrap_err();
    assert!(
        err.text().contains("`user_id`") && err.text().contains("expected uint64"),
        "{err}"
    );
    assert_eq!(Event::from_batch(&b).unwrap().len(), 1);
}

/// A postings batch is checked row by row as it is decoded: the row and field of the first
/// problem are named.
#[test]
fn bad_postings_name_row_and_field() {
    let row = |kind: &str, key: &str, cluster: Option<&str>| {
        RecordBatch::try_new(
            postings_schema(),
            vec![
                Arc::new(StringArray::from(vec!["category", kind])),
                Arc::new(StringArray::from(vec!["c", key])),
                Arc::new(UInt64Array::from(vec![1u64, 7])),
                Arc::new(TimestampMillisecondArray::from(vec![1i64, 2]).with_timezone("UTC")),
                Arc::new(StringArray::from(vec![None, Some("c")])),
                Arc::new(ListArray::new_null(
                    Arc::new(Field::new("item", DataType::Utf8, true)),
                    2,
                )),
                Arc::new(StringArray::from(vec![None, cluster])),
                Arc::new(StringArray::from(vec![None::<&str>, None])),
                Arc::new(ListArray::new_null(
                    Arc::new(Field::new("item", DataType::Float32, true)),
                    2,
                )),
                Arc::new(ListArray::new_null(
                    Arc::new(Field::new("item", DataType::Float32, true)),
                    2,
                )),
                Arc::new(StringArray::from(vec![None::<&str>, None])),
                Arc::new(ListArray::new_null(
                    Arc::new(Field::new("item", DataType::Float32, true)),
                    2,
                )),
            ],
        )
        .unwrap()
    };
    let err = Posting::from_batch(&row("shelf", "x", None)).unwrap_err();
    assert_eq!(err.text(), "row 1: field `kind`: unknown list kind \"shelf\", expected one of category, keyword, cluster, recent or item");
    let err = Posting::from_batch(&row("item", "8", None)).unwrap_err();
    assert_eq!(
        err.location.as_ref().map(|l| (l.row, l.field.as_str())),
        Some((1, "key"))
    );
    let err = Posting::from_batch(&row("item", "7", Some("v1"))).unwrap_err();
    assert_eq!(
        err.location.as_ref().map(|l| (l.row, l.field.as_str())),
        Some((1, "cluster"))
    );
    let ok = Posting::from_batch(&row("item", "7", Some("v1:4"))).unwrap();
    assert_eq!(ok[1].item_id(), 7);
    // a tower version without its vector
    let mut cols = row("item", "7", None).columns().to_vec();
    cols[10] = Arc::new(StringArray::from(vec![None, Some("tt1")]));
    let half = RecordBatch::try_new(postings_schema(), cols).unwrap();
    let err = Posting::from_batch(&half).unwrap_err();
    assert_eq!(
        err.location.as_ref().map(|l| (l.row, l.field.as_str())),
        Some((1, "tower_vector"))
    );
    // files written before the pools have no tower columns at all
    let old = row("item", "7", None)
        .project(&(0..10).collect::<Vec<_>>())
        .unwrap();
    assert!(
        matches!(&Posting::from_batch(&old).unwrap()[1], Posting::Item(r) if r.tower.is_none())
    );
}
