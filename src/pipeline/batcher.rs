//! The batcher: restores source order with a bounded reorder buffer and collates crops into
//! crop-major batches. A batch never spans two epochs (the partial tail of an epoch is dropped,
//! as with `drop_last`), so batches and cursors are the same whatever the worker count.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::channel::{Rx, Tx};
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
}

struct Filling {
    epoch: u64,
    count: usize,
    global: Vec<u8>,
    local: Vec<u8>,
    labels: Vec<Option<u32>>,
}

impl Batcher {
    pub fn new(batch_size: usize, augment: &AugmentConfig) -> Self {
        Batcher {
            batch_size,
            global_size: augment.global_size,
            local_size: augment.local_size,
            local_crops: augment.local_crops,
            global_bytes: augment.global_bytes(),
            local_bytes: augment.local_bytes(),
        }
    }

    fn empty(&self, epoch: u64) -> Filling {
        Filling {
            epoch,
            count: 0,
            global: vec![0; AugmentConfig::GLOBAL_CROPS * self.batch_size * self.global_bytes],
            local: vec![0; self.local_crops * self.batch_size * self.local_bytes],
            labels: Vec::with_capacity(self.batch_size),
        }
    }

    /// Copies one sample's crops into slot `b` of every view (crop-major layout).
    fn place(&self, f: &mut Filling, global: &[u8], local: &[u8]) {
        let b = f.count;
        for v in 0..AugmentConfig::GLOBAL_CROPS {
            let dst = (v * self.batch_size + b) * self.global_bytes;
            f.global[dst..dst + self.global_bytes]
                .copy_from_slice(&global[v * self.global_bytes..(v + 1) * self.global_bytes]);
        }
        for v in 0..self.local_crops {
            let dst = (v * self.batch_size + b) * self.local_bytes;
            f.local[dst..dst + self.local_bytes]
                .copy_from_slice(&local[v * self.local_bytes..(v + 1) * self.local_bytes]);
        }
        f.count += 1;
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
                let f = match filling.take() {
                    Some(f) if f.epoch == meta.epoch => f,
                    _ => self.empty(meta.epoch), // new epoch: an unfinished batch is dropped
                };
                let mut f = f;
                if let Some((global, local)) = &item.crops {
                    self.place(&mut f, global, local);
                    f.labels.push(meta.label);
                }
                if f.count == self.batch_size {
                    let batch = Batch {
                        size: self.batch_size,
                        global_size: self.global_size,
                        local_size: self.local_size,
                        local_crops: self.local_crops,
                        global: f.global,
                        local: f.local,
                        labels: f.labels,
                        epoch: meta.epoch,
                        next: Cursor {
                            epoch: meta.epoch,
                            position: meta.position + 1,
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
