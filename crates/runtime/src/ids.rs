//! Maps and sets keyed by item (or user) ids, with one multiply-xorshift for a hash instead of
//! SipHash: recall and the traffic ledger hash thousands of ids per request, and the ids come from
//! our own indexes, so flooding resistance buys nothing there.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for ids.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        let h = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Maps and sets keyed by item id.
pub type IdMap<V> = std::collections::HashMap<u64, V, BuildHasherDefault<IdHasher>>;
/// A set of item ids.
pub type IdSet = HashSet<u64, BuildHasherDefault<IdHasher>>;

/// FNV-1a over bytes: a hash that is the same in every run and build, for identities kept in
/// logs and replayed (an event's, an exposure's).
pub struct StableHash(u64);

impl Default for StableHash {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl StableHash {
    /// Feeds `bytes`.
    pub fn eat(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
        self
    }

    /// The hash so far.
    pub fn value(&self) -> u64 {
        self.0
    }
}
