//! `dino-stream run`: wires config, source, pipeline, metrics server, trainer and evaluation.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::batch::Cursor;
use crate::checkpoint;
use crate::config::{LoadedConfig, PipelineConfig};
use crate::dist::{Dist, Shard};
use crate::eval::knn;
use crate::exit::EarlyEnd;
use crate::metrics::{self, Metrics};
use crate::pipeline::Pipeline;
use crate::recipe;
use crate::rundir::{self, DirLock};
use crate::source::OpenedSource;
use crate::train::engine::{select_device, Engine};
use crate::train::{spawn_trainer, Plan, TrainerArgs};

pub struct RunOptions {
    pub max_steps: Option<u64>,
    pub resume: bool,
    pub show_progress: bool,
    /// Start over in a run directory that holds a run, moving the old one aside.
    pub restart: bool,
    /// `--allow-config-change`: on resume, explicitly set `[train]`/`[augment]` keys may differ
    /// from the checkpoint's (see `recipe`).
    pub allow_config_change: bool,
}

/// The run plan: schedules span `epochs × steps_per_epoch` steps.
pub fn plan_for(cfg: &PipelineConfig, source: &OpenedSource) -> anyhow::Result<Plan> {
    plan_for_world(cfg, source, 1)
}

/// The plan when `world` ranks each take `train.batch_size` samples per step: an epoch has
/// `samples / (batch_size × world)` steps (the global batch).
pub fn plan_for_world(
    cfg: &PipelineConfig,
    source: &OpenedSource,
    world: usize,
) -> anyhow::Result<Plan> {
    let steps_per_epoch = match (cfg.train.steps_per_epoch, source.epoch_len()) {
        (Some(s), _) => s,
        (None, Some(n)) => n / (cfg.train.batch_size * world) as u64,
        (None, None) => bail!("train.steps_per_epoch is required for a source of unknown length"),
    };
    if steps_per_epoch == 0 {
        bail!(
            "the source has {} samples, fewer than one batch of train.batch_size = {}",
            source.epoch_len().unwrap_or(0),
            cfg.train.batch_size
        );
    }
    let plan = Plan {
        steps_per_epoch,
        epochs: cfg.train.epochs,
    };
    crate::config::limits::plan_steps(&plan).map_err(anyhow::Error::msg)?;
    Ok(plan)
}

/// `3 epochs x 468 steps` for logs.
pub fn describe_plan(plan: &Plan) -> String {
    format!("{} epochs x {} steps", plan.epochs, plan.steps_per_epoch)
}

/// `cpu` / `cuda:0` for logs.
pub fn describe_device(device: tch::Device) -> String {
    match device {
        tch::Device::Cpu => "cpu".into(),
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Applies `train.threads` to libtorch.
pub fn configure_torch(cfg: &PipelineConfig) {
    if cfg.train.threads > 0 {
        tch::set_num_threads(cfg.train.threads as i32);
    }
}

pub fn run(loaded: LoadedConfig, opts: RunOptions) -> anyhow::Result<()> {
    // A closed terminal or a dead `| tee` must not kill a run that is about to checkpoint.
    crate::signals::survive_lost_output();
    let mut cfg = loaded.config;
    let dist = Arc::new(Dist::from_env(
        &cfg.dist,
        select_device(cfg.train.device).is_cuda(),
    )?);
    // Rank 0 alone owns the run directory (it alone writes checkpoints and the step log);
    // the other ranks only read the checkpoint they resume from.
    let run_lock = if dist.is_main() {
        Some(claim_run_dir(&cfg.checkpoint.dir, &opts)?)
    } else {
        None
    };
    // On resume the checkpoint's own configuration decides the model and the plan.
    let resume_from = if opts.resume {
        match resume_point(&cfg.checkpoint.dir)? {
            Some((dir, meta)) => {
                let saved = recipe::saved_config(&dir, &meta)?;
                let notes = recipe::adopt(
                    &mut cfg,
                    &saved,
                    &loaded.explicit_keys,
                    &dir,
                    recipe::Use::Resume {
                        allow_changes: opts.allow_config_change,
                    },
                )?;
                for note in notes {
                    tracing::info!("resume: {note}");
                }
                Some((dir, meta))
            }
            None => {
                tracing::warn!(
                    "--resume: no checkpoint in {}, starting fresh",
                    cfg.checkpoint.dir.display()
                );
                None
            }
        }
    } else {
        None
    };
    configure_torch(&cfg);
    // The source, every other source the run reads, the device and the precision, before
    // step 1; a run refused here leaves no run directory behind.
    let source = match cfg.source.open().context("opening [source]") {
        Ok(source) => source,
        Err(e) => {
            release_if_untouched(run_lock);
            return Err(e);
        }
    };
    if let Err(e) = crate::preflight::check(&cfg, Some(&source), true) {
        release_if_untouched(run_lock);
        return Err(e.into());
    }
    let mut plan = plan_for_world(&cfg, &source, dist.world())?;
    // One GPU per local rank.
    let device = match select_device(cfg.train.device) {
        tch::Device::Cuda(_) => tch::Device::Cuda(dist.local_rank()),
        d => d,
    };

    let (resume_from, start_cursor, start_step) = match resume_from {
        Some((dir, meta)) => {
            if meta.plan != plan {
                if opts.allow_config_change {
                    tracing::warn!(
                        "the run plan changed since the checkpoint ({} -> {}); --allow-config-change: the schedules follow the new plan",
                        describe_plan(&meta.plan),
                        describe_plan(&plan)
                    );
                } else {
                    tracing::warn!(
                        "the source now gives the plan {}; the schedules keep the checkpoint's {} (pass --allow-config-change to follow the new one)",
                        describe_plan(&plan),
                        describe_plan(&meta.plan)
                    );
                    plan = meta.plan;
                }
            }
            (Some(dir), meta.cursor, meta.step)
        }
        None => (None, Cursor::default(), 0),
    };
    let total = plan.total_steps();
    let stop_at = opts.max_steps.map_or(total, |m| m.min(total));
    tracing::info!(
        "starting: {} source, {} samples per epoch, {}, steps {start_step}..{stop_at}, device {}, checkpoints in {}",
        cfg.source.kind_name(),
        source
            .epoch_len()
            .map_or("a stream of".to_string(), |n| n.to_string()),
        describe_plan(&plan),
        describe_device(device),
        cfg.checkpoint.dir.display()
    );

    let metrics = if dist.is_distributed() {
        Metrics::for_rank(dist.rank())
    } else {
        Metrics::new()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("dino-io")
        .build()
        .context("starting the tokio runtime")?;
    let stop = Arc::new(AtomicBool::new(false));
    // Each process of a node serves its own port: metrics.port + LOCAL_RANK.
    let mut metrics_cfg = cfg.metrics.clone();
    if metrics_cfg.port != 0 {
        metrics_cfg.port = metrics_cfg
            .port
            .checked_add(dist.local_rank() as u16)
            .context("metrics.port + LOCAL_RANK is over 65535")?;
    }
    let addr = runtime.block_on(metrics::serve(&metrics_cfg, metrics.clone()))?;
    if let Some(addr) = addr {
        tracing::info!("metrics on http://{addr}/metrics");
    }
    let signal = crate::signals::stop_on_signals(&runtime, stop.clone())
        .context("installing the signal handlers")?;

    let epochs = match source {
        OpenedSource::Indexed(_) => plan.epochs,
        OpenedSource::Stream(_) => u64::MAX,
    };
    // With several ranks the data stops only after the trainer (which agrees on stopping with
    // the other ranks), so that no rank runs out of batches while the others step.
    let pipeline_stop = if dist.is_distributed() {
        Arc::new(AtomicBool::new(false))
    } else {
        stop.clone()
    };
    let shard = Shard {
        rank: dist.rank(),
        world: dist.world(),
        per_rank: cfg.train.batch_size,
    };
    let pipeline = Pipeline::start_sharded(
        &cfg,
        source,
        start_cursor,
        epochs,
        shard,
        &metrics,
        pipeline_stop.clone(),
    );
    let trainer = spawn_trainer(
        TrainerArgs {
            config: cfg.clone(),
            plan,
            device,
            resume_from,
            start_cursor,
            stop_at,
            stop: stop.clone(),
            metrics: metrics.clone(),
            show_progress: opts.show_progress && dist.is_main(),
            dist: dist.clone(),
        },
        pipeline.batches.clone(),
    );
    let outcome = trainer
        .join()
        .map_err(|_| anyhow::anyhow!("the trainer thread panicked"))?;
    stop.store(true, Ordering::SeqCst);
    pipeline_stop.store(true, Ordering::SeqCst);
    let skipped = pipeline.skips.distinct();
    let actor_failure = pipeline.failure();
    pipeline.shutdown();
    let outcome = match (outcome, &actor_failure) {
        (Ok(o), _) => o,
        (Err(e), Some(f)) => bail!("{f}; then the trainer failed: {e}"),
        (Err(e), None) => return Err(e.into()),
    };
    if let Some(f) = actor_failure {
        let saved = outcome
            .last_checkpoint
            .as_ref()
            .map_or("no checkpoint".into(), |d| {
                format!("checkpoint {}", d.display())
            });
        bail!("{f}; stopped after step {} ({saved})", outcome.end_step);
    }
    if outcome.stream_ended && outcome.end_step == outcome.start_step {
        release_if_untouched(run_lock);
        bail!(
            "no usable sample: the data stream ended before step {} ({skipped} unreadable samples skipped); nothing was written",
            outcome.start_step + 1
        );
    }
    say(format_args!(
        "trained steps {}..{} of {}{}; last loss {}; {:.1} images/s; {} unreadable samples skipped",
        outcome.start_step,
        outcome.end_step,
        total,
        if outcome.interrupted {
            " (interrupted)"
        } else {
            ""
        },
        outcome.last_loss.map_or("-".into(), |l| format!("{l:.5}")),
        outcome.images_per_second,
        skipped
    ));
    if let Some(dir) = &outcome.last_checkpoint {
        say(format_args!("checkpoint: {}", dir.display()));
    }
    if dist.is_distributed() {
        println!(
            "rank {} of {}: communication {:.1}% of the step time ({:.2} s of {:.2} s)",
            dist.rank(),
            dist.world(),
            100.0 * outcome.comm_seconds / outcome.step_seconds.max(1e-9),
            outcome.comm_seconds,
            outcome.step_seconds
        );
    }

    // k-NN runs on rank 0 alone (the others have the same teacher and nothing to add).
    if let Some(knn_cfg) = cfg
        .eval
        .knn
        .as_ref()
        .filter(|k| k.enabled && dist.is_main())
    {
        if !outcome.interrupted {
            let trained = evaluate_knn(&cfg, &outcome.engine)?;
            metrics
                .knn_accuracy
                .with_label_values(&["trained"])
                .set(trained);
            if knn_cfg.compare_untrained {
                let fresh = Engine::new(&cfg.model, &cfg.train, &cfg.augment, plan, device)?;
                let untrained = evaluate_knn(&cfg, &fresh)?;
                metrics
                    .knn_accuracy
                    .with_label_values(&["untrained"])
                    .set(untrained);
                // The baseline a newcomer compares with: the same k-NN on raw pixels.
                let px = knn_features(&cfg, &crate::commands_eval::pixels)?;
                let raw = knn::accuracy(
                    &px.train,
                    &px.train_labels,
                    &px.test,
                    &px.test_labels,
                    knn_cfg.k,
                    knn_cfg.temperature,
                );
                say(format_args!(
                    "k-NN accuracy (k={}, T={}): trained {:.2}%  untrained {:.2}%  raw pixels {:.2}%",
                    knn_cfg.k,
                    knn_cfg.temperature,
                    100.0 * trained,
                    100.0 * untrained,
                    100.0 * raw
                ));
            } else {
                say(format_args!(
                    "k-NN accuracy (k={}, T={}): trained {:.2}%",
                    knn_cfg.k,
                    knn_cfg.temperature,
                    100.0 * trained
                ));
            }
        }
    }
    runtime.shutdown_background();
    drop(run_lock);
    if outcome.interrupted {
        return Err(EarlyEnd::Interrupted {
            signal: signal.get().copied().unwrap_or(if dist.is_distributed() {
                "a signal on another rank"
            } else {
                "a signal"
            }),
            step: outcome.end_step,
        }
        .into());
    }
    if outcome.stream_ended {
        return Err(EarlyEnd::StreamEnded {
            step: outcome.end_step,
            planned: stop_at,
        }
        .into());
    }
    Ok(())
}

/// Locks the run directory and makes sure a fresh run does not mix with an old one (refused,
/// or moved aside with `--restart`); removes temporary directories of killed saves.
/// Gives the run directory back when this process created it and wrote nothing (rank 0).
fn release_if_untouched(lock: Option<DirLock>) {
    if let Some(lock) = lock {
        lock.release_if_untouched();
    }
}

fn claim_run_dir(dir: &Path, opts: &RunOptions) -> anyhow::Result<DirLock> {
    let lock = DirLock::acquire(dir)?;
    if !opts.resume {
        if let Some(aside) = rundir::claim_for_fresh_run(&lock, opts.restart)? {
            tracing::warn!(
                "--restart: moved the previous run in {} to {}",
                dir.display(),
                aside.display()
            );
        }
    }
    for stale in checkpoint::remove_stale_temps(dir) {
        tracing::warn!(
            "removed {}, left by a save that never finished",
            stale.display()
        );
    }
    Ok(lock)
}

/// The newest intact checkpoint in `dir`, warning about each damaged newer one passed over;
/// an error when there are checkpoints but none is intact.
fn resume_point(dir: &Path) -> anyhow::Result<Option<(PathBuf, checkpoint::CheckpointMeta)>> {
    let (good, damaged) = checkpoint::latest_good(dir);
    for e in &damaged {
        tracing::warn!("skipping a damaged checkpoint: {e}");
    }
    match (good, damaged.first()) {
        (Some((path, meta)), Some(_)) => {
            tracing::warn!(
                "falling back to the newest intact checkpoint, {}",
                path.display()
            );
            Ok(Some((path, meta)))
        }
        (None, Some(newest)) => bail!(
            "none of the {} checkpoints in {} is intact (newest: {newest})",
            damaged.len(),
            dir.display()
        ),
        (good, None) => Ok(good),
    }
}

/// One line of the run's summary on stdout. The summary comes after the checkpoint; a stdout
/// that is gone by then (EIO from a closed terminal after SIGHUP, EPIPE from a dead pipe, a full
/// disk) must not turn a finished or interrupted run into a failed one, so the write may fail.
fn say(line: std::fmt::Arguments) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(line).and_then(|()| writeln!(out)) {
        tracing::warn!("could not print the run summary ({e}); the run directory has it");
    }
}

/// Weighted k-NN accuracy of `engine`'s teacher features on `[eval.knn]`. Bank and queries are
/// labelled by class name; classes found on one side only are reported.
pub fn evaluate_knn(cfg: &PipelineConfig, engine: &Engine) -> anyhow::Result<f64> {
    let knn_cfg = cfg
        .eval
        .knn
        .as_ref()
        .context("no [eval.knn] section in the pipeline")?;
    let embed = |x: &tch::Tensor| engine.teacher_features(x);
    let f = knn_features(cfg, &embed)?;
    Ok(knn::accuracy(
        &f.train,
        &f.train_labels,
        &f.test,
        &f.test_labels,
        knn_cfg.k,
        knn_cfg.temperature,
    ))
}

/// Features of `[eval.knn]`'s bank and queries, labels numbered by class name on both sides.
pub struct KnnFeatures {
    pub train: tch::Tensor,
    pub train_labels: tch::Tensor,
    pub test: tch::Tensor,
    pub test_labels: tch::Tensor,
}

/// Runs `embed` (u8 NHWC → fp32 features) over `[eval.knn]`'s train and test sources.
pub fn knn_features(
    cfg: &PipelineConfig,
    embed: &dyn Fn(&tch::Tensor) -> tch::Tensor,
) -> anyhow::Result<KnnFeatures> {
    let knn_cfg = cfg
        .eval
        .knn
        .as_ref()
        .context("no [eval.knn] section in the pipeline")?;
    let size = knn_cfg.image_size.unwrap_or(cfg.augment.global_size);
    let t = std::time::Instant::now();
    let extract = |source: &crate::source::SourceConfig, key: &str| -> anyhow::Result<_> {
        let opened = source.open().with_context(|| format!("opening [{key}]"))?;
        let bar = crate::progress::bar(&format!("k-NN features of {key}"));
        let out = knn::extract(
            opened,
            key,
            size,
            knn_cfg.batch_size,
            &cfg.decode,
            embed,
            &bar,
        );
        bar.finish_and_clear();
        Ok(out?)
    };
    let bank = extract(&knn_cfg.train, "eval.knn.train")?;
    let queries = extract(&knn_cfg.test, "eval.knn.test")?;
    let aligned = knn::align(
        &bank.classes,
        &queries.classes,
        "eval.knn.train",
        "eval.knn.test",
    )?;
    if !aligned.bank_only.is_empty() {
        tracing::warn!(
            "k-NN: classes in eval.knn.train but not in eval.knn.test: {}",
            aligned.bank_only.join(", ")
        );
    }
    if !aligned.query_only.is_empty() {
        tracing::warn!(
            "k-NN: classes in eval.knn.test but not in eval.knn.train: {} ({} queries that count as misses)",
            aligned.query_only.join(", "),
            aligned.unmatched_queries
        );
    }
    tracing::info!(
        bank = bank.features.size()[0],
        queries = queries.features.size()[0],
        skipped = bank.skipped + queries.skipped,
        seconds = format!("{:.1}", t.elapsed().as_secs_f64()),
        "k-NN features"
    );
    Ok(KnnFeatures {
        train: bank.features,
        train_labels: aligned.bank_labels,
        test: queries.features,
        test_labels: aligned.query_labels,
    })
}

/// Builds an engine from a checkpoint directory (or the latest in `checkpoint.dir`).
pub fn engine_from_checkpoint(
    cfg: &PipelineConfig,
    checkpoint_dir: Option<&Path>,
) -> anyhow::Result<(Engine, PathBuf)> {
    let dir = match checkpoint_dir {
        Some(d) => d.to_path_buf(),
        None => {
            resume_point(&cfg.checkpoint.dir)?
                .with_context(|| format!("no checkpoint in {}", cfg.checkpoint.dir.display()))?
                .0
        }
    };
    let meta = checkpoint::load_meta(&dir)?;
    let device = select_device(cfg.train.device);
    let mut engine = Engine::new(&cfg.model, &cfg.train, &cfg.augment, meta.plan, device)?;
    engine.load_state(checkpoint::load_tensors(&dir)?, meta.step)?;
    Ok((engine, dir))
}
