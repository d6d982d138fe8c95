//! Signaling ids (docs/PROTOCOL.md §3): random numbers in 1..2^31-1, unique among live peers.
//!
//! A seeded SplitMix64 draws them: the ids only need to be unique and not sequential, and a
//! seed keeps the hub deterministic under test.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::ConnId;

/// The largest signaling id plus one: ids are in `1..ID_LIMIT`.
pub const ID_LIMIT: u32 = 1 << 31;

/// Hashes a signaling id with one multiplication. Safe from flooding, unlike for keys: the
/// ids are drawn here at random, no client chooses them.
#[derive(Debug, Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        // Fibonacci hashing: spreads the bits over the whole word, high bits included, which
        // the table uses too.
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Debug)]
pub(super) struct SignalingIds {
    owners: HashMap<u32, ConnId, BuildHasherDefault<IdHasher>>,
    state: u64,
}

impl SignalingIds {
    pub(super) fn new(seed: u64) -> Self {
        Self {
            owners: HashMap::default(),
            state: seed,
        }
    }

    /// Draws an id no live peer has and gives it to `owner`.
    pub(super) fn draw(&mut self, owner: ConnId) -> u32 {
        loop {
            let id = (self.next_u64() >> 33) as u32; // 31 random bits
            if id != 0 && !self.owners.contains_key(&id) {
                self.owners.insert(id, owner);
                return id;
            }
        }
    }

    pub(super) fn release(&mut self, id: u32) {
        self.owners.remove(&id);
    }

    pub(super) fn get(&self, id: u32) -> Option<ConnId> {
        self.owners.get(&id).copied()
    }

    pub(super) fn len(&self) -> usize {
        self.owners.len()
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_nonzero_below_limit_and_unique() {
        let mut ids = SignalingIds::new(7);
        let owner = ConnId {
            slot: 0,
            generation: 0,
        };
        let drawn: Vec<u32> = (0..10_000).map(|_| ids.draw(owner)).collect();
        assert!(drawn.iter().all(|i| (1..ID_LIMIT).contains(i)));
        let mut sorted = drawn.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), drawn.len());
        assert_eq!(ids.len(), drawn.len());
        ids.release(drawn[0]);
        assert_eq!(ids.get(drawn[0]), None);
        assert_eq!(ids.get(drawn[1]), Some(owner));
    }
}
