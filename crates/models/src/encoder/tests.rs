//! The encoder: gradients against finite differences, training separates, features and
//! backbones behave.

use super::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn small() -> Encoder {
    Encoder::new(EncoderConfig {
        buckets: 64,
        hidden: 6,
        dim: 4,
        image_dim: 3,
        margin: 0.5,
        learning_rate: 0.1,
        seed: 3,
        backbone: Backbone::Hashed,
    })
    .unwrap()
}

fn feats(words: &[&str], image: Option<Vec<f32>>) -> Features {
    feats_in(words, &[], 64, image)
}

/// An item whose title, category and keywords are `words`, plus `extra` keywords.
fn feats_in(words: &[&str], extra: &[&str], buckets: usize, image: Option<Vec<f32>>) -> Features {
    let kw: Vec<String> = words.iter().chain(extra).map(|s| s.to_string()).collect();
    let mut f = features(
        &ItemText {
            title: &words.join(" "),
            body: "",
            category: words[0],
            keywords: &kw,
            image: None,
        },
        buckets,
    );
    f.image = image.unwrap_or_default();
    f
}

/// Central finite differences of the loss against the analytic gradient, for every parameter
/// the triplet touches.
#[test]
fn gradients_match_finite_differences() {
    let enc = small();
    let a = feats(&["cat", "kitten"], Some(vec![0.3, -0.2, 0.5]));
    let p = feats(&["cat", "tabby"], None);
    let n = feats(&["dog", "puppy"], Some(vec![-0.1, 0.4, 0.2]));
    let mut g = enc.zero_grads();
    let loss = enc.triplet(&a, &p, &n, Some(&mut g)).unwrap();
    assert!(loss > 0.0, "the check needs an active hinge");
    let eps = 1e-2f32;
    let numeric = |mutate: &dyn Fn(&mut Encoder, f32)| -> f32 {
        let (mut plus, mut minus) = (enc.clone(), enc.clone());
        mutate(&mut plus, eps);
        mutate(&mut minus, -eps);
        let lp = plus.triplet(&a, &p, &n, None).unwrap() as f64;
        let lm = minus.triplet(&a, &p, &n, None).unwrap() as f64;
        ((lp - lm) / (2.0 * eps as f64)) as f32
    };
    let close = |analytic: f32, num: f32, what: &str| {
        let tol = 2e-3 + 2e-2 * analytic.abs().max(num.abs());
        assert!(
            (analytic - num).abs() <= tol,
            "{what}: analytic {analytic} vs numeric {num}"
        );
    };
    let mut checked = 0;
    for (i, j) in [(0, 0), (1, 2), (3, 5), (2, 1)] {
        close(
            g.w_out[(i, j)],
            numeric(&|e, d| e.net.w_out[(i, j)] += d),
            &format!("w_out[{i},{j}]"),
        );
        checked += 1;
    }
    for (i, j) in [(0, 0), (4, 2), (5, 1)] {
        close(
            g.w_dense[(i, j)],
            numeric(&|e, d| e.net.w_dense[(i, j)] += d),
            &format!("w_img[{i},{j}]"),
        );
        checked += 1;
    }
    for i in 0..6 {
        close(
            g.bias[i],
            numeric(&|e, d| e.net.bias[i] += d),
            &format!("bias[{i}]"),
        );
        checked += 1;
    }
    for (&b, gb) in g.emb.iter().take(4) {
        for i in [0, 3] {
            close(
                gb[i],
                numeric(&|e, d| e.net.emb[(i, b as usize)] += d),
                &format!("emb[{i},{b}]"),
            );
            checked += 1;
        }
    }
    assert!(checked >= 19);
}

#[test]
fn training_separates_two_topics() {
    let mut enc = Encoder::new(EncoderConfig {
        buckets: 1 << 12,
        hidden: 16,
        dim: 8,
        image_dim: 0,
        ..Default::default()
    })
    .unwrap();
    let topics = [
        ["cat", "kitten", "meow", "tabby", "whiskers"],
        ["car", "engine", "wheel", "motor", "road"],
    ];
    let mut rng = SmallRng::seed_from_u64(2);
    let mut item = |t: usize| {
        let w: Vec<&str> = (0..3).map(|_| topics[t][rng.random_range(0..5)]).collect();
        feats_in(&w, &[], 1 << 12, None)
    };
    let items: Vec<(usize, Features)> = (0..60).map(|i| (i % 2, item(i % 2))).collect();
    // anchor, a positive of its topic, a negative of the other topic
    let triplets: Vec<(&Features, &Features, &Features)> = (0..items.len())
        .flat_map(|i| (1..6).map(move |s| (i, (i + 2 * s) % 60, (i + 2 * s + 1) % 60)))
        .inspect(|&(a, p, n)| assert!(items[a].0 == items[p].0 && items[a].0 != items[n].0))
        .map(|(a, p, n)| (&items[a].1, &items[p].1, &items[n].1))
        .collect();
    let before = enc.loss(&triplets).unwrap();
    let mut opt = enc.optimizer();
    for _ in 0..30 {
        for batch in triplets.chunks(64) {
            enc.step(&mut opt, batch).unwrap();
        }
    }
    let after = enc.loss(&triplets).unwrap();
    assert!(after < before * 0.5, "loss {before} -> {after}");
    assert!(enc.triplet_accuracy(&triplets).unwrap() > 0.95);
    for (_, f) in &items {
        assert!((enc.encode(f).unwrap().norm() - 1.0).abs() < 1e-4);
    }

    // rows training never touched hold random noise until they are forgotten
    let seen = feats_in(&["cat", "kitten", "tabby"], &[], 1 << 12, None);
    let with_new = |e: &Encoder| {
        e.encode(&feats_in(
            &["cat", "kitten", "tabby"],
            &["zeppelin"],
            1 << 12,
            None,
        ))
        .unwrap()
    };
    let twin_before = with_new(&enc);
    let orig = enc.encode(&seen).unwrap();
    assert!(
        (twin_before.dot(&orig) - 1.0).abs() > 1e-4,
        "an untrained row moves the vector before it is forgotten"
    );
    enc.forget_untrained(&opt);
    let orig = enc.encode(&seen).unwrap();
    let twin = with_new(&enc);
    assert!(
        (twin - &orig).norm() < 1e-6,
        "an unseen keyword adds nothing once untrained rows are forgotten"
    );
    // what training touched is kept
    assert!(enc.triplet_accuracy(&triplets).unwrap() > 0.95);
}

#[test]
fn features_are_stable_and_bounded() {
    let kw = vec!["Kitten".to_string()];
    let t = ItemText {
        title: "A cat, a Cat!",
        body: "",
        category: "Pets",
        keywords: &kw,
        image: None,
    };
    let f = features(&t, 1000);
    assert_eq!(f, features(&t, 1000));
    assert!(f
        .sparse
        .iter()
        .all(|(b, w)| (*b as usize) < 1000 && *w > 0.0));
    let wrong = Features {
        sparse: vec![(5000, 1.0)],
        image: vec![],
        fields: vec![],
    };
    assert!(small().encode(&wrong).is_err());
    let wrong_field = Features {
        fields: vec![vec![5000]],
        ..wrong.clone()
    };
    assert!(small().encode(&wrong_field).is_err());
    let bad_img = Features {
        sparse: vec![],
        image: vec![1.0],
        fields: vec![],
    };
    assert!(matches!(
        small().encode(&bad_img),
        Err(Error::DimensionMismatch { .. })
    ));
}
