//! The source stage: one thread that walks the epoch order from the resume cursor and feeds the
//! decode pool, waiting at the reorder gate so the batcher's buffer stays bounded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::channel::Tx;
use super::gate::ReorderGate;
use super::skips::SkipLog;
use super::supervise::Supervisor;
use super::{SampleMeta, Sourced};
use crate::batch::Cursor;
use crate::dist::{Shard, Slot};
use crate::metrics::Metrics;
use crate::source::{OpenedSource, Pass, PassEnd, Payload};

#[allow(clippy::too_many_arguments)]
pub fn spawn(
    source: OpenedSource,
    seed: u64,
    max_pixels: u64,
    start: Cursor,
    epochs: u64,
    shard: Shard,
    out: Tx<Sourced>,
    gate: Arc<ReorderGate>,
    skips: Arc<SkipLog>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    supervisor: Supervisor,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("source".into())
        .spawn(move || supervisor.clone().guard("source", move || {
            let items = metrics.stage_items.with_label_values(&["source"]);
            let mut seq = 0u64;
            let mut send = |meta_epoch: u64, slot: Slot, id: u64, label, origin: String, payload: Option<Payload>, partner| -> bool {
                if stop.load(Ordering::Relaxed) || !gate.admit(seq, &stop) {
                    return false;
                }
                crate::failpoint::check("source", seq);
                let Slot { position, next, ends_batch } = slot;
                let meta = SampleMeta { seq, epoch: meta_epoch, position, id, label, next, ends_batch };
                seq += 1;
                items.inc();
                out.send(Sourced { meta, origin, payload, partner }).is_ok()
            };
            match source {
                OpenedSource::Indexed(src) => {
                    for epoch in start.epoch..epochs {
                        let order = src.epoch_order(seed, epoch);
                        let from = if epoch == start.epoch { start.position } else { 0 };
                        for slot in shard.slots(from, src.len()) {
                            let id = order[slot.position as usize];
                            let (origin, payload) = match src.read(id) {
                                Ok(p @ Payload::Encoded(_)) => (src.describe(id), Some(p)),
                                Ok(p) => (String::new(), Some(p)),
                                Err(e) => {
                                    skips.skip("source", &src.describe(id), &e.to_string());
                                    (String::new(), None)
                                }
                            };
                            if !send(epoch, slot, id, src.label(id), origin, payload, None) {
                                return;
                            }
                        }
                    }
                }
                OpenedSource::Stream(mut src) => {
                    src.register_metrics(&metrics.registry);
                    for epoch in start.epoch..epochs {
                        let from = if epoch == start.epoch { start.position } else { 0 };
                        let mut emitted = 0u64;
                        let mut emit = |position: u64, frame, partner| {
                            emitted += 1;
                            let slot = Slot { position, next: position + 1, ends_batch: false };
                            send(epoch, slot, position, None, String::new(), Some(Payload::Decoded(frame)), partner)
                        };
                        let mut skip = |what: &str, why: &str| skips.skip("source", what, why);
                        let pass = Pass { seed, epoch, start: from, max_pixels };
                        if src.run_pass_pairs(&pass, &mut emit, &mut skip) == PassEnd::Stopped {
                            return;
                        }
                        if emitted == 0 && from == 0 {
                            tracing::error!("the video source produced no frames in a whole pass; stopping the stream");
                            return;
                        }
                    }
                }
            }
        }))
        .expect("spawn source thread")
}
