//! The smaller subcommands: cache build/verify/info/export, k-NN evaluation, export.

use std::path::Path;

use anyhow::{bail, Context};

use crate::cache;
use crate::checkpoint;
use crate::config::{LoadedConfig, PipelineConfig};
use crate::decode::decode_image;
use crate::source::Payload;

/// `cache build`: decodes the pipeline's source into shards under `out`, which it locks (a
/// second build into the same directory fails at once, naming this one's PID).
pub fn cache_build(cfg: &PipelineConfig, out: &Path) -> anyhow::Result<()> {
    let _lock = crate::rundir::DirLock::acquire(out)?;
    let source = cfg.source.open().context("opening [source]")?;
    let max_pixels = cfg.decode.max_pixels;
    let bar = crate::progress::bar(&format!("cache {}", out.display()));
    bar.set_length(source.epoch_len().unwrap_or(0));
    let decode = |p: Payload| match p {
        Payload::Decoded(f) => Ok(f),
        Payload::Encoded(bytes) => decode_image(&bytes, max_pixels).map_err(|e| e.to_string()),
    };
    let mut on_skip = |what: &str, why: &str| tracing::warn!("skipped {what}: {why}");
    let is_stream = matches!(source, crate::source::OpenedSource::Stream(_));
    let options = cache::BuildOptions {
        settings: cache::BuildSettings {
            records: cfg.cache.record_settings(),
            shard_bytes: cfg.cache.shard_bytes,
            source: serde_json::to_value(&cfg.source).context("recording [source]")?,
            seed: is_stream.then_some(cfg.train.seed),
            max_pixels,
        },
        workers: cfg.cache.workers,
        seed: cfg.train.seed,
        max_pixels,
    };
    let t = std::time::Instant::now();
    let report = cache::build(source, out, &options, &decode, &mut on_skip, &|n| {
        bar.set_position(n)
    })?;
    bar.finish_and_clear();
    println!(
        "cache {}: {} images written, {} skipped, {} shards{} in {:.1}s",
        out.display(),
        report.written,
        report.skipped,
        report.shards,
        if report.resumed_from > 0 {
            format!(", resumed after {} samples", report.resumed_from)
        } else {
            String::new()
        },
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cache info`: what a cache holds and how it was built.
pub fn cache_info(dir: &Path) -> anyhow::Result<()> {
    check_cache_dir(dir)?;
    print!("{}", cache::info(dir)?);
    Ok(())
}

/// `cache export --webdataset OUT`: the cache as WebDataset tar shards.
pub fn cache_export(dir: &Path, webdataset: &Path, per_tar: u64) -> anyhow::Result<()> {
    check_cache_dir(dir)?;
    let bar = crate::progress::bar(&format!("export {}", webdataset.display()));
    bar.set_length(cache::info(dir)?.records());
    let report = cache::export_webdataset(dir, webdataset, per_tar, &|n| bar.set_position(n))?;
    bar.finish_and_clear();
    println!(
        "{}: {} records in {} tar files, {} bytes",
        webdataset.display(),
        report.records,
        report.tars,
        report.bytes
    );
    Ok(())
}

fn check_cache_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!("{}: no such directory", dir.display());
    }
    if !dir.join(cache::MANIFEST).is_file() {
        bail!(
            "{} is not a shard cache: it has no {} (make one with `dino-stream cache build PIPELINE --out DIR`)",
            dir.display(),
            cache::MANIFEST
        );
    }
    Ok(())
}

/// `cache verify`: exits non-zero when any shard or record is damaged.
pub fn cache_verify(dir: &Path) -> anyhow::Result<()> {
    check_cache_dir(dir)?;
    let report = cache::verify(dir)?;
    for p in &report.problems {
        println!("{p}");
    }
    println!(
        "{}: {} shards, {} records, {} problems",
        dir.display(),
        report.shards,
        report.records,
        report.problems.len()
    );
    if !report.problems.is_empty() {
        bail!("cache {} is damaged", dir.display());
    }
    Ok(())
}

/// `eval knn`: for each k in `ks` (default: the configured k), of a checkpoint or run
/// directory (its own configuration builds the model, see `recipe`), a weights file, the
/// untrained network, or raw pixels; the pipeline (or the checkpoint's configuration) names the
/// labelled sources.
pub fn eval_knn(
    loaded: &LoadedConfig,
    checkpoint_path: Option<&Path>,
    untrained: bool,
    ks: &[usize],
    raw_pixels: bool,
) -> anyhow::Result<()> {
    let mut cfg = loaded.config.clone();
    let weights_file = checkpoint_path.filter(|p| p.is_file());
    let found = if untrained || raw_pixels || weights_file.is_some() {
        None
    } else {
        let dir = match checkpoint_path {
            Some(p) => checkpoint::find(p)?,
            None => checkpoint::find(&cfg.checkpoint.dir)?,
        };
        let meta = checkpoint::load_meta(&dir)?;
        let saved = crate::recipe::saved_config(&dir, &meta)?;
        for note in crate::recipe::adopt(
            &mut cfg,
            &saved,
            &loaded.explicit_keys,
            &dir,
            crate::recipe::Use::Eval,
        )? {
            tracing::info!("eval: {note}");
        }
        Some(dir)
    };
    crate::run::configure_torch(&cfg);
    let knn = cfg
        .eval
        .knn
        .as_ref()
        .context("the pipeline has no [eval.knn] section (or give --train DIR --test DIR)")?;
    crate::preflight::device(&cfg.train)
        .map_err(|p| crate::config::ConfigError::Invalid(p.to_string()))?;
    let ks = if ks.is_empty() {
        vec![knn.k]
    } else {
        ks.to_vec()
    };
    let (feats, what) = if raw_pixels {
        (
            crate::run::knn_features(&cfg, &crate::commands_eval::pixels)?,
            "raw pixels".to_string(),
        )
    } else if let Some(path) = weights_file {
        let model = crate::eval::loader::FeatureModel::open(path, Default::default())?;
        let model = if untrained {
            model.random_twin(cfg.train.seed)
        } else {
            model
        };
        (
            crate::run::knn_features(&cfg, &|x| model.features(x))?,
            model.description.clone(),
        )
    } else {
        let (engine, what) = match found {
            None => {
                let source = cfg.source.open().context("opening [source]")?;
                let plan = crate::run::plan_for(&cfg, &source)?;
                let device = crate::train::engine::select_device(cfg.train.device);
                (
                    crate::train::engine::Engine::new(
                        &cfg.model,
                        &cfg.train,
                        &cfg.augment,
                        plan,
                        device,
                    )?,
                    "untrained".to_string(),
                )
            }
            Some(dir) => {
                let (engine, dir) = crate::run::engine_from_checkpoint(&cfg, Some(&dir))?;
                (engine, dir.display().to_string())
            }
        };
        (
            crate::run::knn_features(&cfg, &|x| engine.teacher_features(x))?,
            what,
        )
    };
    for k in ks {
        let acc = crate::eval::knn::accuracy(
            &feats.train,
            &feats.train_labels,
            &feats.test,
            &feats.test_labels,
            k,
            knn.temperature,
        );
        println!(
            "k-NN accuracy (k={k}, T={}) of {what}: {:.2}%",
            knn.temperature,
            100.0 * acc
        );
    }
    Ok(())
}

/// `export`: the teacher backbone of a checkpoint (or of a run directory's newest), with
/// timm's key names and the model's description in the safetensors header; prints the Python
/// that loads it.
pub fn export(checkpoint_path: &Path, out: &Path) -> anyhow::Result<()> {
    let checkpoint_dir = checkpoint::find(checkpoint_path)?;
    let meta = checkpoint::load_meta(&checkpoint_dir)?;
    let saved = crate::recipe::saved_config(&checkpoint_dir, &meta)?;
    let tensors = checkpoint::load_tensors(&checkpoint_dir)?;
    let described = crate::train::export::describe(&saved, meta.step);
    crate::train::export::export_backbone_with_metadata(&tensors, out, &described.metadata)
        .with_context(|| {
            format!(
                "exporting {} to {}",
                checkpoint_dir.display(),
                out.display()
            )
        })?;
    println!(
        "wrote the teacher backbone of {} to {}\nload it in Python with:\n{}",
        checkpoint_dir.display(),
        out.display(),
        described.python(out)
    );
    Ok(())
}
