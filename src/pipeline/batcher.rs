//! The batcher: restores source order with a bounded reorder buffer and collates crops into
//! crop-major batches. A batch never spans two epochs (the partial tail of an epoch is dropped,
//! as with `drop_last`), so batches and cursors are the same whatever the worker count.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::channel::{Rx, Tx};
use super::crops::{CropPool, Crops};
use super::gate::ReorderGate;
use super::Augmented;
use crate::augment::AugmentConfig;
use crate::batch::{Batch, Cursor};
use crate::metrics::Metrics;

pub struct Batcher {
    batch_size: usize,
    global_size: u32,
    local_size: u32,
    local_crops: usize,
    global_bytes: usize,
    local_bytes: usize,
    pool: CropPool,
}

/// The batch being gathered: its samples' crops in order, collated when it is complete.
struct Filling {
    epoch: u64,
    samples: Vec<Crops>,
    labels: Vec<Option<u32>>,
}

impl Batcher {
    /// `pool` takes the crop buffers back once they are collated.
    pub fn new(batch_size: usize, augment: &AugmentConfig, pool: CropPool) -> Self {
        Batcher {
            batch_size,
            global_size: augment.global_size,
            local_size: augment.local_size,
            local_crops: augment.local_crops,
            global_bytes: augment.global_bytes(),
            local_bytes: augment.local_bytes(),
            pool,
        }
    }

    fn empty(&self, epoch: u64) -> Filling {
        Filling {
            epoch,
            samples: Vec::with_capacity(self.batch_size),
            labels: Vec::with_capacity(self.batch_size),
        }
    }

    /// Copies the samples' crops into crop-major buffers (view by view, sample by sample),
    /// appending in order so the batch memory is written once and never zero-filled, then
    /// returns the crop buffers to the pool.
    fn collate(&self, samples: Vec<Crops>) -> (Vec<u8>, Vec<u8>) {
        let n = samples.len();
        let mut global = Vec::with_capacity(AugmentConfig::GLOBAL_CROPS * n * self.global_bytes);
        for v in 0..AugmentConfig::GLOBAL_CROPS {
            let range = v * self.global_bytes..(v + 1) * self.global_bytes;
            for s in &samples {
                global.extend_from_slice(&s.global[range.clone()]);
            }
        }
        let mut local = Vec::with_capacity(self.local_crops * n * self.local_bytes);
        for v in 0..self.local_crops {
            let range = v * self.local_bytes..(v + 1) * self.local_bytes;
            for s in &samples {
                local.extend_from_slice(&s.local[range.clone()]);
            }
        }
        for s in samples {
            self.pool.give(s);
        }
        (global, local)
    }

    /// Runs until the input ends or the trainer goes away.
    pub fn run(
        self,
        input: Rx<Augmented>,
        output: Tx<Batch>,
        gate: Arc<ReorderGate>,
        metrics: Arc<Metrics>,
    ) {
        let items = metrics.stage_items.with_label_values(&["batcher"]);
        let mut pending: BTreeMap<u64, Augmented> = BTreeMap::new();
        let mut next_seq = 0u64;
        let mut filling: Option<Filling> = None;
        while let Some(item) = input.recv() {
            pending.insert(item.meta.seq, item);
            while let Some(item) = pending.remove(&next_seq) {
                next_seq += 1;
                let meta = item.meta;
                let mut f = match filling.take() {
                    Some(f) if f.epoch == meta.epoch => f,
                    // New epoch: an unfinished batch is dropped (its buffers recycled).
                    Some(old) => {
                        old.samples.into_iter().for_each(|s| self.pool.give(s));
                        self.empty(meta.epoch)
                    }
                    None => self.empty(meta.epoch),
                };
                if let Some(crops) = item.crops {
                    f.samples.push(crops);
                    f.labels.push(meta.label);
                }
                let closes = f.samples.len() == self.batch_size
                    || (meta.ends_batch && !f.samples.is_empty());
                if closes {
                    let size = f.samples.len();
                    let (global, local) = self.collate(f.samples);
                    let batch = Batch {
                        size,
                        global_size: self.global_size,
                        local_size: self.local_size,
                        local_crops: self.local_crops,
                        global,
                        local,
                        labels: f.labels,
                        epoch: meta.epoch,
                        next: Cursor {
                            epoch: meta.epoch,
                            position: meta.next,
                        },
                    };
                    if output.send(batch).is_err() {
                        input.close();
                        return;
                    }
                    items.inc();
                } else {
                    filling = Some(f);
                }
            }
            gate.advance(next_seq);
        }
    }
}
