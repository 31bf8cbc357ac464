//! `dino-stream run`: wires config, source, pipeline, metrics server, trainer and evaluation.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::batch::Cursor;
use crate::checkpoint;
use crate::config::{LoadedConfig, PipelineConfig};
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
    let steps_per_epoch = match (cfg.train.steps_per_epoch, source.epoch_len()) {
        (Some(s), _) => s,
        (None, Some(n)) => n / cfg.train.batch_size as u64,
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
    let plan = plan_for(&cfg, &source)?;
    let device = select_device(cfg.train.device);

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

    let metrics = Metrics::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("dino-io")
        .build()
        .context("starting the tokio runtime")?;
    let stop = Arc::new(AtomicBool::new(false));
    let addr = runtime.block_on(metrics::serve(&cfg.metrics, metrics.clone()))?;
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
    let pipeline = Pipeline::start(&cfg, source, start_cursor, epochs, &metrics, stop.clone());
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
            show_progress: opts.show_progress,
        },
        pipeline.batches.clone(),
    );
    let outcome = trainer
        .join()
        .map_err(|_| anyhow::anyhow!("the trainer thread panicked"))?;
    stop.store(true, Ordering::SeqCst);
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

    if let Some(knn_cfg) = &cfg.eval.knn {
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
                println!(
                    "k-NN accuracy (k={}, T={}): trained {:.2}%  untrained {:.2}%  raw pixels {:.2}%",
                    knn_cfg.k,
                    knn_cfg.temperature,
                    100.0 * trained,
                    100.0 * untrained,
                    100.0 * raw
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

/// Features of `[eval.knn]`'s bank and queries.
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
        Ok(knn::extract(
            opened,
            key,
            size,
            knn_cfg.batch_size,
            cfg.decode.max_pixels,
            embed,
        )?)
    };
    let (train, train_labels, s1) = extract(&knn_cfg.train, "eval.knn.train")?;
    let (test, test_labels, s2) = extract(&knn_cfg.test, "eval.knn.test")?;
    tracing::info!(
        bank = train.size()[0],
        queries = test.size()[0],
        skipped = s1 + s2,
        seconds = format!("{:.1}", t.elapsed().as_secs_f64()),
        "k-NN features"
    );
    Ok(KnnFeatures {
        train,
        train_labels,
        test,
        test_labels,
    })
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
