//! One sample's crop buffers, and the pool that carries them from the batcher back to the
//! augment workers.
//!
//! A sample's crops take ~0.5 MB (2 × 224² + 8 × 96² RGB8). Allocating them zeroed for every
//! sample, only to overwrite every byte and free them after the batcher's copy, cost a memset
//! (and often fresh pages) per sample. The pool is a bounded channel used without blocking: an
//! augment worker takes a spare pair or, when there is none, allocates one; the batcher gives
//! pairs back once it has collated them and drops them when the pool is full, so idle memory
//! stays within the pool's capacity and no stage ever waits on it.

/// The crops of one sample, each group packed back to back as RGB8 HWC: the 2 global views in
/// `global`, the local views in `local`.
pub struct Crops {
    pub global: Vec<u8>,
    pub local: Vec<u8>,
}

/// Spare [`Crops`] of one configured size; cloneable for every worker.
#[derive(Clone)]
pub struct CropPool {
    tx: kanal::Sender<Crops>,
    rx: kanal::Receiver<Crops>,
    global_len: usize,
    local_len: usize,
}

impl CropPool {
    /// A pool holding at most `capacity` spare pairs of `global_len` + `local_len` bytes.
    pub fn new(capacity: usize, global_len: usize, local_len: usize) -> Self {
        let (tx, rx) = kanal::bounded(capacity.max(1));
        CropPool {
            tx,
            rx,
            global_len,
            local_len,
        }
    }

    /// A pair of the configured sizes: a returned one (old contents), or fresh memory.
    pub fn take(&self) -> Crops {
        match self.rx.try_recv() {
            Ok(Some(c)) => c,
            _ => Crops {
                global: vec![0; self.global_len],
                local: vec![0; self.local_len],
            },
        }
    }

    /// Returns a pair for reuse; dropped when the pool is full or the sizes do not match.
    pub fn give(&self, crops: Crops) {
        if crops.global.len() == self.global_len && crops.local.len() == self.local_len {
            let _ = self.tx.try_send(crops);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_reuses_returned_buffers_and_stays_bounded() {
        let pool = CropPool::new(2, 6, 3);
        let mut a = pool.take();
        assert_eq!((a.global.len(), a.local.len()), (6, 3));
        a.global[0] = 7;
        pool.give(a);
        assert_eq!(
            pool.take().global[0],
            7,
            "a returned pair is handed out again"
        );
        for _ in 0..5 {
            pool.give(Crops {
                global: vec![1; 6],
                local: vec![1; 3],
            });
        }
        pool.give(Crops {
            global: vec![9; 5],
            local: vec![9; 3],
        });
        let spares: Vec<Crops> = (0..3).map(|_| pool.take()).collect();
        assert_eq!(spares[0].global[0], 1);
        assert_eq!(spares[1].global[0], 1);
        assert_eq!(
            spares[2].global[0], 0,
            "only 2 spares kept; the wrong size was refused"
        );
    }
}
