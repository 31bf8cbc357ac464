//! The dataflow: source → augment pool (each worker decoding its own images) → batcher →
//! (trainer), or source → decode pool → augment pool → … when `decode.workers` asks for a
//! decode pool; every link a bounded channel. Stages are OS threads that own their scratch
//! buffers; shutdown is the consumer going away (closing its input) or the source running out
//! (dropping its sender).

pub mod batcher;
pub mod channel;
pub mod crops;
mod gate;
pub mod pool;
pub mod skips;
mod source_actor;
pub mod supervise;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

pub use batcher::Batcher;
pub use channel::{bounded, bounded_bytes, ByteBudget, Closed, Rx, Tx, Weigh};
pub use crops::{CropPool, Crops};
pub use gate::ReorderGate;
pub use pool::{spawn_pool, worker_count, Lap};
pub use skips::SkipLog;
pub use supervise::{panic_message, Supervisor};

use crate::augment::{AugmentConfig, CropPlan, MultiCrop};
use crate::batch::{Batch, Cursor};
use crate::config::{PipelineConfig, Problems};
use crate::decode::{
    decode_image, decode_reduced, DecodeConfig, DecodeError, Reduction, ScaledDecode,
};
use crate::dist::Shard;
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
    /// Bytes of crops the pipeline may hold: queued batches, and samples in flight between the
    /// source and the batcher. The reorder window shrinks to fit (validated up front).
    pub buffer_bytes: u64,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig {
            channel_capacity: 4,
            reorder_window: 4096,
            buffer_bytes: 2 << 30,
        }
    }
}

impl BatcherConfig {
    /// The reorder window in samples: `reorder_window`, or fewer when the crops of that many
    /// samples would not fit in `buffer_bytes` beside the queued batches.
    pub fn effective_window(&self, sample_bytes: u64, batch_size: usize) -> u64 {
        let queued = (self.channel_capacity as u64 + 2)
            .saturating_mul(batch_size as u64)
            .saturating_mul(sample_bytes);
        let room = self.buffer_bytes.saturating_sub(queued) / sample_bytes.max(1);
        self.reorder_window.min(room).max(1)
    }

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
    /// The cursor position once the batch holding this sample is done (`position + 1` alone;
    /// the end of the global block with several ranks, see `dist::Shard`).
    pub next: u64,
    /// The last sample of this rank's part of a global block: the batcher closes the batch
    /// here even if an unreadable sample left it short, so ranks stay in step.
    pub ends_batch: bool,
}

/// Source → decode. `payload` is `None` when the source could not read the sample (already
/// counted); the marker still flows so the batcher can move past it.
pub struct Sourced {
    pub meta: SampleMeta,
    /// A name for logs when the payload still has to be decoded.
    pub origin: String,
    pub payload: Option<Payload>,
    /// A video temporal pair's second picture (`source.temporal_pairs`): the second global
    /// crop comes from it.
    pub partner: Option<Frame>,
}

/// Decode → augment.
pub struct Decoded {
    pub meta: SampleMeta,
    pub frame: Option<Frame>,
    /// How `frame` relates to the full-size picture, and the crops drawn on that picture
    /// before decoding (crop-aware decoding; `None`: the frame is the picture, crops not drawn).
    pub reduced: Option<(Reduction, CropPlan)>,
    /// The temporal pair's second picture, as in [`Sourced`].
    pub partner: Option<Frame>,
}

/// Heap bytes of a frame: a memory-mapped frame (shard cache) holds none of its own.
fn frame_bytes(frame: &Frame) -> u64 {
    match &frame.pixels {
        crate::frame::Pixels::Owned(v) => v.len() as u64,
        crate::frame::Pixels::Mapped { .. } => 0,
    }
}

impl Weigh for Sourced {
    fn weight(&self) -> u64 {
        let partner = self.partner.as_ref().map_or(0, frame_bytes);
        partner
            + match &self.payload {
                None => 0,
                Some(Payload::Encoded(bytes)) => bytes.len() as u64,
                Some(Payload::Decoded(frame)) => frame_bytes(frame),
            }
    }
}

impl Weigh for Decoded {
    fn weight(&self) -> u64 {
        self.frame.as_ref().map_or(0, frame_bytes) + self.partner.as_ref().map_or(0, frame_bytes)
    }
}

/// Augment → batcher: the sample's crops (`None` when it was skipped).
pub struct Augmented {
    pub meta: SampleMeta,
    pub crops: Option<Crops>,
}

/// Bytes to a frame: the decode stage's work, run by the decode pool or inline by each augment
/// worker (`decode.workers = 0`). A frame that fails to decode is skipped and counted here.
#[derive(Clone)]
struct DecodeStep {
    decoder: SampleDecoder,
    skips: Arc<SkipLog>,
}

impl DecodeStep {
    fn run(&self, s: Sourced) -> Decoded {
        let (frame, reduced) = match s.payload {
            None => (None, None),
            Some(Payload::Decoded(f)) => (Some(f), None),
            Some(Payload::Encoded(bytes)) => {
                match self.decoder.decode(&bytes, s.meta.epoch, s.meta.id) {
                    Ok((f, reduced)) => (Some(f), reduced),
                    Err(e) => {
                        self.skips.skip("decode", &s.origin, &e.to_string());
                        (None, None)
                    }
                }
            }
        };
        Decoded {
            meta: s.meta,
            frame,
            reduced,
            partner: s.partner,
        }
    }
}

/// Encoded bytes to the frame the multi-crop will read: with `decode.scaled = "auto"`, the
/// sample's crops are drawn on the picture's full size (from its header) and the picture is
/// decoded at the reduction they allow; with `"off"`, the full picture as always.
#[derive(Clone)]
pub struct SampleDecoder {
    max_pixels: u64,
    scaled: ScaledDecode,
    augment: AugmentConfig,
    seed: u64,
}

impl SampleDecoder {
    /// The decoder for crops of `augment` under training seed `seed`.
    pub fn new(decode: &DecodeConfig, augment: &AugmentConfig, seed: u64) -> Self {
        SampleDecoder {
            max_pixels: decode.max_pixels,
            scaled: decode.scaled,
            augment: augment.clone(),
            seed,
        }
    }

    /// The frame of sample `id` in `epoch`, with its reduction and crop plan when crop-aware
    /// decoding drew one.
    pub fn decode(
        &self,
        bytes: &[u8],
        epoch: u64,
        id: u64,
    ) -> Result<(Frame, Option<(Reduction, CropPlan)>), DecodeError> {
        if self.scaled == ScaledDecode::Off {
            return Ok((decode_image(bytes, self.max_pixels)?, None));
        }
        let mut plan = None;
        let (frame, reduction) = decode_reduced(bytes, self.max_pixels, |w, h| {
            let p = CropPlan::draw(&self.augment, self.seed, w, h, epoch, id);
            let scale = p.min_scale();
            plan = Some(p);
            scale
        })?;
        Ok((frame, plan.map(|p| (reduction, p))))
    }
}

/// A frame to its multi-crop: one augment worker's engine with its scratch, and the shared pool
/// of crop buffers.
struct AugmentStep {
    multicrop: MultiCrop,
    pool: CropPool,
    skips: Arc<SkipLog>,
}

impl AugmentStep {
    fn new(cfg: &AugmentConfig, seed: u64, pool: CropPool, skips: Arc<SkipLog>) -> Self {
        AugmentStep {
            multicrop: MultiCrop::new(cfg, seed),
            pool,
            skips,
        }
    }

    fn run(&mut self, d: Decoded) -> Augmented {
        crate::failpoint::check("augment", d.meta.seq);
        let crops = d.frame.and_then(|frame| {
            let mut crops = self.pool.take();
            let (epoch, id) = (d.meta.epoch, d.meta.id);
            let result = match (&d.reduced, &d.partner) {
                (_, Some(partner)) => self.multicrop.apply_pair(
                    &frame,
                    partner,
                    epoch,
                    id,
                    &mut crops.global,
                    &mut crops.local,
                ),
                (Some((reduction, plan)), None) => self.multicrop.apply_reduced(
                    &frame,
                    reduction,
                    Some(plan),
                    epoch,
                    id,
                    &mut crops.global,
                    &mut crops.local,
                ),
                (None, None) => {
                    self.multicrop
                        .apply(&frame, epoch, id, &mut crops.global, &mut crops.local)
                }
            };
            match result {
                Ok(()) => Some(crops),
                Err(e) => {
                    self.pool.give(crops);
                    self.skips
                        .skip("augment", &format!("sample {id}"), &e.to_string());
                    None
                }
            }
        });
        Augmented {
            meta: d.meta,
            crops,
        }
    }
}

/// A running data pipeline: the batches, and the threads to join.
pub struct Pipeline {
    pub batches: Rx<Batch>,
    pub skips: Arc<SkipLog>,
    stop: Arc<AtomicBool>,
    supervisor: Supervisor,
    threads: Vec<JoinHandle<()>>,
    budgets: Vec<(&'static str, Arc<ByteBudget>)>,
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
        let shard = Shard::single(cfg.train.batch_size);
        Pipeline::start_sharded(cfg, source, start, epochs, shard, metrics, stop)
    }

    /// `start` for one rank of several: it reads `shard`'s part of every global batch.
    pub fn start_sharded(
        cfg: &PipelineConfig,
        source: OpenedSource,
        start: Cursor,
        epochs: u64,
        shard: Shard,
        metrics: &Arc<Metrics>,
        stop: Arc<AtomicBool>,
    ) -> Pipeline {
        let skips = SkipLog::new(metrics.clone());
        let supervisor = Supervisor::new(stop.clone());
        let seed = cfg.train.seed;
        let window = cfg.batcher.effective_window(
            crate::config::limits::sample_bytes(&cfg.augment),
            cfg.train.batch_size,
        );
        if window < cfg.batcher.reorder_window {
            tracing::info!(
                "reorder window {window} samples (batcher.reorder_window {} does not fit in batcher.buffer_bytes {})",
                cfg.batcher.reorder_window,
                cfg.batcher.buffer_bytes
            );
        }
        let gate = ReorderGate::new(window);
        // The links that carry images are bounded in bytes too (decode.channel_bytes); the crops
        // after them are bounded by the crop pool and batcher.buffer_bytes.
        let source_bytes = match &source {
            OpenedSource::Indexed(src) => src
                .read_ahead_bytes()
                .map_or(cfg.decode.channel_bytes, |b| {
                    b.min(cfg.decode.channel_bytes)
                }),
            OpenedSource::Stream(_) => cfg.decode.channel_bytes,
        };
        let (src_tx, src_rx) =
            bounded_bytes::<Sourced>("source", cfg.decode.channel_capacity, source_bytes, metrics);
        let (aug_tx, aug_rx) =
            bounded::<Augmented>("augment", cfg.augment.channel_capacity, metrics);
        let (batch_tx, batch_rx) = bounded::<Batch>("batch", cfg.batcher.channel_capacity, metrics);
        let mut threads = Vec::new();
        let mut budgets = vec![("source", src_tx.budget().expect("byte budget").clone())];

        threads.push(source_actor::spawn(
            source,
            seed,
            cfg.decode.max_pixels,
            start,
            epochs,
            shard,
            src_tx,
            gate.clone(),
            skips.clone(),
            metrics.clone(),
            stop.clone(),
            supervisor.clone(),
        ));

        let decode = DecodeStep {
            decoder: SampleDecoder::new(&cfg.decode, &cfg.augment, seed),
            skips: skips.clone(),
        };
        let augment_workers = worker_count(cfg.augment.workers);
        // Crop buffers circulate: a whole batch's worth comes back at once when the batcher
        // collates, and each worker holds one while it works.
        let pool = CropPool::new(
            cfg.train.batch_size + 2 * augment_workers + 2,
            AugmentConfig::GLOBAL_CROPS * cfg.augment.global_bytes(),
            cfg.augment.local_crops * cfg.augment.local_bytes(),
        );
        let (augment_cfg, augment_skips) = (cfg.augment.clone(), skips.clone());
        let augment_pool = pool.clone();
        let new_augment = move || {
            AugmentStep::new(
                &augment_cfg,
                seed,
                augment_pool.clone(),
                augment_skips.clone(),
            )
        };
        if cfg.decode.inline() {
            // Each augment worker takes its image from bytes to crops on one core: no thread
            // hop, and the frame is still in that core's cache when the crops read it.
            threads.extend(spawn_pool(
                "augment",
                augment_workers,
                src_rx,
                aug_tx,
                metrics,
                &supervisor,
                move |_| {
                    let decode = decode.clone();
                    let mut augment = new_augment();
                    move |s: Sourced, lap: &mut Lap| {
                        let decoded = decode.run(s);
                        lap.book("decode");
                        augment.run(decoded)
                    }
                },
            ));
        } else {
            let (dec_tx, dec_rx) = bounded_bytes::<Decoded>(
                "decode",
                cfg.augment.channel_capacity,
                cfg.decode.channel_bytes,
                metrics,
            );
            budgets.push(("decode", dec_tx.budget().expect("byte budget").clone()));
            threads.extend(spawn_pool(
                "decode",
                cfg.decode.workers,
                src_rx,
                dec_tx,
                metrics,
                &supervisor,
                move |_| {
                    let decode = decode.clone();
                    move |s: Sourced, _: &mut Lap| decode.run(s)
                },
            ));
            threads.extend(spawn_pool(
                "augment",
                augment_workers,
                dec_rx,
                aug_tx,
                metrics,
                &supervisor,
                move |_| {
                    let mut augment = new_augment();
                    move |d: Decoded, _: &mut Lap| augment.run(d)
                },
            ));
        }

        let batcher = Batcher::new(cfg.train.batch_size, &cfg.augment, pool);
        let batcher_metrics = metrics.clone();
        let batcher_supervisor = supervisor.clone();
        threads.push(
            std::thread::Builder::new()
                .name("batcher".into())
                .spawn(move || {
                    batcher_supervisor.guard("batcher", move || {
                        batcher.run(aug_rx, batch_tx, gate, batcher_metrics)
                    })
                })
                .expect("spawn batcher"),
        );
        Pipeline {
            batches: batch_rx,
            skips,
            stop,
            supervisor,
            threads,
            budgets,
        }
    }

    /// The byte budgets of the channels that carry images, by channel name.
    pub fn byte_budgets(&self) -> &[(&'static str, Arc<ByteBudget>)] {
        &self.budgets
    }

    /// The first actor panic ("actor NAME panicked: MESSAGE"), if any.
    pub fn failure(&self) -> Option<String> {
        self.supervisor.failure()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceConfig;

    /// A running pipeline of 1024×1024 frames (3 MiB each) with 64-sample channels and
    /// `decode.channel_bytes` = 8 MiB, consumed one batch and then left waiting: once the
    /// crops fill the augment → batcher channel, both the source → decode and the decode →
    /// augment channels fill to their byte budget, never past it, far below their capacity in
    /// samples.
    #[test]
    fn queues_of_large_frames_stay_under_decode_channel_bytes() {
        let mut cfg = PipelineConfig {
            source: SourceConfig::Synthetic {
                count: 256,
                width: 1024,
                height: 1024,
                classes: 2,
            },
            ..PipelineConfig::default()
        };
        cfg.decode.workers = 1;
        cfg.decode.channel_capacity = 64;
        cfg.decode.channel_bytes = 8 << 20;
        cfg.augment.workers = 1;
        cfg.augment.channel_capacity = 64;
        cfg.augment.global_size = 32;
        cfg.augment.local_size = 16;
        cfg.augment.local_crops = 2;
        cfg.train.batch_size = 2;
        cfg.batcher.channel_capacity = 1;
        let frame = 1024 * 1024 * 3;
        let metrics = Metrics::new();
        let source = cfg.source.open().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let p = Pipeline::start(&cfg, source, Cursor::default(), 1, &metrics, stop);
        assert!(p.batches.recv().is_some());
        let budgets: Vec<_> = p.byte_budgets().to_vec();
        assert_eq!(
            budgets.iter().map(|b| b.0).collect::<Vec<_>>(),
            ["source", "decode"]
        );
        // With the trainer gone quiet, the stages run ahead until the bytes stop them.
        let t = std::time::Instant::now();
        while budgets.iter().any(|(_, b)| b.held() < 2 * frame) {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(120),
                "the queues never filled"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for (name, b) in &budgets {
            assert_eq!(b.limit(), 8 << 20);
            assert!(
                b.peak() <= b.limit(),
                "{name}: {} bytes held at most, budget {}",
                b.peak(),
                b.limit()
            );
            // Two frames fit in 8 MiB, a third would not: 2 of 64 slots in use.
            assert_eq!(b.held(), 2 * frame, "{name}");
        }
        p.shutdown();
    }
}
