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
