//! The trainer actor: one OS thread that owns the engine (every tensor), pulls batches, steps,
//! exports metrics, appends the step log and writes checkpoints. It stops at the step budget,
//! when the stream ends, or when the stop flag is raised (a signal, or another actor's panic) —
//! always after a whole step, followed by a checkpoint. A non-finite loss stops it without
//! writing one, and so does a stream that ends before this run took a single step (nothing
//! changed, and a run with no usable sample must leave nothing behind). A panic inside the
//! trainer becomes [`TrainError::Panicked`]; its state may be half-updated, so it is not saved.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tch::Device;

use super::engine::{Engine, EngineError, StepStats};
use super::monitor::collapse_warning;
use super::Plan;
use crate::batch::{Batch, Cursor};
use crate::checkpoint::{self, CheckpointError, CheckpointMeta};
use crate::config::PipelineConfig;
use crate::metrics::Metrics;
use crate::pipeline::Rx;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the trainer panicked: {0}")]
    Panicked(String),
}

/// The step log in the run directory: one JSON line per step.
pub const LOG_FILE: &str = "train_log.jsonl";

/// Everything the trainer thread needs.
pub struct TrainerArgs {
    pub config: PipelineConfig,
    pub plan: Plan,
    pub device: Device,
    /// Checkpoint to restore before the first step.
    pub resume_from: Option<PathBuf>,
    /// The cursor the pipeline was started at (saved if no batch arrives).
    pub start_cursor: Cursor,
    /// Absolute step at which to stop.
    pub stop_at: u64,
    pub stop: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    pub show_progress: bool,
}

pub struct TrainOutcome {
    pub engine: Engine,
    pub start_step: u64,
    pub end_step: u64,
    pub last_loss: Option<f64>,
    pub last_checkpoint: Option<PathBuf>,
    /// Images per second over the whole run (excluding start-up).
    pub images_per_second: f64,
    pub interrupted: bool,
    /// The data stream ended before `stop_at` (and no stop was asked for).
    pub stream_ended: bool,
}

/// One line of `train_log.jsonl` in the run directory.
#[derive(serde::Serialize)]
struct LogLine<'a> {
    step: u64,
    epoch: u64,
    loss: f64,
    lr: f64,
    weight_decay: f64,
    teacher_momentum: f64,
    teacher_temp: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    monitors: Option<&'a serde_json::Value>,
    /// Online k-NN accuracy, on the steps where it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    knn_accuracy: Option<f64>,
}

/// Steps before collapse warnings are raised.
pub const COLLAPSE_GRACE_STEPS: u64 = 20;

pub fn spawn_trainer(
    args: TrainerArgs,
    batches: Rx<Batch>,
) -> JoinHandle<Result<TrainOutcome, TrainError>> {
    std::thread::Builder::new()
        .name("trainer".into())
        .spawn(move || {
            let stop = args.stop.clone();
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| train(args, batches)));
            result.unwrap_or_else(|panic| {
                // The other actors stop too: the pipeline watches the same flag.
                stop.store(true, Ordering::SeqCst);
                Err(TrainError::Panicked(crate::pipeline::panic_message(
                    &*panic,
                )))
            })
        })
        .expect("spawn trainer thread")
}

/// Keeps the step log consistent with the checkpoint a run resumes from: steps after it (taken
/// before a crash, and about to be taken again) and a torn last line are dropped. Rewritten
/// under a temporary name and renamed, so a crash here loses nothing.
fn trim_log(path: &std::path::Path, resumed_step: u64) -> std::io::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let kept: String = text
        .split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= resumed_step)
        })
        .collect();
    if kept.len() == text.len() {
        return Ok(());
    }
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, kept)?;
    std::fs::rename(&tmp, path)
}

fn train(args: TrainerArgs, batches: Rx<Batch>) -> Result<TrainOutcome, TrainError> {
    let cfg = &args.config;
    let mut engine = Engine::new(&cfg.model, &cfg.train, &cfg.augment, args.plan, args.device)?;
    if let Some(dir) = &args.resume_from {
        let meta = checkpoint::load_meta(dir)?;
        engine.load_state(checkpoint::load_tensors(dir)?, meta.step)?;
        tracing::info!(checkpoint = %dir.display(), step = meta.step, "resumed");
    } else if let Some(path) = &cfg.checkpoint.init_from {
        let what = engine.init_from(path)?;
        tracing::info!("initialised from {what}");
    }
    let run_dir = cfg.checkpoint.dir.clone();
    std::fs::create_dir_all(&run_dir).map_err(|source| TrainError::Log {
        path: run_dir.clone(),
        source,
    })?;
    let log_path = run_dir.join(LOG_FILE);
    let log_error = |source: std::io::Error| TrainError::Log {
        path: log_path.clone(),
        source,
    };
    trim_log(&log_path, engine.global_step()).map_err(log_error)?;
    // Opened at the first step: a run that never steps leaves no log behind.
    let mut log: Option<std::fs::File> = None;

    let start_step = engine.global_step();
    let progress = progress_bar(args.show_progress, args.stop_at.saturating_sub(start_step));
    let m = &args.metrics;
    let mut cursor = args.start_cursor;
    let mut saved_step = start_step;
    let mut last_checkpoint = None;
    let mut last_loss = None;
    let (mut interval_images, mut interval_start) = (0u64, Instant::now());
    let (mut total_images, mut first_step_at) = (0u64, None::<Instant>);
    let mut interrupted = false;
    let mut online = cfg.eval.knn.as_ref().and_then(|k| {
        crate::eval::online::OnlineKnn::start(k, cfg.augment.global_size, cfg.decode.max_pixels)
    });
    let mut train_time = std::time::Duration::ZERO;
    let mut stream_ended = false;

    let save = |engine: &Engine, cursor: Cursor, loss: f64| -> Result<PathBuf, TrainError> {
        let t = Instant::now();
        let meta = CheckpointMeta {
            format: checkpoint::FORMAT,
            step: engine.global_step(),
            cursor,
            plan: args.plan,
            seed: cfg.train.seed,
            loss,
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            config: cfg.to_toml(),
            tensors: None,
        };
        let dir = checkpoint::save(&run_dir, &meta, &engine.state(), cfg.checkpoint.keep)?;
        m.checkpoint_seconds.inc_by(t.elapsed().as_secs_f64());
        Ok(dir)
    };

    loop {
        if engine.global_step() >= args.stop_at {
            break;
        }
        if args.stop.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        let Some(batch) = batches.recv() else {
            if args.stop.load(Ordering::Relaxed) {
                interrupted = true;
            } else {
                tracing::info!("the data stream ended");
                stream_ended = true;
            }
            break;
        };
        crate::failpoint::check("trainer", engine.global_step());
        let t0 = Instant::now();
        first_step_at.get_or_insert(t0);
        let mut stats = engine.step(&batch)?;
        // The engine reports the schedule index of the step it took; logs, cadences and
        // checkpoints count steps done, so step N here is the state after N steps.
        stats.step += 1;
        let dt = t0.elapsed().as_secs_f64();
        train_time += t0.elapsed();
        let knn = online
            .as_mut()
            .and_then(|o| o.maybe_run(stats.step, train_time, &|x| engine.teacher_features(x)));
        if let Some(acc) = knn {
            m.knn_accuracy.with_label_values(&["online"]).set(acc);
        }
        cursor = batch.next;
        last_loss = Some(stats.loss);
        interval_images += batch.size as u64;
        total_images += batch.size as u64;
        record_metrics(m, &stats, batch.epoch, batch.size, dt);
        if log.is_none() {
            log = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_path)
                    .map_err(log_error)?,
            );
        }
        write_log(log.as_mut().expect("opened above"), &stats, batch.epoch, knn)
            .map_err(log_error)?;
        progress.inc(1);
        // A freshly initialised teacher sits in the one-hot band for its first steps; judge
        // collapse only once the run has had a few steps to move.
        let judged = stats.step >= COLLAPSE_GRACE_STEPS;
        if let Some(warning) = stats
            .monitors
            .as_ref()
            .filter(|_| judged)
            .and_then(|mon| collapse_warning(mon, cfg.model.out_dim))
        {
            m.collapse_warnings.inc();
            progress.suspend(|| tracing::warn!(step = stats.step, "{warning}"));
        }
        if stats.step % cfg.train.log_every == 0 || stats.step == args.stop_at {
            let ips = interval_images as f64 / interval_start.elapsed().as_secs_f64().max(1e-9);
            m.train_images_per_second.set(ips);
            (interval_images, interval_start) = (0, Instant::now());
            progress.set_message(format!(
                "loss {:.4} lr {:.2e} {:.0} img/s",
                stats.loss, stats.lr, ips
            ));
            progress.suspend(|| {
                tracing::info!(
                    step = stats.step,
                    epoch = batch.epoch,
                    loss = format!("{:.5}", stats.loss),
                    lr = format!("{:.3e}", stats.lr),
                    images_per_s = format!("{ips:.1}"),
                    "train"
                )
            });
        }
        if cfg.checkpoint.every_steps > 0 && stats.step % cfg.checkpoint.every_steps == 0 {
            last_checkpoint = Some(save(&engine, cursor, stats.loss)?);
            saved_step = stats.step;
        }
    }
    progress.finish_and_clear();
    let end_step = engine.global_step();
    // A fresh run saves even without a step (Ctrl-C or --max-steps 0 before step 1), so that
    // --resume, eval and export find the initial state; a stream that ended without one saves
    // nothing (no sample was usable: the caller reports it).
    let fresh_without_checkpoint = last_checkpoint.is_none() && args.resume_from.is_none();
    let nothing_usable = stream_ended && end_step == start_step;
    if end_step > saved_step || (fresh_without_checkpoint && !nothing_usable) {
        let dir = save(&engine, cursor, last_loss.unwrap_or(f64::NAN))?;
        tracing::info!(checkpoint = %dir.display(), step = end_step, "checkpoint written");
        last_checkpoint = Some(dir);
    }
    let images_per_second = first_step_at.map_or(0.0, |t| {
        total_images as f64 / t.elapsed().as_secs_f64().max(1e-9)
    });
    Ok(TrainOutcome {
        engine,
        start_step,
        end_step,
        last_loss,
        last_checkpoint,
        images_per_second,
        interrupted,
        stream_ended,
    })
}

fn record_metrics(m: &Metrics, s: &StepStats, epoch: u64, images: usize, seconds: f64) {
    m.train_steps.inc();
    m.train_images.inc_by(images as u64);
    m.stage_items
        .with_label_values(&["trainer"])
        .inc_by(images as u64);
    m.stage_busy_seconds
        .with_label_values(&["trainer"])
        .inc_by(seconds);
    m.train_step_seconds.observe(seconds);
    m.train_loss.set(s.loss);
    m.train_lr.set(s.lr);
    m.train_weight_decay.set(s.weight_decay);
    m.train_teacher_momentum.set(s.teacher_momentum);
    m.train_teacher_temp.set(s.teacher_temp);
    m.train_epoch.set(epoch as f64);
    if let Some(mon) = &s.monitors {
        m.teacher_entropy.set(mon.teacher_entropy);
        m.teacher_mean_entropy.set(mon.teacher_mean_entropy);
        m.kl_teacher_student.set(mon.kl_teacher_student);
        m.center_norm.set(mon.center_norm);
        m.active_dims.set(mon.active_dims);
    }
}

fn write_log(
    log: &mut std::fs::File,
    s: &StepStats,
    epoch: u64,
    knn_accuracy: Option<f64>,
) -> std::io::Result<()> {
    let monitors = s.monitors.as_ref().map(|mon| {
        serde_json::json!({
            "teacher_entropy": mon.teacher_entropy,
            "teacher_mean_entropy": mon.teacher_mean_entropy,
            "kl_teacher_student": mon.kl_teacher_student,
            "center_norm": mon.center_norm,
            "active_dims": mon.active_dims,
        })
    });
    let line = LogLine {
        step: s.step,
        epoch,
        loss: s.loss,
        lr: s.lr,
        weight_decay: s.weight_decay,
        teacher_momentum: s.teacher_momentum,
        teacher_temp: s.teacher_temp,
        monitors: monitors.as_ref(),
        knn_accuracy,
    };
    let mut text = serde_json::to_string(&line).expect("log line serialises");
    text.push('\n');
    log.write_all(text.as_bytes())
}

fn progress_bar(show: bool, steps: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(steps);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps  {msg}  eta {eta}",
        )
        .expect("progress template"),
    );
    pb
}
