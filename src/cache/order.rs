//! The order a cache is read in, per epoch: a pure function of (seed, epoch, the cache's shard
//! sizes, the settings), so it is the same on every rank and resumable by position.
//!
//! `random` is every indexed source's seeded permutation ([`crate::source::epoch_order`]): any
//! record may follow any other, so once the cache outgrows the page cache almost every read
//! goes to disk. `quasi_random` (FFCV's QUASI_RANDOM, MosaicML's shuffle blocks) shuffles the
//! shard order and, within each shard, the order of windows of `window` consecutive records;
//! the windows in that order are dealt into `lanes` contiguous lanes, and the k-th window of
//! every lane forms block k, whose records are shuffled together. At any time the reader works
//! on `lanes` windows, each read front to back, so the pages it needs are few and contiguous
//! (readahead works), while a batch still mixes `lanes` places of the cache (records are
//! written in source order, which for an ImageNet folder is class order: one window alone would
//! fill a batch with one class).

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// `order` of a cache source.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReadOrder {
    /// A seeded permutation of all records (as every indexed source).
    #[default]
    Random,
    /// Shards, windows within shards and records within blocks of windows shuffled per epoch.
    QuasiRandom,
}

/// The record ids of one epoch in `quasi_random` order. `shard_records[s]` is the number of
/// records of shard `s`; ids count through the shards in order.
pub fn quasi_random(
    seed: u64,
    epoch: u64,
    shard_records: &[u64],
    window: u64,
    lanes: u64,
) -> Vec<u64> {
    let window = window.max(1);
    let mut rng = Rng::keyed(&[seed, epoch, 0x0051_2A5D_0DE5]);
    let mut starts = Vec::with_capacity(shard_records.len());
    let mut total = 0u64;
    for &n in shard_records {
        starts.push(total);
        total += n;
    }
    let mut shard_order: Vec<usize> = (0..shard_records.len()).collect();
    rng.shuffle(&mut shard_order);
    // Windows as [start, end) id ranges, in shard order, shuffled within each shard.
    let mut windows: Vec<(u64, u64)> = Vec::new();
    for s in shard_order {
        let (first, n) = (starts[s], shard_records[s]);
        let from = windows.len();
        windows.extend((0..n.div_ceil(window)).map(|w| {
            let a = first + w * window;
            (a, (a + window).min(first + n))
        }));
        rng.shuffle(&mut windows[from..]);
    }
    let lanes = (lanes.max(1) as usize).min(windows.len().max(1));
    let per_lane = windows.len().div_ceil(lanes);
    let mut order = Vec::with_capacity(total as usize);
    for k in 0..per_lane {
        let from = order.len();
        for lane in 0..lanes {
            if let Some(&(a, b)) = windows.get(lane * per_lane + k) {
                order.extend(a..b);
            }
        }
        rng.shuffle(&mut order[from..]);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut v: Vec<u64>) -> Vec<u64> {
        v.sort_unstable();
        v
    }

    /// Every record exactly once per epoch, for shards of uneven sizes and any settings; the
    /// order is a function of (seed, epoch) and changes with either.
    #[test]
    fn every_record_once_per_epoch_and_deterministic() {
        let shards = [100u64, 37, 0, 64, 1, 250];
        let total: u64 = shards.iter().sum();
        for (window, lanes) in [(1, 1), (8, 4), (16, 1), (64, 8), (1000, 3), (7, 100)] {
            for epoch in 0..3 {
                let a = quasi_random(5, epoch, &shards, window, lanes);
                assert_eq!(sorted(a.clone()), (0..total).collect::<Vec<_>>());
                assert_eq!(a, quasi_random(5, epoch, &shards, window, lanes));
                assert_ne!(a, quasi_random(5, epoch + 1, &shards, window, lanes));
                assert_ne!(a, quasi_random(6, epoch, &shards, window, lanes));
            }
        }
        assert!(quasi_random(1, 0, &[], 8, 4).is_empty());
    }

    /// Locality: any stretch of `window × lanes` consecutive positions touches at most
    /// 2 × lanes windows (the blocks it overlaps), so the reader's working set stays small; and
    /// a block mixes records from `lanes` different places.
    #[test]
    fn reads_stay_within_a_few_windows_at_a_time() {
        let shards = [512u64; 8];
        let (window, lanes) = (16u64, 4u64);
        let order = quasi_random(9, 2, &shards, window, lanes);
        let span = (window * lanes) as usize;
        for chunk in order.chunks(span) {
            let mut wins: Vec<u64> = chunk.iter().map(|id| id / window).collect();
            wins.sort_unstable();
            wins.dedup();
            assert!(wins.len() <= 2 * lanes as usize, "{wins:?}");
            assert!(wins.len() >= lanes as usize, "{wins:?}");
        }
        // Shard order is shuffled: the first block does not always start in shard 0.
        let firsts: Vec<u64> = (0..8)
            .map(|e| quasi_random(3, e, &shards, window, 1)[0] / 512)
            .collect();
        assert!(firsts.iter().any(|&s| s != firsts[0]), "{firsts:?}");
    }
}
