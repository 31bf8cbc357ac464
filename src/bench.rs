//! `dino-stream bench`: throughput of the data pipeline and of the training step, measured in
//! one process so ratios compare like with like.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::augment::{AugmentConfig, CropPlan, MultiCrop};
use crate::batch::{Batch, Cursor};
use crate::config::PipelineConfig;
use crate::decode::Reduction;
use crate::frame::Frame;
use crate::metrics::Metrics;
use crate::pipeline::{worker_count, Pipeline, SampleDecoder};
use crate::source::{IndexedSource, OpenedSource, Payload};
use crate::train::engine::{select_device, Engine};

/// How long `bench pipeline` waits for its first batch at least (longer for long runs).
const FIRST_BATCH_WAIT_SECONDS: f64 = 120.0;

/// Runs the pipeline without a trainer for `seconds` from its first batch, then decode alone on
/// the same files.
pub fn pipeline(cfg: &PipelineConfig, seconds: f64) -> anyhow::Result<()> {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
        bail!("--seconds must be a number of seconds in (0, 86400], got {seconds}");
    }
    let metrics = Metrics::new();
    let stop = Arc::new(AtomicBool::new(false));
    let source = cfg.source.open().context("opening [source]")?;
    let epoch_len = source.epoch_len();
    if let Some(n) = epoch_len {
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
    let io_before = ProcIo::now();
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
    // The first batch waits for a whole batch of samples to be decoded and cropped, which on
    // large photos and a loaded machine takes longer than a short measurement: the clock starts
    // when it arrives. Its own deadline only catches a pipeline that yields nothing (every
    // sample unreadable).
    let first_deadline = t0 + Duration::from_secs_f64(FIRST_BATCH_WAIT_SECONDS.max(seconds * 10.0));
    let first = loop {
        let poll = (Instant::now() + Duration::from_secs(1)).min(first_deadline);
        match pipeline.batches.recv_until(poll) {
            Ok(Some(batch)) => break Some(batch),
            Err(_) => break None,
            Ok(None) => {
                let all_unreadable =
                    epoch_len.is_some_and(|n| pipeline.skips.distinct() as u64 >= n.max(1));
                if all_unreadable
                    || Instant::now() >= first_deadline
                    || pipeline.failure().is_some()
                {
                    break None;
                }
            }
        }
    };
    if first.is_none() {
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
    let t1 = Instant::now();
    let deadline = t1 + warmup + Duration::from_secs_f64(seconds);
    let mut images = 0u64;
    let mut measured_from = None;
    // A deadline on every wait: a pipeline that stops yielding ends the measurement.
    while let Ok(Some(batch)) = pipeline.batches.recv_until(deadline) {
        if t1.elapsed() >= warmup {
            // The batch that opens the window was made before it: count the ones after.
            match measured_from {
                None => measured_from = Some(Instant::now()),
                Some(_) => images += batch.size as u64,
            }
        }
    }
    let elapsed = measured_from.map_or(1e-9, |t| t.elapsed().as_secs_f64());
    let io_after = ProcIo::now();
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
    if images == 0 {
        println!(
            "  (under two batches of {} arrived in the {seconds}s window: raise --seconds for a pipeline figure)",
            cfg.train.batch_size
        );
    }
    for (name, items, busy) in &stats {
        if *busy > 0.0 {
            println!(
                "  {name:8} {:.1} images/s per busy core ({items} items, {busy:.1} busy seconds)",
                *items as f64 / busy
            );
        }
    }
    if let (Some(a), Some(b)) = (io_before, io_after) {
        let (read, disk) = (b.rchar - a.rchar, b.read_bytes - a.read_bytes);
        println!(
            "  reads: {:.1} MiB read, {:.1} MiB of it from disk ({:.1}%; /proc/self/io rchar, read_bytes)",
            read as f64 / 1048576.0,
            disk as f64 / 1048576.0,
            100.0 * disk as f64 / read.max(1) as f64
        );
    }
    let busy: f64 = stats.iter().map(|(_, _, b)| b).sum();
    if busy > 0.0 {
        println!(
            "  decode share: {:.1}% of the workers' busy time (decode.scaled = {:?})",
            100.0 * stats[0].2 / busy,
            cfg.decode.scaled
        );
    }

    let source = cfg.source.open()?;
    let src = match source {
        OpenedSource::Indexed(src) => src,
        OpenedSource::Stream(src) => return stream_decode_only(cfg, src, seconds, ips),
    };
    // As many decoding threads as the pipeline has: its decode pool, or its augment workers.
    let workers = if cfg.decode.inline() {
        augment_workers
    } else {
        cfg.decode.workers
    };
    let decoder = SampleDecoder::new(&cfg.decode, &cfg.augment, cfg.train.seed);
    let decode_ips = timed_loop(workers, seconds, src.len(), || {
        let (src, decoder) = (src.clone(), decoder.clone());
        move |id| decode_frame(src.as_ref(), &decoder, id).is_some()
    });
    println!("decode-only: {decode_ips:.1} images/s with {workers} workers");
    println!(
        "ratio pipeline/decode-only: {:.3}",
        ips / decode_ips.max(1e-9)
    );
    // The per-core cost without scheduling in the way: one thread decodes and multi-crops
    // each image in turn, like one PIL dataloader worker (bench_pil_recipe.py).
    let seed = cfg.train.seed;
    let scales = ScaleCounts::default();
    let decode_nanos = AtomicU64::new(0);
    let (cpu_nanos, cpu_items) = (AtomicU64::new(0), AtomicU64::new(0));
    let faults = AtomicU64::new(0);
    let t = Instant::now();
    let serial_ips = timed_loop(1, seconds, src.len(), || {
        let (src, decoder) = (src.clone(), decoder.clone());
        let mut multicrop = MultiCrop::new(&cfg.augment, seed);
        let mut global = vec![0u8; AugmentConfig::GLOBAL_CROPS * cfg.augment.global_bytes()];
        let mut local = vec![0u8; cfg.augment.local_crops * cfg.augment.local_bytes()];
        let (scales, decode_nanos) = (&scales, &decode_nanos);
        let (cpu_nanos, cpu_items, faults) = (&cpu_nanos, &cpu_items, &faults);
        move |id| {
            let cpu = thread_cpu_nanos();
            let faults_before = thread_minor_faults();
            let t = Instant::now();
            let decoded = decode_frame(src.as_ref(), &decoder, id);
            decode_nanos.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            let ok = decoded.is_some_and(|(frame, reduced)| {
                let (reduction, plan) = match reduced {
                    Some((r, p)) => (r, Some(p)),
                    None => (Reduction::identity(frame.width, frame.height), None),
                };
                scales.record(&reduction);
                multicrop
                    .apply_reduced(
                        &frame,
                        &reduction,
                        plan.as_ref(),
                        0,
                        id,
                        &mut global,
                        &mut local,
                    )
                    .is_ok()
            });
            if ok {
                cpu_nanos.fetch_add(thread_cpu_nanos() - cpu, Ordering::Relaxed);
                cpu_items.fetch_add(1, Ordering::Relaxed);
                faults.fetch_add(thread_minor_faults() - faults_before, Ordering::Relaxed);
            }
            ok
        }
    });
    let decode_share =
        decode_nanos.load(Ordering::Relaxed) as f64 * 1e-9 / t.elapsed().as_secs_f64();
    println!(
        "decode+augment on one core, serially: {serial_ips:.1} images/s (decode {:.1}% of the time)",
        100.0 * decode_share
    );
    // Wall time counts the moments other processes hold the core; the thread's own CPU time
    // does not, so this figure stays comparable on a shared machine (bench_pil_recipe.py
    // prints the same measure for the PIL recipe).
    let cpu_seconds = cpu_nanos.load(Ordering::Relaxed) as f64 * 1e-9;
    println!(
        "  per CPU-second of its thread: {:.1} images/s",
        cpu_items.load(Ordering::Relaxed) as f64 / cpu_seconds.max(1e-9)
    );
    // Fresh memory costs the kernel a zeroed page per fault (2 MiB with transparent huge
    // pages): a per-image allocation that the allocator returns to the system shows here.
    println!(
        "  page faults per image: {:.1}",
        faults.load(Ordering::Relaxed) as f64 / cpu_items.load(Ordering::Relaxed).max(1) as f64
    );
    println!(
        "  decode scales (decode.scaled = {:?}): {}",
        cfg.decode.scaled,
        scales.report()
    );
    Ok(())
}

/// Decode-only for a stream source (video): the source alone, its decoders emitting frames
/// into nothing for `seconds`, so the ratio to `ffmpeg -threads N -i FILE -f null -` is one
/// command away.
fn stream_decode_only(
    cfg: &PipelineConfig,
    mut src: Box<dyn crate::source::StreamSource>,
    seconds: f64,
    pipeline_ips: f64,
) -> anyhow::Result<()> {
    // The rate is taken after a warm-up (a quarter of the time): random sampling's decoders
    // run up to `2 x decoders + 2` whole keyframe units ahead of the emitted frames, so the first
    // frame waits for a whole unit and, when the clock stops, the units in flight are decoded but
    // not counted; over a few seconds that understated the rate by a third. Frames emitted
    // between the warm-up and the deadline are the steady state. The process's CPU time over
    // the same window gives frames per CPU-second: the pipeline has stopped by now, so it is
    // the decoders' time, a figure other processes on the machine move far less than the
    // wall-clock rate (compare `ffmpeg`'s with /usr/bin/time).
    let t = Instant::now();
    let deadline = t + Duration::from_secs_f64(seconds);
    let warm = t + Duration::from_secs_f64(seconds / 4.0);
    let mut warm_mark: Option<(Instant, u64, u64)> = None;
    let mut frames = 0u64;
    let mut pixels = (0u32, 0u32);
    let mut skipped = 0u64;
    for epoch in 0.. {
        let pass = crate::source::Pass {
            seed: cfg.train.seed,
            epoch,
            start: 0,
            max_pixels: cfg.decode.max_pixels,
        };
        let mut emit = |_pos: u64, f: Frame| {
            frames += 1;
            pixels = (f.width, f.height);
            let now = Instant::now();
            if warm_mark.is_none() && now >= warm {
                warm_mark = Some((now, frames, process_cpu_nanos()));
            }
            now < deadline
        };
        let end = src.run_pass(&pass, &mut emit, &mut |_, _| skipped += 1);
        if end == crate::source::PassEnd::Stopped || Instant::now() >= deadline {
            break;
        }
        if frames == 0 {
            bail!("the video source emitted no frame in a whole pass");
        }
    }
    let (fps, per_cpu_second) = match warm_mark {
        Some((at, counted, cpu)) if frames > counted => {
            let cpu_seconds = (process_cpu_nanos() - cpu) as f64 * 1e-9;
            let n = (frames - counted) as f64;
            (n / at.elapsed().as_secs_f64(), n / cpu_seconds.max(1e-9))
        }
        _ => (frames as f64 / t.elapsed().as_secs_f64(), f64::NAN),
    };
    let (sampling, decoders) = match &cfg.source {
        crate::source::SourceConfig::Video(v) => (
            format!("{:?}", v.sampling).to_lowercase(),
            // Files go through the planned, parallel decoders in either sampling (an epoch of
            // known length); a live stream, or a list that may name one, is read by one thread.
            if v.has_known_length() {
                worker_count(v.decoders)
            } else {
                1
            },
        ),
        _ => ("stream".into(), 1),
    };
    println!(
        "decode-only: {fps:.1} frames/s ({} sampling, {decoders} decoders, frames {}x{}, {skipped} skipped)",
        sampling, pixels.0, pixels.1
    );
    if per_cpu_second.is_finite() {
        println!("  {per_cpu_second:.1} frames per CPU-second (all the process's threads)");
    }
    if let Some(pictures) = src.decoded_pictures().filter(|_| frames > 0) {
        println!(
            "  {pictures} pictures decoded for {frames} frames emitted ({:.2} per frame)",
            pictures as f64 / frames as f64
        );
    }
    println!(
        "ratio pipeline/decode-only: {:.3}",
        pipeline_ips / fps.max(1e-9)
    );
    Ok(())
}

/// How many images the serial loop decoded at each scale, in eighths (index 1..=8).
#[derive(Default)]
struct ScaleCounts([AtomicU64; 9]);

impl ScaleCounts {
    fn record(&self, reduction: &Reduction) {
        let eighths = reduction.scale.eighths().min(8) as usize;
        self.0[eighths].fetch_add(1, Ordering::Relaxed);
    }

    /// "1/4 40 (62.5%), 1/2 24 (37.5%)": every scale used, smallest first.
    fn report(&self) -> String {
        let counts: Vec<u64> = self.0.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total = counts.iter().sum::<u64>().max(1) as f64;
        let used: Vec<String> = counts
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(e, &n)| {
                let name = match e {
                    8 => "1/1".to_string(),
                    e if 8 % e == 0 => format!("1/{}", 8 / e),
                    e => format!("{e}/8"),
                };
                format!("{name} {n} ({:.1}%)", 100.0 * n as f64 / total)
            })
            .collect();
        if used.is_empty() {
            "none (no encoded images)".into()
        } else {
            used.join(", ")
        }
    }
}

/// The frame of sample `id` as the pipeline decodes it (crop-aware with `decode.scaled =
/// "auto"`), with its reduction and crop plan; `None` on any error.
fn decode_frame(
    src: &dyn IndexedSource,
    decoder: &SampleDecoder,
    id: u64,
) -> Option<(Frame, Option<(Reduction, CropPlan)>)> {
    match src.read(id).ok()? {
        Payload::Encoded(bytes) => decoder.decode(&bytes, 0, id).ok(),
        Payload::Decoded(frame) => Some((frame, None)),
    }
}

/// CPU time the calling thread has used, in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_nanos() -> u64 {
    cpu_clock_nanos(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time all the process's threads have used, in nanoseconds (`CLOCK_PROCESS_CPUTIME_ID`).
fn process_cpu_nanos() -> u64 {
    cpu_clock_nanos(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn cpu_clock_nanos(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a Linux constant.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Minor page faults of the calling thread so far (`getrusage(RUSAGE_THREAD)`).
fn thread_minor_faults() -> u64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    if rc != 0 {
        return 0;
    }
    usage.ru_minflt as u64
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

/// This process's I/O counters (`/proc/self/io`): `rchar` counts every byte read (page cache
/// or not), `read_bytes` the bytes the kernel fetched from storage for it, so their ratio is
/// the share of reads that went to disk.
#[derive(Debug, Clone, Copy)]
struct ProcIo {
    rchar: u64,
    read_bytes: u64,
}

impl ProcIo {
    fn now() -> Option<ProcIo> {
        let text = std::fs::read_to_string("/proc/self/io").ok()?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        Some(ProcIo {
            rchar: field("rchar:")?,
            read_bytes: field("read_bytes:")?,
        })
    }
}
