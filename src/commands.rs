//! The smaller subcommands: cache build/verify, k-NN evaluation, export.

use std::path::Path;

use anyhow::{bail, Context};

use crate::cache;
use crate::checkpoint;
use crate::config::PipelineConfig;
use crate::decode::decode_image;
use crate::source::Payload;

/// `cache build`: decodes the pipeline's source into shards under `out`.
pub fn cache_build(cfg: &PipelineConfig, out: &Path) -> anyhow::Result<()> {
    let source = cfg.source.open().context("opening [source]")?;
    let max_pixels = cfg.decode.max_pixels;
    let decode = |p: Payload| match p {
        Payload::Decoded(f) => Ok(f),
        Payload::Encoded(bytes) => decode_image(&bytes, max_pixels).map_err(|e| e.to_string()),
    };
    let mut on_skip = |what: &str, why: &str| tracing::warn!("skipped {what}: {why}");
    let t = std::time::Instant::now();
    let report = cache::build(source, out, cfg.cache.shard_bytes, &decode, &mut on_skip)?;
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

/// `cache verify`: exits non-zero when any shard or record is damaged.
pub fn cache_verify(dir: &Path) -> anyhow::Result<()> {
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
/// directory, a weights file, the untrained network, or raw pixels.
pub fn eval_knn(
    cfg: &PipelineConfig,
    checkpoint_dir: Option<&Path>,
    untrained: bool,
    ks: &[usize],
    raw_pixels: bool,
) -> anyhow::Result<()> {
    crate::run::configure_torch(cfg);
    let knn = cfg
        .eval
        .knn
        .as_ref()
        .context("the pipeline has no [eval.knn] section")?;
    let ks = if ks.is_empty() {
        vec![knn.k]
    } else {
        ks.to_vec()
    };
    let (feats, what) = if raw_pixels {
        (
            crate::run::knn_features(cfg, &crate::commands_eval::pixels)?,
            "raw pixels".to_string(),
        )
    } else if checkpoint_dir.is_some_and(|p| p.is_file()) {
        let path = checkpoint_dir.expect("checked");
        let model = crate::eval::loader::FeatureModel::open(path, Default::default())?;
        let model = if untrained {
            model.random_twin(cfg.train.seed)
        } else {
            model
        };
        (
            crate::run::knn_features(cfg, &|x| model.features(x))?,
            model.description.clone(),
        )
    } else {
        let (engine, what) = if untrained {
            let source = cfg.source.open().context("opening [source]")?;
            let plan = crate::run::plan_for(cfg, &source)?;
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
        } else {
            let (engine, dir) = crate::run::engine_from_checkpoint(cfg, checkpoint_dir)?;
            (engine, dir.display().to_string())
        };
        (
            crate::run::knn_features(cfg, &|x| engine.teacher_features(x))?,
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

/// `export`: the teacher backbone of a checkpoint, with timm's key names.
pub fn export(checkpoint_dir: &Path, out: &Path) -> anyhow::Result<()> {
    checkpoint::load_meta(checkpoint_dir)?;
    let tensors = checkpoint::load_tensors(checkpoint_dir)?;
    crate::train::export::export_backbone(&tensors, out).with_context(|| {
        format!(
            "exporting {} to {}",
            checkpoint_dir.display(),
            out.display()
        )
    })?;
    println!(
        "wrote the teacher backbone of {} to {}",
        checkpoint_dir.display(),
        out.display()
    );
    Ok(())
}
