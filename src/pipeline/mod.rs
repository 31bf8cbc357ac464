//! The dataflow: source → decode pool → augment pool → batcher → (trainer), every link a bounded
//! channel. Stages are OS threads that own their scratch buffers; shutdown is the consumer going
//! away (closing its input) or the source running out (dropping its sender).

pub mod batcher;
pub mod channel;
pub mod crops;
mod gate;
pub mod pool;
pub mod skips;
mod source_actor;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

pub use batcher::Batcher;
pub use channel::{bounded, Closed, Rx, Tx};
pub use crops::{CropPool, Crops};
pub use gate::ReorderGate;
pub use pool::{spawn_pool, worker_count};
pub use skips::SkipLog;

use crate::augment::{AugmentConfig, MultiCrop};
use crate::batch::{Batch, Cursor};
use crate::config::{PipelineConfig, Problems};
use crate::decode::decode_image;
use crate::frame::Frame;
use crate::metrics::Metrics;
use crate::source::{OpenedSource, Payload};

/// `[batcher]`: collation and the reorder window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatcherConfig {
    /// Batches queued for the trainer.
    pub channel_capacity: usize,
    /// How far (in samples) the source may run ahead of the batcher.
    pub reorder_window: u64,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig {
            channel_capacity: 4,
            reorder_window: 4096,
        }
    }
}

impl BatcherConfig {
    pub fn validate(&self, problems: &mut Problems) {
        problems.check(
            self.channel_capacity > 0,
            "batcher.channel_capacity",
            || "must be > 0".into(),
        );
        problems.check(self.reorder_window > 0, "batcher.reorder_window", || {
            "must be > 0".into()
        });
    }
}

/// Identity of a sample in the stream.
#[derive(Debug, Clone, Copy)]
pub struct SampleMeta {
    /// Position in this run's stream (no gaps): the reorder key.
    pub seq: u64,
    pub epoch: u64,
    /// Position within the epoch's order: the resume cursor.
    pub position: u64,
    /// The sample's id in its source: the augmentation RNG key.
    pub id: u64,
    pub label: Option<u32>,
}

/// Source → decode. `payload` is `None` when the source could not read the sample (already
/// counted); the marker still flows so the batcher can move past it.
pub struct Sourced {
    pub meta: SampleMeta,
    /// A name for logs when the payload still has to be decoded.
    pub origin: String,
    pub payload: Option<Payload>,
}

/// Decode → augment.
pub struct Decoded {
    pub meta: SampleMeta,
    pub frame: Option<Frame>,
}

/// Augment → batcher: the sample's crops (`None` when it was skipped).
pub struct Augmented {
    pub meta: SampleMeta,
    pub crops: Option<Crops>,
}

/// A running data pipeline: the batches, and the threads to join.
pub struct Pipeline {
    pub batches: Rx<Batch>,
    pub skips: Arc<SkipLog>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Starts every stage, reading from `start` for `epochs` epochs in all (counting from 0).
    pub fn start(
        cfg: &PipelineConfig,
        source: OpenedSource,
        start: Cursor,
        epochs: u64,
        metrics: &Arc<Metrics>,
        stop: Arc<AtomicBool>,
    ) -> Pipeline {
        let skips = SkipLog::new(metrics.clone());
        let seed = cfg.train.seed;
        let gate = ReorderGate::new(cfg.batcher.reorder_window);
        let (src_tx, src_rx) = bounded::<Sourced>("source", cfg.decode.channel_capacity, metrics);
        let (dec_tx, dec_rx) = bounded::<Decoded>("decode", cfg.augment.channel_capacity, metrics);
        let (aug_tx, aug_rx) =
            bounded::<Augmented>("augment", cfg.augment.channel_capacity, metrics);
        let (batch_tx, batch_rx) = bounded::<Batch>("batch", cfg.batcher.channel_capacity, metrics);
        let mut threads = Vec::new();

        threads.push(source_actor::spawn(
            source,
            seed,
            start,
            epochs,
            src_tx,
            gate.clone(),
            skips.clone(),
            metrics.clone(),
            stop.clone(),
        ));

        let max_pixels = cfg.decode.max_pixels;
        let decode_skips = skips.clone();
        threads.extend(spawn_pool(
            "decode",
            worker_count(cfg.decode.workers),
            src_rx,
            dec_tx,
            metrics,
            move |_| {
                let skips = decode_skips.clone();
                move |s: Sourced| {
                    let frame = match s.payload {
                        None => None,
                        Some(Payload::Decoded(f)) => Some(f),
                        Some(Payload::Encoded(bytes)) => match decode_image(&bytes, max_pixels) {
                            Ok(f) => Some(f),
                            Err(e) => {
                                skips.skip("decode", &s.origin, &e.to_string());
                                None
                            }
                        },
                    };
                    Decoded {
                        meta: s.meta,
                        frame,
                    }
                }
            },
        ));

        let augment_cfg = cfg.augment.clone();
        let augment_skips = skips.clone();
        let augment_workers = worker_count(cfg.augment.workers);
        // Crop buffers circulate: a whole batch's worth comes back at once when the batcher
        // collates, and each worker holds one while it works.
        let pool = CropPool::new(
            cfg.train.batch_size + 2 * augment_workers + 2,
            AugmentConfig::GLOBAL_CROPS * augment_cfg.global_bytes(),
            augment_cfg.local_crops * augment_cfg.local_bytes(),
        );
        let augment_pool = pool.clone();
        threads.extend(spawn_pool(
            "augment",
            augment_workers,
            dec_rx,
            aug_tx,
            metrics,
            move |_| {
                let mut multicrop = MultiCrop::new(&augment_cfg, seed);
                let skips = augment_skips.clone();
                let pool = augment_pool.clone();
                move |d: Decoded| {
                    let crops = d.frame.and_then(|frame| {
                        let mut crops = pool.take();
                        let (epoch, id) = (d.meta.epoch, d.meta.id);
                        match multicrop.apply(
                            &frame,
                            epoch,
                            id,
                            &mut crops.global,
                            &mut crops.local,
                        ) {
                            Ok(()) => Some(crops),
                            Err(e) => {
                                pool.give(crops);
                                skips.skip("augment", &format!("sample {id}"), &e.to_string());
                                None
                            }
                        }
                    });
                    Augmented {
                        meta: d.meta,
                        crops,
                    }
                }
            },
        ));

        let batcher = Batcher::new(cfg.train.batch_size, &cfg.augment, pool);
        let batcher_metrics = metrics.clone();
        threads.push(
            std::thread::Builder::new()
                .name("batcher".into())
                .spawn(move || batcher.run(aug_rx, batch_tx, gate, batcher_metrics))
                .expect("spawn batcher"),
        );
        Pipeline {
            batches: batch_rx,
            skips,
            stop,
            threads,
        }
    }

    /// Closes the pipeline from the consumer's end and waits for every stage to exit. Raises the
    /// stop flag too: the source may be waiting at the reorder gate for a batcher that is gone.
    pub fn shutdown(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.batches.close();
        drop(self.batches);
        for t in self.threads {
            let _ = t.join();
        }
    }
}
