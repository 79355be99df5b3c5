//! Maps keyed by a machine's relative paths, with a hasher made for them.
//!
//! A warm restore of aio's machine hashes each of its 114k paths about five times (the walk, the
//! tree's lookup, the live index), and std's SipHash, made to resist keys chosen by an attacker,
//! reads them a byte at a time in rounds. These keys are the paths of a machine the user's own
//! stages wrote; a word-at-a-time multiply-rotate hash (the one rustc uses for its own tables)
//! costs a fraction of that and spreads such strings well.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` from a machine's relative paths.
pub type PathMap<K, V> = HashMap<K, V, BuildHasherDefault<PathHasher>>;

/// A new, empty `PathMap` with room for `n` paths.
pub fn with_capacity<K, V>(n: usize) -> PathMap<K, V> {
    PathMap::with_capacity_and_hasher(n, Default::default())
}

#[derive(Default, Clone, Copy)]
pub struct PathHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl PathHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for PathHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.add(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        let mut last = [0u8; 8];
        let rest = words.remainder();
        last[..rest.len()].copy_from_slice(rest);
        // The length goes in with the tail, so "a" and "a\0" differ.
        self.add(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 56));
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn hash(s: &str) -> u64 {
        BuildHasherDefault::<PathHasher>::default().hash_one(s)
    }

    #[test]
    fn paths_that_differ_anywhere_hash_apart_and_the_map_finds_each() {
        let paths = [
            "a",
            "a\0",
            "b",
            "opt/venv/lib/python3.11/site-packages/nova/__init__.py",
            "opt/venv/lib/python3.11/site-packages/nova/__init__.pyc",
            "opt/venv/lib/python3.11/site-packages/novb/__init__.py",
            "",
        ];
        for (i, a) in paths.iter().enumerate() {
            for b in &paths[i + 1..] {
                assert_ne!(hash(a), hash(b), "{a:?} and {b:?}");
            }
        }
        let mut map = with_capacity(100_000);
        for i in 0..100_000 {
            map.insert(format!("usr/lib/python3/dist-packages/p{i}/m.py"), i);
        }
        assert_eq!(map.len(), 100_000);
        assert_eq!(
            map.get("usr/lib/python3/dist-packages/p77777/m.py"),
            Some(&77_777)
        );
        assert_eq!(map.get("usr/lib/python3/dist-packages/p100000/m.py"), None);
    }
}
