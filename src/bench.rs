//! `dino-stream bench`: throughput of the data pipeline and of the training step, measured in
//! one process so ratios compare like with like.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::augment::{AugmentConfig, MultiCrop};
use crate::batch::{Batch, Cursor};
use crate::config::PipelineConfig;
use crate::decode::decode_image;
use crate::frame::Frame;
use crate::metrics::Metrics;
use crate::pipeline::{worker_count, Pipeline};
use crate::source::{IndexedSource, OpenedSource, Payload};
use crate::train::engine::{select_device, Engine};

/// Runs the pipeline without a trainer for `seconds`, then decode alone on the same files.
pub fn pipeline(cfg: &PipelineConfig, seconds: f64) -> anyhow::Result<()> {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
        bail!("--seconds must be a number of seconds in (0, 86400], got {seconds}");
    }
    let metrics = Metrics::new();
    let stop = Arc::new(AtomicBool::new(false));
    let source = cfg.source.open().context("opening [source]")?;
    if let Some(n) = source.epoch_len() {
        // The batcher drops each epoch's partial tail: with fewer samples than one batch no
        // batch would ever come.
        if n < cfg.train.batch_size as u64 {
            bail!(
                "the source has {n} samples, fewer than one batch of train.batch_size = {}",
                cfg.train.batch_size
            );
        }
    }
    let epochs = if matches!(source, OpenedSource::Indexed(_)) {
        u64::MAX / 2
    } else {
        u64::MAX
    };
    let pipeline = Pipeline::start(
        cfg,
        source,
        Cursor::default(),
        epochs,
        &metrics,
        stop.clone(),
    );
    let warmup = Duration::from_secs_f64((seconds * 0.1).min(2.0));
    let t0 = Instant::now();
    let deadline = t0 + warmup + Duration::from_secs_f64(seconds);
    let mut images = 0u64;
    let mut batches = 0u64;
    let mut measured_from = None;
    // A deadline on every wait: a source whose samples are all unreadable yields no batch.
    while let Ok(Some(batch)) = pipeline.batches.recv_until(deadline) {
        batches += 1;
        if t0.elapsed() >= warmup {
            measured_from.get_or_insert_with(Instant::now);
            images += batch.size as u64;
        }
    }
    if batches == 0 {
        stop.store(true, Ordering::SeqCst);
        let (skipped, failure) = (pipeline.skips.distinct(), pipeline.failure());
        pipeline.shutdown();
        if let Some(f) = failure {
            bail!("{f}");
        }
        bail!(
            "no batch in {:.1}s ({skipped} unreadable samples skipped)",
            t0.elapsed().as_secs_f64()
        );
    }
    let elapsed = measured_from.map_or(1e-9, |t| t.elapsed().as_secs_f64());
    stop.store(true, Ordering::SeqCst);
    let stage = |name: &str| {
        (
            metrics.stage_items.with_label_values(&[name]).get(),
            metrics.stage_busy_seconds.with_label_values(&[name]).get(),
        )
    };
    let stats: Vec<(&str, u64, f64)> = ["decode", "augment"]
        .iter()
        .map(|s| {
            let (i, b) = stage(s);
            (*s, i, b)
        })
        .collect();
    pipeline.shutdown();
    let crops_per_image = AugmentConfig::GLOBAL_CROPS + cfg.augment.local_crops;
    let ips = images as f64 / elapsed;
    let augment_workers = worker_count(cfg.augment.workers);
    let layout = if cfg.decode.inline() {
        format!("{augment_workers} augment workers, each decoding its own images")
    } else {
        format!(
            "{} decode, {augment_workers} augment workers",
            cfg.decode.workers
        )
    };
    println!(
        "pipeline: {ips:.1} images/s, {:.1} crops/s over {elapsed:.1}s ({layout})",
        ips * crops_per_image as f64
    );
    for (name, items, busy) in &stats {
        if *busy > 0.0 {
            println!(
                "  {name:8} {:.1} images/s per busy core ({items} items, {busy:.1} busy seconds)",
                *items as f64 / busy
            );
        }
    }

    let source = cfg.source.open()?;
    let OpenedSource::Indexed(src) = source else {
        println!("decode-only: not measured for stream sources (decode happens in the source)");
        return Ok(());
    };
    // As many decoding threads as the pipeline has: its decode pool, or its augment workers.
    let workers = if cfg.decode.inline() {
        augment_workers
    } else {
        cfg.decode.workers
    };
    let max_pixels = cfg.decode.max_pixels;
    let decode_ips = timed_loop(workers, seconds, src.len(), || {
        let src = src.clone();
        move |id| decode_frame(src.as_ref(), id, max_pixels).is_some()
    });
    println!("decode-only: {decode_ips:.1} images/s with {workers} workers");
    println!(
        "ratio pipeline/decode-only: {:.3}",
        ips / decode_ips.max(1e-9)
    );
    // The per-core cost without scheduling in the way: one thread decodes and multi-crops
    // each image in turn, like one PIL dataloader worker (bench_pil_recipe.py).
    let seed = cfg.train.seed;
    let serial_ips = timed_loop(1, seconds, src.len(), || {
        let src = src.clone();
        let mut multicrop = MultiCrop::new(&cfg.augment, seed);
        let mut global = vec![0u8; AugmentConfig::GLOBAL_CROPS * cfg.augment.global_bytes()];
        let mut local = vec![0u8; cfg.augment.local_crops * cfg.augment.local_bytes()];
        move |id| {
            decode_frame(src.as_ref(), id, max_pixels).is_some_and(|frame| {
                multicrop
                    .apply(&frame, 0, id, &mut global, &mut local)
                    .is_ok()
            })
        }
    });
    println!("decode+augment on one core, serially: {serial_ips:.1} images/s");
    Ok(())
}

/// The frame of sample `id`, decoded if the source holds encoded bytes; `None` on any error.
fn decode_frame(src: &dyn IndexedSource, id: u64, max_pixels: u64) -> Option<Frame> {
    match src.read(id).ok()? {
        Payload::Encoded(bytes) => decode_image(&bytes, max_pixels).ok(),
        Payload::Decoded(frame) => Some(frame),
    }
}

/// Successful items per second of `workers` threads running for `seconds`, each with its own
/// closure from `make`, called on successive sample ids (wrapping at `len`).
fn timed_loop<W: FnMut(u64) -> bool + Send>(
    workers: usize,
    seconds: f64,
    len: u64,
    make: impl Fn() -> W + Sync,
) -> f64 {
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers {
            let mut work = make();
            let (next, done) = (&next, &done);
            s.spawn(move || {
                while Instant::now() < deadline {
                    let id = next.fetch_add(1, Ordering::Relaxed) % len.max(1);
                    if work(id) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    done.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64()
}

/// Times training steps on synthetic batches.
pub fn train(cfg: &PipelineConfig, steps: u64, warmup: u64) -> anyhow::Result<()> {
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    crate::run::configure_torch(cfg);
    let device = select_device(cfg.train.device);
    let plan = crate::train::Plan {
        steps_per_epoch: 1000,
        epochs: cfg.train.epochs,
    };
    let mut engine = Engine::new(&cfg.model, &cfg.train, &cfg.augment, plan, device)?;
    let batches: Vec<Batch> = (0..4)
        .map(|i| Batch::random(&cfg.augment, cfg.train.batch_size, i))
        .collect();
    for i in 0..warmup {
        engine.step(&batches[i as usize % batches.len()])?;
    }
    let mut times = Vec::new();
    for i in 0..steps {
        let t = Instant::now();
        engine.step(&batches[i as usize % batches.len()])?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    println!(
        "train step on {device:?}: median {:.1} ms, mean {:.1} ms, {:.1} images/s (batch {}, 2x{} + {}x{} crops, {} threads)",
        median * 1e3,
        mean * 1e3,
        cfg.train.batch_size as f64 / median,
        cfg.train.batch_size,
        cfg.augment.global_size,
        cfg.augment.local_crops,
        cfg.augment.local_size,
        tch::get_num_threads()
    );
    Ok(())
}
