//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "dino-stream",
    version,
    about = "Train DINO self-supervised vision models with a streaming dataflow",
    after_help = "Examples:
  dino-stream run pipelines/quickstart.toml
  dino-stream run pipelines/imagenet.toml --set source.path=/data/imagenet/train --set train.batch_size=128
  dino-stream run pipelines/imagenet.toml --set source.path=/data/my-images --no-eval
  dino-stream run pipelines/quickstart.toml --resume --max-steps 2000
  dino-stream validate pipelines/video.toml --set source.path=/data/my-videos
  dino-stream cache build pipelines/imagenet.toml --out /data/imagenet-cache
  dino-stream eval knn pipelines/quickstart.toml
  dino-stream eval knn --checkpoint runs/quickstart --train /data/pets/train --test /data/pets/val
  dino-stream export runs/quickstart --out backbone.safetensors
  dino-stream eval knn pipelines/quickstart.toml --k 10,20,100,200
  dino-stream eval linear pipelines/quickstart.toml
  dino-stream attention runs/quickstart photo.jpg --out maps --query 2,1 --pca
  dino-stream attention dino_vits16_pretrain.pth photo.jpg --out maps --size 480
  dino-stream report runs/quickstart
  dino-stream bench pipeline pipelines/imagenet.toml --seconds 20
  dino-stream config

Configuration layers, lowest first: built-in defaults, config/default.toml (built into the
binary), the pipeline file, DINO_STREAM__SECTION__KEY environment variables, then
--set section.key=value. `dino-stream config` lists every key with its default; main_dino.py's
flags are keys too (--epochs 100 is --set train.epochs=100; see docs/CONFIG.md)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The pipeline file and the overrides every pipeline command takes.
#[derive(Args, Debug, Clone)]
pub struct PipelineArgs {
    /// Pipeline TOML file.
    pub pipeline: PathBuf,
    /// Override a key, e.g. `--set train.base_lr=1e-4` (repeatable; TOML values, bare strings
    /// allowed; `dino-stream config` lists the keys).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train: stream the source through decode and augment into the trainer.
    Run {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Stop after this many steps in all (the schedules still span the whole plan).
        #[arg(long)]
        max_steps: Option<u64>,
        /// Continue from the latest checkpoint in checkpoint.dir, at the exact next batch.
        #[arg(long)]
        resume: bool,
        /// Start over in a checkpoint.dir that holds a run: the old run is moved to DIR.old-N.
        #[arg(long, conflicts_with = "resume")]
        restart: bool,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
        /// Skip the k-NN evaluation after training (as `--set eval.knn.enabled=false`).
        #[arg(long)]
        no_eval: bool,
        /// With --resume: let `--set train.*`/`augment.*` keys differ from the checkpoint's
        /// configuration (otherwise the checkpoint's configuration decides, and a conflicting
        /// --set is an error).
        #[arg(long, requires = "resume")]
        allow_config_change: bool,
    },
    /// Check a pipeline file (and overrides) without training: every key, every source the
    /// run would read (opened and listed), the device and the precision.
    Validate {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Print the resolved configuration (unset optional keys as comments).
        #[arg(long)]
        print: bool,
    },
    /// List every configuration key with its default and what it does.
    Config,
    /// Shard cache of decoded images.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Evaluate features.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Write the teacher backbone of a checkpoint with timm/DINO key names, the model's
    /// description in the file's header, and print the Python that loads it.
    Export {
        /// Checkpoint directory (…/step-NNNNNNNNN), or a run directory (its newest checkpoint).
        checkpoint: PathBuf,
        /// Output .safetensors file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Measure throughput.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Self-attention maps of the last block as PNGs: per head from the CLS token, the mask
    /// keeping --threshold of the mass, an overlay, per-query-patch maps, optional PCA.
    Attention(AttentionArgs),
    /// Build the composite segmentation set: Fashion-MNIST garments pasted onto photographs
    /// (mask = the garment's pixels, label = its class), deterministic from --seed.
    Composite {
        /// Directory of the Fashion-MNIST IDX files.
        #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
        fashion_mnist: PathBuf,
        /// Use the `t10k` files instead of the training files.
        #[arg(long)]
        test_split: bool,
        /// Directory of background photographs (PNG/JPEG), e.g. scikit-image's data folder.
        #[arg(long)]
        backgrounds: PathBuf,
        #[arg(long, default_value_t = 500)]
        count: usize,
        /// Side of the square images.
        #[arg(long, default_value_t = 96)]
        size: u32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// A garment's side as a share of the image side: MIN,MAX (drawn uniformly).
        #[arg(long, value_delimiter = ',', default_values_t = crate::eval::composite::GARMENT_SCALE)]
        garment_scale: Vec<f64>,
        /// Output directory (images/class_K/*.png, masks/*.png, index.csv).
        #[arg(long)]
        out: PathBuf,
    },
    /// A PNG of a run's curves (loss, schedules, entropy/KL, online k-NN) from train_log.jsonl.
    Report {
        /// Run directory (checkpoint.dir).
        run_dir: PathBuf,
        /// Output PNG (default: RUN_DIR/report.png).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `attention`
#[derive(Args, Debug)]
pub struct AttentionArgs {
    /// A checkpoint or run directory, or a weights file (official DINO .pth, timm .pth or
    /// .safetensors, `dino-stream export` output).
    pub checkpoint: PathBuf,
    /// Images to draw the maps of.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Shorter side of the network input (default: the size the model was trained at).
    #[arg(long)]
    pub size: Option<u32>,
    /// Share of each head's attention mass the masks keep.
    #[arg(long, default_value_t = 0.6)]
    pub threshold: f64,
    /// A query patch as COLUMN,ROW: its attention to every patch, per head (repeatable).
    #[arg(long = "query", value_name = "X,Y")]
    pub queries: Vec<String>,
    /// Also draw the first three principal components of the patch features as RGB.
    #[arg(long)]
    pub pca: bool,
    /// The student of a DINO checkpoint instead of the teacher.
    #[arg(long)]
    pub student: bool,
    /// Attention heads of an imported ViT (default: width / 64).
    #[arg(long)]
    pub heads: Option<i64>,
    /// The same network freshly initialised with this seed (the untrained baseline).
    #[arg(long, value_name = "SEED")]
    pub random_init: Option<u64>,
    /// Enlarge every picture by this factor (default: to at least 224 pixels).
    #[arg(long)]
    pub zoom: Option<u32>,
}

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Decode the pipeline's source into shards (resumes an interrupted build).
    Build {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Output directory (default: cache.dir).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check every shard and record checksum.
    Verify {
        /// Cache directory.
        dir: PathBuf,
    },
    /// Print a cache's records, bytes, encoding, source and build settings.
    Info {
        /// Cache directory.
        dir: PathBuf,
    },
    /// Write the cache as WebDataset tar shards (`KEY.jpg` or `KEY.png`, `KEY.cls`).
    Export {
        /// Cache directory.
        dir: PathBuf,
        /// Output directory for `shard-NNNNNN.tar` files.
        #[arg(long)]
        webdataset: PathBuf,
        /// Records per tar file.
        #[arg(long, default_value_t = 10_000)]
        per_tar: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Weighted k-NN accuracy of teacher features on [eval.knn] (or --train/--test folders).
    /// The model is the checkpoint's own; no --set model.* is needed.
    Knn {
        /// Pipeline TOML file (optional with --checkpoint: its saved configuration is used).
        pipeline: Option<PathBuf>,
        /// Override a key, e.g. `--set eval.knn.k=200` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Checkpoint or run directory (default: the latest in checkpoint.dir).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Labelled image folder (root/class/*.jpg) for the feature bank.
        #[arg(long, value_name = "DIR", requires = "test")]
        train: Option<PathBuf>,
        /// Labelled image folder to classify; classes are matched to the bank's by name.
        #[arg(long, value_name = "DIR", requires = "train")]
        test: Option<PathBuf>,
        /// Evaluate the untrained (freshly initialised) network instead.
        #[arg(long)]
        untrained: bool,
        /// Neighbour counts to report, e.g. `--k 10,20,100,200` as DINO's eval_knn.py
        /// (default: eval.knn.k).
        #[arg(long, value_delimiter = ',')]
        k: Vec<usize>,
        /// Classify raw pixels of the evaluation view instead (the baseline).
        #[arg(long)]
        raw_pixels: bool,
    },
    /// Zero-shot segmentation: Jaccard of each head's 60%-mass attention mask against the masks
    /// of a composite set, for the model, the same network at random init and a centred disc.
    Segment {
        /// A set made by `dino-stream composite`.
        data: PathBuf,
        /// Checkpoint or run directory, or a weights file.
        checkpoint: PathBuf,
        /// A supervised ViT to compare with (weights file or checkpoint).
        #[arg(long)]
        supervised: Option<PathBuf>,
        /// Attention heads of the --supervised ViT when it is an imported weights file (a state
        /// dict does not record them; default width / 64).
        #[arg(long)]
        supervised_heads: Option<i64>,
        /// Use only the first N samples.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, default_value_t = 0.6)]
        threshold: f64,
    },
    /// The linear protocol on frozen features ([eval.linear]; sources default to [eval.knn]'s).
    Linear {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Checkpoint or run directory, or a weights file (default: checkpoint.dir).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The same network freshly initialised (seed train.seed).
        #[arg(long)]
        untrained: bool,
        /// A linear classifier on the raw pixels of the evaluation view (the baseline).
        #[arg(long)]
        raw_pixels: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// The data pipeline without a trainer: images/s overall, per stage, and decode-only.
    Pipeline {
        #[command(flatten)]
        pipeline: PipelineArgs,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// Training steps on synthetic batches (no data pipeline): step time and images/s.
    Train {
        #[command(flatten)]
        pipeline: PipelineArgs,
        #[arg(long, default_value_t = 20)]
        steps: u64,
        #[arg(long, default_value_t = 3)]
        warmup: u64,
    },
}
