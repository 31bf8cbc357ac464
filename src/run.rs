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
use crate::metrics::{self, Metrics};
use crate::pipeline::Pipeline;
use crate::source::OpenedSource;
use crate::train::engine::{select_device, Engine};
use crate::train::{spawn_trainer, Plan, TrainerArgs};

pub struct RunOptions {
    pub max_steps: Option<u64>,
    pub resume: bool,
    pub show_progress: bool,
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
    Ok(Plan {
        steps_per_epoch,
        epochs: cfg.train.epochs,
    })
}

/// Applies `train.threads` to libtorch.
pub fn configure_torch(cfg: &PipelineConfig) {
    if cfg.train.threads > 0 {
        tch::set_num_threads(cfg.train.threads as i32);
    }
}

pub fn run(loaded: LoadedConfig, opts: RunOptions) -> anyhow::Result<()> {
    let cfg = loaded.config;
    configure_torch(&cfg);
    let source = cfg.source.open().context("opening [source]")?;
    let device = select_device(cfg.train.device);
    let dist = Arc::new(Dist::from_env(&cfg.dist, device.is_cuda())?);
    // One GPU per local rank.
    let device = match device {
        tch::Device::Cuda(_) => tch::Device::Cuda(dist.local_rank()),
        d => d,
    };
    let plan = plan_for_world(&cfg, &source, dist.world())?;

    let (resume_from, start_cursor, start_step) = if opts.resume {
        match checkpoint::latest(&cfg.checkpoint.dir) {
            Some(dir) => {
                let meta = checkpoint::load_meta(&dir)?;
                if meta.plan != plan {
                    tracing::warn!(saved = ?meta.plan, now = ?plan, "the run plan changed since the checkpoint; schedules follow the new plan");
                }
                (Some(dir), meta.cursor, meta.step)
            }
            None => {
                tracing::warn!(dir = %cfg.checkpoint.dir.display(), "--resume: no checkpoint found, starting fresh");
                (None, Cursor::default(), 0)
            }
        }
    } else {
        (None, Cursor::default(), 0)
    };
    let total = plan.total_steps();
    let stop_at = opts.max_steps.map_or(total, |m| m.min(total));
    tracing::info!(
        source = cfg.source.kind_name(),
        samples_per_epoch = ?source.epoch_len(),
        steps_per_epoch = plan.steps_per_epoch,
        epochs = plan.epochs,
        start_step,
        stop_at,
        device = ?device,
        "starting"
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
    let signal_stop = stop.clone();
    runtime.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("Ctrl-C: finishing the current step and writing a checkpoint (Ctrl-C again to abort)");
            signal_stop.store(true, Ordering::SeqCst);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });

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
    pipeline.shutdown();
    let outcome = outcome?;
    println!(
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
    );
    if let Some(dir) = &outcome.last_checkpoint {
        println!("checkpoint: {}", dir.display());
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
    if let Some(knn_cfg) = cfg.eval.knn.as_ref().filter(|_| dist.is_main()) {
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
                println!(
                    "k-NN accuracy (k={}, T={}): trained {:.2}%  untrained {:.2}%",
                    knn_cfg.k,
                    knn_cfg.temperature,
                    100.0 * trained,
                    100.0 * untrained
                );
            } else {
                println!(
                    "k-NN accuracy (k={}, T={}): trained {:.2}%",
                    knn_cfg.k,
                    knn_cfg.temperature,
                    100.0 * trained
                );
            }
        }
    }
    runtime.shutdown_background();
    Ok(())
}

/// Weighted k-NN accuracy of `engine`'s teacher features on `[eval.knn]`.
pub fn evaluate_knn(cfg: &PipelineConfig, engine: &Engine) -> anyhow::Result<f64> {
    let knn_cfg = cfg
        .eval
        .knn
        .as_ref()
        .context("no [eval.knn] section in the pipeline")?;
    let size = knn_cfg.image_size.unwrap_or(cfg.augment.global_size);
    let embed = |x: &tch::Tensor| engine.teacher_features(x);
    let t = std::time::Instant::now();
    let extract = |source: &crate::source::SourceConfig, key: &str| -> anyhow::Result<_> {
        let opened = source.open().with_context(|| format!("opening [{key}]"))?;
        Ok(knn::extract(
            opened,
            key,
            size,
            knn_cfg.batch_size,
            cfg.decode.max_pixels,
            &embed,
        )?)
    };
    let (train_f, train_l, s1) = extract(&knn_cfg.train, "eval.knn.train")?;
    let (test_f, test_l, s2) = extract(&knn_cfg.test, "eval.knn.test")?;
    let acc = knn::accuracy(
        &train_f,
        &train_l,
        &test_f,
        &test_l,
        knn_cfg.k,
        knn_cfg.temperature,
    );
    tracing::info!(
        bank = train_f.size()[0],
        queries = test_f.size()[0],
        skipped = s1 + s2,
        seconds = format!("{:.1}", t.elapsed().as_secs_f64()),
        accuracy = format!("{acc:.4}"),
        "k-NN"
    );
    Ok(acc)
}

/// Builds an engine from a checkpoint directory (or the latest in `checkpoint.dir`).
pub fn engine_from_checkpoint(
    cfg: &PipelineConfig,
    checkpoint_dir: Option<&Path>,
) -> anyhow::Result<(Engine, PathBuf)> {
    let dir = match checkpoint_dir {
        Some(d) => d.to_path_buf(),
        None => checkpoint::latest(&cfg.checkpoint.dir)
            .with_context(|| format!("no checkpoint in {}", cfg.checkpoint.dir.display()))?,
    };
    let meta = checkpoint::load_meta(&dir)?;
    let device = select_device(cfg.train.device);
    let mut engine = Engine::new(&cfg.model, &cfg.train, &cfg.augment, meta.plan, device)?;
    engine.load_state(checkpoint::load_tensors(&dir)?, meta.step)?;
    Ok((engine, dir))
}
