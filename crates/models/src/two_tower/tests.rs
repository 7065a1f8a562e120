//! The two-tower model: the softmax gradients against finite differences, training learns who
//! likes what, each default method ranks new items above chance, the generator fits.

use super::train::{batch_loss, correction};
use super::*;

fn small(method: DefaultMethod) -> TwoTowerConfig {
    TwoTowerConfig {
        buckets: 64,
        hidden: 6,
        dim: 4,
        content_dim: 3,
        temperature: 0.5,
        learning_rate: 0.1,
        batch: 4,
        epochs: 1,
        seed: 3,
        default_method: method,
        min_interactions: 2,
        uniform_negatives: 2,
        item_item: 0.5,
        item_item_window: 1,
        neighbors: 0,
        users: UserColdConfig {
            bias_features: true,
            new_user_interactions: 2,
            new_user_weight: 3.0,
            method: UserMethod::Group,
            ..Default::default()
        },
    }
}

fn batch_len(set: &TrainingSet) -> usize {
    set.pairs.len()
}

fn item(id: u64, cat: &str, content: [f32; 3]) -> ItemSide {
    ItemSide {
        item_id: id,
        category: cat.into(),
        keywords: vec![format!("{cat}-tag"), "common".into()],
        content: content.to_vec(),
    }
}

fn user(id: u64, recent: &[u64]) -> UserSide {
    UserSide {
        user_id: id,
        attrs: vec![
            format!("gender:{}", id % 2),
            "age:25".into(),
            "region:x".into(),
        ],
        recent: recent.to_vec(),
        content: vec![0.1, -0.2, 0.3],
        clicked: Vec::new(),
        interests: Vec::new(),
        // as many interactions as recent items: fewer than 2 is new
        state: UserState {
            interactions: recent.len() as u64,
            days_since_signup: Some(recent.len() as f32),
            logged_in: true,
        },
    }
}

/// Central finite differences of the in-batch softmax loss against the analytic gradient, for
/// parameters of both towers, including the shared default ID a long-tail item trains.
#[test]
fn gradients_match_finite_differences() {
    let m = TwoTower::new(small(DefaultMethod::Shared)).unwrap();
    let items = [
        item(1, "a", [0.2, 0.1, -0.3]),
        item(2, "b", [-0.4, 0.5, 0.1]),
        item(3, "a", [0.3, -0.1, 0.2]),
    ];
    let set = TrainingSet {
        items: items.iter().map(|i| m.item_input(i)).collect(),
        // item 3 is long-tail: it trains the shared default ID
        counts: vec![3, 2, 1],
        pairs: vec![
            // new users (weight 3, bias features on, their group's ID); the first engaged
            // the long-tail item 3 before (the co-engagement term's anchor, through the default)
            Pair::weighed(&m, m.user_input(&user(10, &[2])), 0).after(Some(2)),
            Pair::weighed(&m, m.user_input(&user(11, &[])), 1),
            // an old user, who engaged item 1 before
            Pair::weighed(&m, m.user_input(&user(12, &[1, 3])), 2).after(Some(0)),
            // a repeat of item 0 in the batch: masked as a negative of the first pair
            Pair::weighed(&m, m.user_input(&user(13, &[3])), 0),
        ],
        users: Vec::new(),
    };
    assert_eq!(set.pairs[0].weight, 3.0);
    assert_eq!(set.pairs[2].weight, 1.0);
    let mut m = m;
    // θ starts at zero; give it values so that its gradient check is not at a special point
    for (k, x) in m.theta.iter_mut().enumerate() {
        *x = ((k * 37 % 101) as f32 - 50.0) / 100.0;
    }
    let m = m;
    // mixed negatives: two uniformly drawn items beside the batch's (item 1 is also a row's
    // positive: masked for that row, a negative for the others)
    let extras = [1usize, 2];
    let lq = correction(&set, batch_len(&set), extras.len());
    let batch: Vec<&Pair> = set.pairs.iter().collect();
    let mut g = BatchGrads::zeros(&m);
    batch_loss(&m, &set, &batch, &extras, &lq, Some(&mut g)).unwrap();
    let (gu, gi) = (&g.user, &g.item);
    let eps = 1e-2f32;
    let numeric = |mutate: &dyn Fn(&mut TwoTower, f32)| -> f32 {
        let (mut plus, mut minus) = (m.clone(), m.clone());
        mutate(&mut plus, eps);
        mutate(&mut minus, -eps);
        let lp = batch_loss(&plus, &set, &batch, &extras, &lq, None).unwrap() as f64;
        let lm = batch_loss(&minus, &set, &batch, &extras, &lq, None).unwrap() as f64;
        ((lp - lm) / (2.0 * eps as f64)) as f32
    };
    let close = |analytic: f32, num: f32, what: &str| {
        let tol = 2e-3 + 3e-2 * analytic.abs().max(num.abs());
        assert!(
            (analytic - num).abs() <= tol,
            "{what}: analytic {analytic} vs numeric {num}"
        );
    };
    let mut checked = 0;
    for (i, j) in [(0, 0), (1, 2), (3, 5)] {
        close(
            gu.w_out[(i, j)],
            numeric(&|t, d| t.user.w_out[(i, j)] += d),
            "user w_out",
        );
        close(
            gi.w_out[(i, j)],
            numeric(&|t, d| t.item.w_out[(i, j)] += d),
            "item w_out",
        );
        checked += 2;
    }
    for (i, j) in [(0, 0), (4, 2)] {
        close(
            gu.w_dense[(i, j)],
            numeric(&|t, d| t.user.w_dense[(i, j)] += d),
            "user w_dense",
        );
        close(
            gi.w_dense[(i, j)],
            numeric(&|t, d| t.item.w_dense[(i, j)] += d),
            "item w_dense",
        );
        checked += 2;
    }
    for i in 0..6 {
        close(
            gu.bias[i],
            numeric(&|t, d| t.user.bias[i] += d),
            "user bias",
        );
        close(
            gi.bias[i],
            numeric(&|t, d| t.item.bias[i] += d),
            "item bias",
        );
        checked += 2;
    }
    let default = m.default_bucket();
    assert!(
        gi.emb.contains_key(&default),
        "the long-tail item trains the default ID"
    );
    for (&b, g) in gi.emb.iter().take(5) {
        for i in [0, 3] {
            close(
                g[i],
                numeric(&|t, d| t.item.emb[(i, b as usize)] += d),
                "item emb",
            );
            checked += 1;
        }
    }
    for (&b, g) in gu.emb.iter().take(5) {
        for i in [1, 5] {
            close(
                g[i],
                numeric(&|t, d| t.user.emb[(i, b as usize)] += d),
                "user emb",
            );
            checked += 1;
        }
    }
    let group = m.user_input(&user(10, &[2])).group.unwrap();
    assert!(
        gu.emb.contains_key(&group),
        "a new user trains their group's ID"
    );
    assert!(
        !gu.emb.contains_key(&m.user_input(&user(10, &[2])).id),
        "and not their own"
    );
    // the shallow part: θ of the items new users' rows touch
    assert!(!g.theta.is_empty(), "θ receives gradient");
    for (&b, gt) in g.theta.iter() {
        for r in [0, 1, 8] {
            close(
                gt[r],
                numeric(&|t, d| t.theta[(r, b as usize)] += d),
                "theta",
            );
            checked += 1;
        }
    }
    assert!(checked >= 45, "{checked}");
}

/// Two groups of users, two topics of items: users of a group engage items of their topic. Some
/// items of each topic are new (one interaction): among the new items (the pool the two-tower
/// channel searches) they must rank above chance for their group through the default embedding,
/// whatever the method.
fn world(method: DefaultMethod) -> (TwoTower, TrainingSet, Vec<(UserInput, usize)>) {
    world_with(method, UserColdConfig::default())
}

fn world_with(
    method: DefaultMethod,
    users: UserColdConfig,
) -> (TwoTower, TrainingSet, Vec<(UserInput, usize)>) {
    let cfg = TwoTowerConfig {
        buckets: 1 << 12,
        hidden: 16,
        dim: 8,
        content_dim: 3,
        temperature: 0.1,
        learning_rate: 0.1,
        batch: 32,
        epochs: 8,
        seed: 5,
        default_method: method,
        min_interactions: 3,
        uniform_negatives: 0,
        item_item: 0.0,
        item_item_window: 1,
        neighbors: 0,
        users,
    };
    let m = TwoTower::new(cfg).unwrap();
    let topic = |i: u64| if i.is_multiple_of(2) { "even" } else { "odd" };
    let content = |i: u64| {
        if i.is_multiple_of(2) {
            [1.0, 0.1 * (i % 3) as f32, 0.0]
        } else {
            [0.0, 0.1 * (i % 3) as f32, 1.0]
        }
    };
    // items 0..40 are warm, 40..60 new
    let items: Vec<ItemSide> = (0..60).map(|i| item(i, topic(i), content(i))).collect();
    let mut pairs = Vec::new();
    let mut rng = 17u64;
    let mut next = || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) as usize
    };
    for round in 0..30 {
        for u in 0..20u64 {
            let parity = (u % 2) as usize;
            let warm = 2 * (next() % 20) + parity;
            let recent = [(2 * ((round + u as usize) % 20) + parity) as u64];
            // new in the first rounds (fewer than `new_user_interactions`), old after
            let side = UserSide {
                state: UserState {
                    interactions: round as u64,
                    days_since_signup: Some(round as f32),
                    logged_in: true,
                },
                ..user(u, &recent)
            };
            pairs.push(Pair::weighed(&m, m.user_input(&side), warm));
        }
    }
    // each new item once
    for i in 40..60usize {
        let u = (i % 2) as u64 + 2 * (i as u64 % 7);
        pairs.push(Pair::weighed(
            &m,
            m.user_input(&user(u, &[(i % 2) as u64])),
            i,
        ));
    }
    let inputs: Vec<ItemInput> = items.iter().map(|i| m.item_input(i)).collect();
    let counts = count_interactions(inputs.len(), &pairs);
    let held_out: Vec<(UserInput, usize)> = (40..60usize)
        .map(|i| {
            let u = 100 + (i % 2) as u64;
            (
                m.user_input(&user(u, &[(i % 2) as u64, 2 + (i % 2) as u64])),
                i,
            )
        })
        .collect();
    // users 0..20 are old (many interactions overall): their signature is their attributes and
    // the items of their parity
    let records = (0..20u64)
        .map(|u| UserRecord {
            user_id: u,
            signature: TwoTower::signature(&user(u, &[]).attrs, &[u % 2, 2 + u % 2]),
            interactions: 30,
        })
        .collect();
    let set = TrainingSet {
        items: inputs,
        counts,
        pairs,
        users: records,
    };
    (m, set, held_out)
}

#[test]
fn every_default_method_ranks_new_items_above_chance() {
    for method in DefaultMethod::ALL {
        let (mut m, set, held_out) = world(method);
        // candidates: the 20 new items (the warm ones are left out, as a new-item pool would)
        let pool = |_: usize, j: usize| j < 40;
        let before = recall_at(&m, &set, &held_out, 5, pool).unwrap();
        let stats = m.train(&set, || {}, |_| {}).unwrap();
        assert!(
            stats.last().unwrap().loss < stats[0].loss,
            "{method}: the loss falls: {stats:?}"
        );
        let after = recall_at(&m, &set, &held_out, 5, pool).unwrap();
        // 20 candidates, k = 5: chance is 0.25; knowing the topic alone gives 0.5
        assert!(
            after >= 0.4,
            "{method}: new items' held-out recall@5 {after} (untrained {before}, chance 0.25)"
        );
        if method == DefaultMethod::Content {
            assert!(m.generator.is_some());
        }
    }
}

#[test]
fn method_names_round_trip_and_unknown_ones_are_named() {
    for m in DefaultMethod::ALL {
        assert_eq!(m.as_str().parse::<DefaultMethod>(), Ok(m));
    }
    let e = "median".parse::<DefaultMethod>().unwrap_err();
    assert!(e.contains("\"median\"") && e.contains("shared"), "{e}");
}

#[test]
fn the_generator_recovers_a_linear_map() {
    let truth = DMatrix::from_fn(3, 3 + 2 + 1, |i, j| {
        (i as f32 + 1.0) * 0.1 - j as f32 * 0.05
    });
    let examples: Vec<(DVector<f32>, Vec<f32>, DVector<f32>)> = (0..40)
        .map(|k| {
            let bag = DVector::from_fn(3, |i, _| ((k * 7 + i * 3) % 11) as f32 / 11.0);
            let content = vec![(k % 5) as f32 / 5.0, (k % 3) as f32 / 3.0];
            let mut x = DVector::zeros(6);
            x.rows_mut(0, 3).copy_from(&bag);
            x[3] = content[0];
            x[4] = content[1];
            x[5] = 1.0;
            (bag, content, &truth * x)
        })
        .collect();
    let refs: Vec<(DVector<f32>, &[f32], DVector<f32>)> = examples
        .iter()
        .map(|(b, c, y)| (b.clone(), c.as_slice(), y.clone()))
        .collect();
    let g = Generator::fit(&refs, 2, 1e-4).unwrap();
    let err = (&g.w - &truth).abs().max();
    assert!(err < 1e-2, "max error {err}");
    assert!(
        g.generate(&DVector::zeros(3), &[1.0]).is_err(),
        "content of the wrong length"
    );
}

/// The shallow part next to the logit learns (θ moves off zero) and changes the score of a new
/// user, not that of an old user whose tower output is the same.
#[test]
fn the_bias_part_learns_and_moves_only_new_users_scores() {
    let users = UserColdConfig {
        bias_features: true,
        ..Default::default()
    };
    let (mut m, set, _) = world_with(DefaultMethod::Shared, users);
    assert!(m.theta.iter().all(|&x| x == 0.0));
    m.train(&set, || {}, |_| {}).unwrap();
    assert!(m.theta.iter().any(|&x| x != 0.0), "θ received gradient");
    let mut untrained = m.clone();
    untrained.theta.fill(0.0);
    let side = |interactions| UserSide {
        state: UserState {
            interactions,
            days_since_signup: Some(0.5),
            logged_in: true,
        },
        ..user(7, &[1, 3])
    };
    let (new, old) = (m.user_input(&side(2)), m.user_input(&side(500)));
    assert!(new.new && !old.new);
    assert_eq!(
        m.user_vector(&new).unwrap(),
        m.user_vector(&old).unwrap(),
        "the same tower output"
    );
    let item = &set.items[5];
    let score = |m: &TwoTower, u: &UserInput| {
        m.user_query(u)
            .unwrap()
            .dot(&m.query_item(item, IdUse::Own).unwrap())
    };
    assert_eq!(m.vector_dim(), 8 + BIAS_FEATURES);
    assert_eq!(score(&m, &old), score(&untrained, &old), "old: unchanged");
    assert!(
        (score(&m, &new) - score(&untrained, &new)).abs() > 1e-4,
        "new: moved by the shallow part"
    );
}

/// Each user method gives a new user an ID embedding of its own kind: the group's trained ID,
/// a generated one, the old users' mean; combined averages them.
#[test]
fn every_user_method_places_a_new_user() {
    let mut vectors = Vec::new();
    for method in UserMethod::ALL {
        let users = UserColdConfig {
            method,
            ..Default::default()
        };
        let (mut m, set, _) = world_with(DefaultMethod::Shared, users);
        m.train(&set, || {}, |_| {}).unwrap();
        assert_eq!(m.meta.is_some(), method.uses_meta(), "{method}");
        assert_eq!(m.old_users.is_some(), method.uses_knn(), "{method}");
        if method.uses_knn() {
            assert_eq!(m.old_users.as_ref().unwrap().len(), 20, "{method}");
        }
        // a user the model never saw, with one item of the odd topic
        let side = UserSide {
            user_id: 999,
            ..user(1, &[1])
        };
        let x = m.serving_input(&side);
        assert!(x.new);
        vectors.push((method, m.user_vector(&x).unwrap()));
    }
    for (i, (a, va)) in vectors.iter().enumerate() {
        for (b, vb) in &vectors[i + 1..] {
            assert!((va - vb).norm() > 1e-4, "{a} and {b} place the user alike");
        }
    }
}

/// The seed term moves a new user's query towards the item vectors of what they engaged, by
/// `w` times the user part's length, and leaves the bias part alone.
#[test]
fn seed_items_move_the_query_towards_them() {
    let m = TwoTower::new(small(DefaultMethod::Shared)).unwrap();
    let q = m.user_query(&m.user_input(&user(10, &[2]))).unwrap();
    let seeds = [
        (item(1, "a", [0.2, 0.1, -0.3]), 3.0),
        (item(3, "a", [0.3, -0.1, 0.2]), 1.0),
    ];
    let dim = m.cfg.dim;
    assert_eq!(m.with_seed_items(q.clone(), &seeds, 0.0).unwrap(), q);
    assert_eq!(m.with_seed_items(q.clone(), &[], 2.0).unwrap(), q);
    let mut mean = DVector::<f32>::zeros(dim);
    for (s, a) in &seeds {
        mean += *a
            * m.item_vector(&m.item_input(s), m.id_use(s.item_id))
                .unwrap();
    }
    let cos = |a: &DVector<f32>| {
        let a = a.rows(0, dim);
        a.dot(&mean) / (a.norm() * mean.norm())
    };
    let moved = m.with_seed_items(q.clone(), &seeds, 2.0).unwrap();
    assert!(cos(&moved) > cos(&q), "{} <= {}", cos(&moved), cos(&q));
    let shift = (moved.rows(0, dim) - q.rows(0, dim)).norm();
    assert!((shift - 2.0 * q.rows(0, dim).norm()).abs() < 1e-4);
    assert_eq!(
        moved.rows(dim, q.len() - dim),
        q.rows(dim, q.len() - dim),
        "the bias part is the user's own"
    );
}
