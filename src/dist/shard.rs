//! Which positions of an epoch's order this rank reads: DistributedSampler's interleaving,
//! applied to one global batch at a time so that the cursor stays global.
//!
//! The epoch order is the same on every rank (a function of seed and epoch). From a global
//! position `p0`, one step consumes the global block `p0 .. p0 + G` with `G = per_rank × world`;
//! rank `r` reads positions `p0 + r, p0 + r + world, …` (`per_rank` of them). After the step the
//! cursor is `p0 + G` on every rank, so a checkpoint resumes at the same global position with
//! any world size, and two ranks × B/2 see exactly the samples one rank × B sees at each step.
//! An epoch's tail shorter than one global block is dropped (drop, not pad: the single-process
//! trainer already drops a partial last batch, and padding would repeat samples).

/// This rank's share of each global batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
    pub per_rank: usize,
}

/// One position to read: `next` is the global cursor once its batch is done, and
/// `ends_batch` marks the last position of this rank's part of the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub position: u64,
    pub next: u64,
    pub ends_batch: bool,
}

impl Shard {
    pub fn single(per_rank: usize) -> Shard {
        Shard {
            rank: 0,
            world: 1,
            per_rank,
        }
    }

    /// Samples per step over all ranks.
    pub fn global_batch(&self) -> u64 {
        (self.per_rank * self.world) as u64
    }

    /// The positions this rank reads in an epoch of `len` samples, from global position `from`.
    /// With one rank: every position (the batcher counts batches and drops a partial tail, as
    /// before). With several: whole global blocks only.
    pub fn slots(&self, from: u64, len: u64) -> Box<dyn Iterator<Item = Slot> + Send> {
        if self.world <= 1 {
            return Box::new((from..len).map(|p| Slot {
                position: p,
                next: p + 1,
                ends_batch: false,
            }));
        }
        let (g, w, r, b) = (
            self.global_batch(),
            self.world as u64,
            self.rank as u64,
            self.per_rank as u64,
        );
        let blocks = len.saturating_sub(from) / g;
        Box::new((0..blocks).flat_map(move |k| {
            let p0 = from + k * g;
            (0..b).map(move |j| Slot {
                position: p0 + r + j * w,
                next: p0 + g,
                ends_batch: j + 1 == b,
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_split_each_global_block_disjointly() {
        let len = 23;
        let shards: Vec<Vec<Slot>> = (0..2)
            .map(|rank| {
                Shard {
                    rank,
                    world: 2,
                    per_rank: 4,
                }
                .slots(3, len)
                .collect()
            })
            .collect();
        // Blocks of 8 from 3: [3, 11), [11, 19); the tail 19..23 is dropped.
        assert_eq!(
            shards[0].iter().map(|s| s.position).collect::<Vec<_>>(),
            vec![3, 5, 7, 9, 11, 13, 15, 17]
        );
        assert_eq!(
            shards[1].iter().map(|s| s.position).collect::<Vec<_>>(),
            vec![4, 6, 8, 10, 12, 14, 16, 18]
        );
        for s in &shards {
            assert_eq!(
                s.iter().map(|x| x.next).collect::<Vec<_>>(),
                [11; 4].iter().chain(&[19; 4]).copied().collect::<Vec<_>>()
            );
            assert_eq!(s.iter().filter(|x| x.ends_batch).count(), 2);
            assert!(s[3].ends_batch && s[7].ends_batch);
        }
    }

    #[test]
    fn one_rank_reads_everything_in_order() {
        let s: Vec<Slot> = Shard::single(4).slots(2, 6).collect();
        assert_eq!(
            s.iter().map(|x| (x.position, x.next)).collect::<Vec<_>>(),
            vec![(2, 3), (3, 4), (4, 5), (5, 6)]
        );
        assert!(s.iter().all(|x| !x.ends_batch));
    }

    #[test]
    fn the_global_batch_of_two_ranks_is_the_batch_of_one() {
        let one: Vec<u64> = Shard::single(8)
            .slots(0, 16)
            .map(|s| s.position)
            .take(8)
            .collect();
        let mut two: Vec<u64> = (0..2)
            .flat_map(|rank| {
                Shard {
                    rank,
                    world: 2,
                    per_rank: 4,
                }
                .slots(0, 16)
                .take(4)
            })
            .map(|s| s.position)
            .collect();
        two.sort();
        assert_eq!(one, two);
    }
}
