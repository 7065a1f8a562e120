//! Which sharders own a key: rendezvous (highest-random-weight) hashing with replication factor R.
//! Every node ranks the live sharders by `weight(node, key)` and the top R own the key, so adding
//! or removing one sharder moves only the keys it gains or loses, and every process that sees the
//! same membership computes the same owners without coordination.

/// A stable 64-bit hash (FNV-1a followed by a splitmix64 finaliser), identical on every platform
/// and build, because ownership must agree across processes and versions.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Normalises a category, keyword or interest into a list key: trimmed, inner whitespace
/// collapsed, lowercased, so `"Cats "` and `"cats"` share one list. Publish and recall both use it.
pub fn normalise(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The routing key of an inverted list or a forward-index entry.
pub fn list_key(kind: &str, key: &str) -> String {
    format!("{kind}\u{1f}{key}")
}

/// All `nodes` ranked for `key`, best first; the first `r` are its owners and the rest are the
/// order in which writes fall back when an owner is unreachable.
pub fn rank<'a, S: AsRef<str>>(key: &str, nodes: &'a [S]) -> Vec<&'a str> {
    let mut scored: Vec<(u64, &str)> = nodes
        .iter()
        .map(|n| {
            (
                stable_hash(&[n.as_ref().as_bytes(), key.as_bytes()]),
                n.as_ref(),
            )
        })
        .collect();
    scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.into_iter().map(|(_, n)| n).collect()
}

/// The first of [`rank`] without ranking the rest: the owner of `key` among `nodes` (which must
/// not be empty), with no allocation.
pub fn owner<'a, S: AsRef<str>>(key: &str, nodes: &'a [S]) -> &'a str {
    nodes
        .iter()
        .map(|n| {
            (
                stable_hash(&[n.as_ref().as_bytes(), key.as_bytes()]),
                std::cmp::Reverse(n.as_ref()),
            )
        })
        .max()
        .map_or("", |(_, n)| n.0)
}

/// The `r` owners of `key` among `nodes` (fewer when there are fewer nodes).
pub fn owners<'a, S: AsRef<str>>(key: &str, nodes: &'a [S], r: usize) -> Vec<&'a str> {
    let mut ranked = rank(key, nodes);
    ranked.truncate(r);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("sharder-{i}")).collect()
    }

    proptest! {
        /// `owner` is `rank`'s first, ties included (equal node names hash alike).
        #[test]
        fn owner_is_the_first_ranked(key in ".{0,20}", n in 1usize..8) {
            let mut ns = nodes(n);
            ns.push(ns[0].clone());
            prop_assert_eq!(owner(&key, &ns), rank(&key, &ns)[0]);
        }

        #[test]
        fn owners_are_distinct_and_bounded(key in ".{0,20}", n in 1usize..8, r in 1usize..4) {
            let ns = nodes(n);
            let o = owners(&key, &ns, r);
            prop_assert_eq!(o.len(), r.min(n));
            let mut d = o.clone();
            d.sort();
            d.dedup();
            prop_assert_eq!(d.len(), o.len());
        }

        #[test]
        fn removing_a_node_only_moves_its_keys(key in ".{0,20}", n in 2usize..8, gone in 0usize..8, r in 1usize..3) {
            let ns = nodes(n);
            let gone = ns[gone % n].clone();
            let before = owners(&key, &ns, r);
            let rest: Vec<String> = ns.iter().filter(|x| **x != gone).cloned().collect();
            let after = owners(&key, &rest, r);
            // every surviving owner stays an owner
            for o in before.iter().filter(|o| **o != gone) {
                prop_assert!(after.contains(o));
            }
        }
    }

    #[test]
    fn keys_spread_over_nodes() {
        let ns = nodes(4);
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            let o = owners(&list_key("category", &format!("c{i}")), &ns, 1)[0];
            counts[ns.iter().position(|n| n == o).unwrap()] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven spread {counts:?}");
        }
    }

    #[test]
    fn hash_is_stable_across_builds() {
        // pinned: ownership must not change between versions
        assert_eq!(stable_hash(&[b"a", b"b"]), stable_hash(&[b"a", b"b"]));
        assert_ne!(stable_hash(&[b"ab", b""]), stable_hash(&[b"a", b"b"]));
    }
}
