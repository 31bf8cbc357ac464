//! The edge of the evaluation and picture subcommands: `attention`, `eval linear`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::config::PipelineConfig;
use crate::decode::decode_image;
use crate::eval::linear::{self, LinearMode};
use crate::eval::loader::{FeatureModel, OpenOptions};
use crate::viz::attention;
use crate::weights::Which;

/// `composite --out DIR ...`
pub fn composite(spec: crate::eval::composite::CompositeSpec, out: &Path) -> anyhow::Result<()> {
    let n = crate::eval::composite::build(&spec, out)?;
    println!("{}: {n} composites of {}px", out.display(), spec.size);
    Ok(())
}

/// `eval segment DATA CHECKPOINT`: the Jaccard table.
pub fn eval_segment(
    data: &Path,
    checkpoint: &Path,
    supervised: Option<&Path>,
    supervised_heads: Option<i64>,
    limit: Option<usize>,
    threshold: f64,
) -> anyhow::Result<()> {
    use crate::eval::segment;
    let set = segment::read_set(data, limit)?;
    let model = open_model(checkpoint, false, None, None)?;
    let random = model.random_twin(0);
    let mut rows = vec![
        ("trained", segment::score(&model, &set, threshold)?),
        ("random init", segment::score(&random, &set, threshold)?),
    ];
    if let Some(s) = supervised {
        let sup = open_model(s, false, supervised_heads, None)?;
        rows.push(("supervised", segment::score(&sup, &set, threshold)?));
    }
    println!(
        "Jaccard on {} images of {} ({}% of attention mass kept), model {}",
        set.len(),
        data.display(),
        100.0 * threshold,
        model.description
    );
    println!(
        "{:<14} {:>9} {:>14}  per head",
        "", "best head", "mean of heads"
    );
    for (name, s) in &rows {
        let (h, best) = s.best();
        let heads: Vec<String> = s.per_head.iter().map(|v| format!("{v:.3}")).collect();
        println!(
            "{name:<14} {best:>6.3} (h{h}) {:>11.3}  [{}]",
            s.mean(),
            heads.join(" ")
        );
    }
    println!(
        "{:<14} {:>9.3}",
        "centred disc",
        segment::disc_baseline(&set)
    );
    Ok(())
}

/// `report RUN_DIR [--out PNG]`
pub fn report(run_dir: &Path, out: Option<PathBuf>) -> anyhow::Result<()> {
    let out = out.unwrap_or_else(|| run_dir.join("report.png"));
    let steps = crate::viz::report::write(run_dir, &out)?;
    println!("{}: {steps} steps drawn", out.display());
    Ok(())
}

/// Arguments of `attention`.
pub struct AttentionArgs {
    pub checkpoint: PathBuf,
    pub images: Vec<PathBuf>,
    pub out: PathBuf,
    pub size: Option<u32>,
    pub threshold: f64,
    pub queries: Vec<String>,
    pub pca: bool,
    pub student: bool,
    pub heads: Option<i64>,
    pub random_init: Option<u64>,
    pub zoom: Option<u32>,
}

fn parse_query(q: &str) -> anyhow::Result<(usize, usize)> {
    let (x, y) = q
        .split_once(',')
        .with_context(|| format!("--query {q:?}: expected X,Y (patch column, row)"))?;
    Ok((
        x.trim()
            .parse()
            .with_context(|| format!("--query {q:?}: bad column"))?,
        y.trim()
            .parse()
            .with_context(|| format!("--query {q:?}: bad row"))?,
    ))
}

fn open_model(
    path: &Path,
    student: bool,
    heads: Option<i64>,
    random_init: Option<u64>,
) -> anyhow::Result<FeatureModel> {
    let model = FeatureModel::open(
        path,
        OpenOptions {
            which: if student {
                Which::Student
            } else {
                Which::Teacher
            },
            heads,
            device: tch::Device::cuda_if_available(),
        },
    )
    .with_context(|| format!("loading {}", path.display()))?;
    Ok(match random_init {
        Some(seed) => model.random_twin(seed),
        None => model,
    })
}

/// `attention CHECKPOINT IMAGE... --out DIR`
pub fn attention(args: AttentionArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.threshold) || args.threshold == 0.0 {
        bail!("--threshold must be in (0, 1], got {}", args.threshold);
    }
    let queries = args
        .queries
        .iter()
        .map(|q| parse_query(q))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let model = open_model(&args.checkpoint, args.student, args.heads, args.random_init)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let opts = attention::Options {
        size: args.size,
        threshold: args.threshold,
        queries,
        pca: args.pca,
        zoom: args.zoom,
    };
    println!("model: {}", model.description);
    for path in &args.images {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let frame = decode_image(&bytes, 1 << 28)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let files = attention::render(&model, &frame, &stem, &args.out, &opts)
            .with_context(|| format!("attention maps of {}", path.display()))?;
        println!(
            "{}: {} pictures in {}",
            path.display(),
            files.len(),
            args.out.display()
        );
    }
    Ok(())
}

/// `eval linear PIPELINE`: the linear protocol on `[eval.linear]` (sources default to
/// `[eval.knn]`'s), for a checkpoint, a weights file, the untrained network or raw pixels.
pub fn eval_linear(
    cfg: &PipelineConfig,
    checkpoint: Option<&Path>,
    untrained: bool,
    raw_pixels: bool,
) -> anyhow::Result<()> {
    crate::run::configure_torch(cfg);
    let lin = cfg.eval.linear.clone().unwrap_or_default();
    let knn = cfg.eval.knn.as_ref();
    let train_src = lin
        .train
        .clone()
        .or_else(|| knn.map(|k| k.train.clone()))
        .context("no [eval.linear.train] (nor [eval.knn.train]) source")?;
    let test_src = lin
        .test
        .clone()
        .or_else(|| knn.map(|k| k.test.clone()))
        .context("no [eval.linear.test] (nor [eval.knn.test]) source")?;
    let size = lin.image_size.unwrap_or(cfg.augment.global_size);
    let run_dir = cfg.checkpoint.dir.clone();
    let path = checkpoint.map(Path::to_path_buf).unwrap_or(run_dir);
    let model = if raw_pixels {
        None
    } else {
        let m = open_model(&path, false, None, None)?;
        Some(if untrained {
            m.random_twin(cfg.train.seed)
        } else {
            m
        })
    };
    let what = match &model {
        None => "raw pixels".to_string(),
        Some(m) => m.description.clone(),
    };
    let embed = |x: &tch::Tensor| -> tch::Tensor {
        match &model {
            None => pixels(x),
            Some(m) => protocol_features(m, x, &lin),
        }
    };
    let t = std::time::Instant::now();
    let test = extract(&test_src, "eval.linear.test", size, cfg, &embed)?;
    let (classifier, classes, tx, ty) = match lin.mode {
        LinearMode::Features => {
            let train = extract(&train_src, "eval.linear.train", size, cfg, &embed)?;
            // Labels numbered by class name on both sides (a test class the training set
            // lacks gets a number no logit has: a miss).
            let aligned = crate::eval::knn::align(
                &train.classes,
                &test.classes,
                "eval.linear.train",
                "eval.linear.test",
            )?;
            let fy = aligned.bank_labels;
            let classes = fy
                .max()
                .int64_value(&[])
                .max(aligned.query_labels.max().int64_value(&[]))
                + 1;
            let clf = linear::train_on_features(&train.features, &fy, classes, &lin);
            (clf, classes, test.features, aligned.query_labels)
        }
        LinearMode::Augment => {
            let (clf, classes) = train_augmented(&train_src, size, cfg, &lin, &embed)?;
            // The training labels are the training folder's class positions: number the test
            // rows by the same names.
            let names = class_names(&train_src)?;
            let ty: Vec<i64> = test
                .classes
                .iter()
                .map(|c| {
                    names
                        .iter()
                        .position(|n| n == c)
                        .map_or(classes, |i| i as i64)
                })
                .collect();
            (clf, classes, test.features, tch::Tensor::from_slice(&ty))
        }
    };
    let logits = tch::no_grad(|| classifier.logits(&tx));
    if logits.size()[1] < classes {
        bail!("the test set has labels the training set lacks");
    }
    let (top1, top5) = linear::topk_accuracy(&logits, &ty);
    // What the classifier read: n_last_blocks only shapes a ViT's features.
    let readout = match &model {
        None => "pixels".to_string(),
        Some(m) if m.vit().is_ok() => format!(
            "{} last blocks{}",
            lin.n_last_blocks,
            if lin.avgpool_patchtokens {
                " + avgpool"
            } else {
                ""
            }
        ),
        Some(_) => "backbone features".to_string(),
    };
    println!(
        "linear probe ({:?} mode, {} epochs, {readout}) of {what}: top-1 {:.2}%  top-5 {:.2}%  ({:.0}s)",
        lin.mode,
        lin.epochs,
        100.0 * top1,
        100.0 * top5,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Raw-pixel features: the normalised evaluation view, flattened (the baseline).
pub fn pixels(nhwc_u8: &tch::Tensor) -> tch::Tensor {
    let n = nhwc_u8.size()[0];
    (nhwc_u8.to_kind(tch::Kind::Float) / 255.0).reshape([n, -1])
}

/// The protocol's features of u8 images (fp32 on the CPU).
pub fn protocol_features(
    model: &FeatureModel,
    nhwc_u8: &tch::Tensor,
    lin: &linear::LinearConfig,
) -> tch::Tensor {
    match model.vit() {
        Ok(vit) => {
            let x = model.normalize(nhwc_u8);
            tch::no_grad(|| {
                let layers = vit.intermediate_layers(&x, lin.n_last_blocks);
                linear::vit_features(&layers, lin.avgpool_patchtokens)
            })
            .to_kind(tch::Kind::Float)
            .to_device(tch::Device::Cpu)
        }
        Err(_) => model.features(nhwc_u8),
    }
}

/// The class names of a labelled source, by label.
fn class_names(src: &crate::source::SourceConfig) -> anyhow::Result<Vec<std::sync::Arc<str>>> {
    let crate::source::OpenedSource::Indexed(s) = src.open()? else {
        bail!("the linear protocol needs an indexed, labelled source");
    };
    let n = s
        .num_classes()
        .context("the training source has no labels")?;
    Ok((0..n).map(|c| s.class_name(c).into()).collect())
}

fn extract(
    src: &crate::source::SourceConfig,
    key: &str,
    size: u32,
    cfg: &PipelineConfig,
    embed: &dyn Fn(&tch::Tensor) -> tch::Tensor,
) -> anyhow::Result<crate::eval::knn::Labelled> {
    let opened = src.open().with_context(|| format!("opening [{key}]"))?;
    let bar = crate::progress::bar(&format!("features of {key}"));
    let out = crate::eval::knn::extract(opened, key, size, 256, &cfg.decode, embed, &bar);
    bar.finish_and_clear();
    Ok(out?)
}

/// The official training loop: every epoch, each training image once, as a RandomResizedCrop
/// (scale 0.08–1, ratio 3/4–4/3, bicubic) with a horizontal flip at p = 0.5, through the frozen
/// backbone into one SGD step per batch. Crops are keyed by (seed, epoch, sample).
fn train_augmented(
    src: &crate::source::SourceConfig,
    size: u32,
    cfg: &PipelineConfig,
    lin: &linear::LinearConfig,
    embed: &dyn Fn(&tch::Tensor) -> tch::Tensor,
) -> anyhow::Result<(linear::Classifier, i64)> {
    use crate::augment::{hflip, random_resized_crop_params, resized_crop};
    use crate::rng::Rng;
    use crate::source::Payload;
    let crate::source::OpenedSource::Indexed(source) =
        src.open().context("opening [eval.linear.train]")?
    else {
        bail!("[eval.linear.train] must be a source of known length");
    };
    let classes = source
        .num_classes()
        .context("[eval.linear.train] has no labels")? as i64;
    let mut trainer: Option<linear::Trainer> = None;
    let mut skipped = 0u64;
    for epoch in 0..lin.epochs {
        let mut order: Vec<u64> = (0..source.len()).collect();
        Rng::keyed(&[lin.seed, epoch as u64, 0x11_4EA3]).shuffle(&mut order);
        for chunk in order.chunks(lin.batch_size) {
            let mut pixels = Vec::with_capacity(chunk.len() * (size * size * 3) as usize);
            let mut labels = Vec::with_capacity(chunk.len());
            for &id in chunk {
                let frame = match source.read(id) {
                    Ok(Payload::Decoded(f)) => Some(f),
                    Ok(Payload::Encoded(b)) => decode_image(&b, cfg.decode.max_pixels).ok(),
                    Err(_) => None,
                };
                let (Some(frame), Some(label)) = (frame, source.label(id)) else {
                    skipped += 1;
                    continue;
                };
                let mut rng = Rng::keyed(&[lin.seed, epoch as u64, id]);
                let rect = random_resized_crop_params(
                    &mut rng,
                    frame.width,
                    frame.height,
                    [0.08, 1.0],
                    [3.0 / 4.0, 4.0 / 3.0],
                );
                let Ok(mut view) = resized_crop(&frame, rect, size, size) else {
                    skipped += 1;
                    continue;
                };
                if rng.chance(0.5) {
                    hflip(&mut view, size);
                }
                pixels.extend_from_slice(&view);
                labels.push(label as i64);
            }
            if labels.is_empty() {
                continue;
            }
            let n = labels.len() as i64;
            let x = tch::Tensor::from_slice(&pixels).view([n, size as i64, size as i64, 3]);
            let feats = embed(&x);
            let t = trainer.get_or_insert_with(|| {
                linear::Trainer::new(
                    feats.size()[1],
                    classes,
                    lin.lr,
                    lin.batch_size,
                    lin.epochs,
                    lin.seed,
                )
            });
            let lr = t.lr_at(epoch);
            t.step(&feats, &tch::Tensor::from_slice(&labels), lr);
        }
        tracing::info!(epoch, skipped, "linear probe epoch done");
    }
    let trainer = trainer.context("no readable training samples")?;
    Ok((trainer.classifier, classes))
}
