//! The trainer actor: one OS thread that owns the engine (every tensor), pulls batches, steps,
//! exports metrics, appends the step log and writes checkpoints. It stops at the step budget,
//! when the stream ends, or when the stop flag is raised (Ctrl-C) — always after a whole step,
//! followed by a checkpoint. A non-finite loss stops it without writing one.
//!
//! With several ranks every rank runs this loop in step; rank 0 alone writes the step log and
//! checkpoints, and a stop request (Ctrl-C on any rank) is agreed inside the step, so all ranks
//! stop after the same step and rank 0 writes the one final checkpoint.

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
use crate::dist::Dist;
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
}

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
    /// The process group (`Dist::single()` alone).
    pub dist: Arc<Dist>,
}

pub struct TrainOutcome {
    pub engine: Engine,
    pub start_step: u64,
    pub end_step: u64,
    pub last_loss: Option<f64>,
    pub last_checkpoint: Option<PathBuf>,
    /// Images per second over the whole run (excluding start-up), all ranks together.
    pub images_per_second: f64,
    pub interrupted: bool,
    /// Seconds in steps, and in collectives within them (0 alone).
    pub step_seconds: f64,
    pub comm_seconds: f64,
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
}

/// Steps before collapse warnings are raised.
pub const COLLAPSE_GRACE_STEPS: u64 = 20;

pub fn spawn_trainer(
    args: TrainerArgs,
    batches: Rx<Batch>,
) -> JoinHandle<Result<TrainOutcome, TrainError>> {
    std::thread::Builder::new()
        .name("trainer".into())
        .spawn(move || train(args, batches))
        .expect("spawn trainer thread")
}

fn train(args: TrainerArgs, batches: Rx<Batch>) -> Result<TrainOutcome, TrainError> {
    let cfg = &args.config;
    let mut engine = Engine::new(&cfg.model, &cfg.train, &cfg.augment, args.plan, args.device)?;
    if let Some(dir) = &args.resume_from {
        let meta = checkpoint::load_meta(dir)?;
        engine.load_state(checkpoint::load_tensors(dir)?, meta.step)?;
        tracing::info!(checkpoint = %dir.display(), step = meta.step, "resumed");
    }
    let dist = args.dist.clone();
    engine.attach_dist(dist.clone(), &cfg.dist)?;
    let writer = dist.is_main();
    let run_dir = cfg.checkpoint.dir.clone();
    let log_path = run_dir.join("train_log.jsonl");
    let mut log = if writer {
        std::fs::create_dir_all(&run_dir).map_err(|source| TrainError::Log {
            path: run_dir.clone(),
            source,
        })?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| TrainError::Log {
                path: log_path.clone(),
                source,
            })?;
        Some(file)
    } else {
        None
    };

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
    let (mut step_seconds, mut comm_seconds) = (0.0f64, 0.0f64);

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
        };
        let dir = checkpoint::save(&run_dir, &meta, &engine.state(), cfg.checkpoint.keep)?;
        m.checkpoint_seconds.inc_by(t.elapsed().as_secs_f64());
        Ok(dir)
    };
    // Only rank 0 writes; the others know where it wrote.
    let save =
        |engine: &Engine, cursor: Cursor, loss: f64| -> Result<Option<PathBuf>, TrainError> {
            writer.then(|| save(engine, cursor, loss)).transpose()
        };

    loop {
        if engine.global_step() >= args.stop_at {
            break;
        }
        // Alone, a stop request ends the run before the next step; with several ranks it is
        // agreed inside the step (below), so that no rank is left waiting in a collective.
        if !dist.is_distributed() && args.stop.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        let Some(batch) = batches.recv() else {
            if args.stop.load(Ordering::Relaxed) {
                interrupted = true;
            } else {
                tracing::info!("the data stream ended");
            }
            break;
        };
        let t0 = Instant::now();
        let comm0 = dist.comm_seconds();
        first_step_at.get_or_insert(t0);
        let mut stats = engine.step_or_stop(&batch, args.stop.load(Ordering::Relaxed))?;
        // The engine reports the schedule index of the step it took; logs, cadences and
        // checkpoints count steps done, so step N here is the state after N steps.
        stats.step += 1;
        let dt = t0.elapsed().as_secs_f64();
        let comm = dist.comm_seconds() - comm0;
        m.train_comm_seconds.inc_by(comm);
        (step_seconds, comm_seconds) = (step_seconds + dt, comm_seconds + comm);
        cursor = batch.next;
        last_loss = Some(stats.loss);
        interval_images += batch.size as u64;
        total_images += (batch.size * dist.world()) as u64;
        record_metrics(m, &stats, batch.epoch, batch.size, dt);
        if let Some(log) = log.as_mut() {
            write_log(log, &stats, batch.epoch).map_err(|source| TrainError::Log {
                path: log_path.clone(),
                source,
            })?;
        }
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
            last_checkpoint = save(&engine, cursor, stats.loss)?;
            saved_step = stats.step;
        }
        if stats.stop && dist.is_distributed() {
            interrupted = true;
            break;
        }
    }
    progress.finish_and_clear();
    let end_step = engine.global_step();
    if end_step > saved_step || (last_checkpoint.is_none() && args.resume_from.is_none()) {
        if let Some(dir) = save(&engine, cursor, last_loss.unwrap_or(f64::NAN))? {
            tracing::info!(checkpoint = %dir.display(), step = end_step, "checkpoint written");
            last_checkpoint = Some(dir);
        }
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
        step_seconds,
        comm_seconds,
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

fn write_log(log: &mut std::fs::File, s: &StepStats, epoch: u64) -> std::io::Result<()> {
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
