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
  dino-stream run pipelines/quickstart.toml --resume --max-steps 2000
  dino-stream validate pipelines/video.toml
  dino-stream cache build pipelines/imagenet.toml --out /data/imagenet-cache
  dino-stream eval knn pipelines/quickstart.toml
  dino-stream export runs/quickstart/step-000001000 --out backbone.safetensors
  dino-stream bench pipeline pipelines/imagenet.toml --seconds 20

Configuration layers, lowest first: built-in defaults, config/default.toml, the pipeline file,
DINO_STREAM__SECTION__KEY environment variables, then --set section.key=value."
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
    /// Override a key, e.g. `--set train.lr=1e-4` (repeatable; TOML values, bare strings allowed).
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
    },
    /// Check a pipeline file (and overrides) without running anything.
    Validate {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Print the resolved configuration.
        #[arg(long)]
        print: bool,
    },
    /// Shard cache of decoded images.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Evaluate features.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Write the teacher backbone of a checkpoint with timm/DINO key names.
    Export {
        /// Checkpoint directory (…/step-NNNNNNNNN).
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
    /// Weighted k-NN accuracy of teacher features on [eval.knn].
    Knn {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Checkpoint directory (default: the latest in checkpoint.dir).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
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
