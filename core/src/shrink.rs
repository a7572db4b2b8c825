//! Giving memory back after a burst. A hash map keeps the capacity of its
//! largest moment: after a flood of 100,000 transactions or a spike of calls,
//! the tables would hold their peak allocation for good. State owners call
//! [`after_burst`] from their timer handling, so a table that is mostly empty
//! shrinks, while a steady one (or a small one) is left alone.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

/// Tables at most this large are never shrunk: resizing them saves nothing.
const KEEP_CAPACITY: usize = 1024;

/// Halves the slack of a table that is less than a quarter full.
pub fn after_burst<K: Hash + Eq, V, S: BuildHasher>(map: &mut HashMap<K, V, S>) {
    if map.capacity() > KEEP_CAPACITY && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mostly_empty_large_table_shrinks_and_a_small_one_stays() {
        let mut map: HashMap<u32, u32> = (0..100_000).map(|i| (i, i)).collect();
        map.retain(|k, _| *k < 100);
        let peak = map.capacity();
        after_burst(&mut map);
        assert!(map.capacity() < peak / 100, "{} of {peak}", map.capacity());
        let mut small: HashMap<u32, u32> = (0..500).map(|i| (i, i)).collect();
        small.clear();
        let capacity = small.capacity();
        after_burst(&mut small);
        assert_eq!(small.capacity(), capacity);
    }
}
