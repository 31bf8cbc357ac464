//! The `dino-stream` binary: parses the command line, sets up logging, maps errors to exit
//! codes (2 for a bad configuration, 1 for anything else).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use dino_stream::cli::{BenchCommand, CacheCommand, Cli, Command, EvalCommand, PipelineArgs};
use dino_stream::config::{self, ConfigError, LoadOptions, LoadedConfig};

/// mimalloc instead of glibc's malloc: fast_image_resize allocates one coefficient vector per
/// output column on every resize (thousands per image), and glibc's malloc/free pairs cost
/// several percent of augment time; mimalloc's thread-local free lists make them cheap.
/// libtorch keeps its own allocator, and no buffer crosses between the two.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    passive_openmp();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DINO_STREAM_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(cfg_err) = err.downcast_ref::<ConfigError>() {
                eprintln!("invalid configuration:\n{cfg_err}");
                return ExitCode::from(2);
            }
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// libtorch's OpenMP threads spin while they wait for work. On a small machine the trainer
/// shares its cores with the decode and augment workers, and spinning threads starve them
/// (measured: a step 3x slower under load). libgomp reads `OMP_WAIT_POLICY` when it is loaded,
/// before `main`, so when the user has not chosen a policy we set PASSIVE and re-exec once.
fn passive_openmp() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("OMP_WAIT_POLICY").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .exec();
    eprintln!("warning: could not re-exec with OMP_WAIT_POLICY=PASSIVE: {err}");
}

fn load(args: &PipelineArgs) -> Result<LoadedConfig, ConfigError> {
    config::load(
        &args.pipeline,
        &LoadOptions {
            sets: args.sets.clone(),
            use_env: true,
            defaults_dir: std::env::current_dir().ok(),
        },
    )
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            pipeline,
            max_steps,
            resume,
            no_progress,
        } => {
            let loaded = load(&pipeline)?;
            dino_stream::run::run(
                loaded,
                dino_stream::run::RunOptions {
                    max_steps,
                    resume,
                    show_progress: !no_progress,
                },
            )
        }
        Command::Validate { pipeline, print } => {
            let loaded = load(&pipeline)?;
            if print {
                println!("{}", loaded.config.to_toml());
            }
            println!("{}: ok", pipeline.pipeline.display());
            Ok(())
        }
        Command::Cache(CacheCommand::Build { pipeline, out }) => {
            let loaded = load(&pipeline)?;
            let out = out
                .or(loaded.config.cache.dir.clone())
                .context("give --out DIR (or set cache.dir)")?;
            dino_stream::commands::cache_build(&loaded.config, &out)
        }
        Command::Cache(CacheCommand::Verify { dir }) => dino_stream::commands::cache_verify(&dir),
        Command::Eval(EvalCommand::Knn {
            pipeline,
            checkpoint,
            untrained,
            k,
            raw_pixels,
        }) => {
            let loaded = load(&pipeline)?;
            dino_stream::commands::eval_knn(
                &loaded.config,
                checkpoint.as_deref(),
                untrained,
                &k,
                raw_pixels,
            )
        }
        Command::Eval(EvalCommand::Linear {
            pipeline,
            checkpoint,
            untrained,
            raw_pixels,
        }) => {
            let loaded = load(&pipeline)?;
            dino_stream::commands_eval::eval_linear(
                &loaded.config,
                checkpoint.as_deref(),
                untrained,
                raw_pixels,
            )
        }
        Command::Attention(a) => {
            dino_stream::commands_eval::attention(dino_stream::commands_eval::AttentionArgs {
                checkpoint: a.checkpoint,
                images: a.images,
                out: a.out,
                size: a.size,
                threshold: a.threshold,
                queries: a.queries,
                pca: a.pca,
                student: a.student,
                heads: a.heads,
                random_init: a.random_init,
                zoom: a.zoom,
            })
        }
        Command::Composite {
            fashion_mnist,
            test_split,
            backgrounds,
            count,
            size,
            seed,
            out,
        } => dino_stream::commands_eval::composite(
            dino_stream::eval::composite::CompositeSpec {
                fashion_mnist,
                split: if test_split {
                    dino_stream::source::IdxSplit::Test
                } else {
                    dino_stream::source::IdxSplit::Train
                },
                backgrounds,
                count,
                size,
                seed,
            },
            &out,
        ),
        Command::Eval(EvalCommand::Segment {
            data,
            checkpoint,
            supervised,
            limit,
            threshold,
        }) => dino_stream::commands_eval::eval_segment(
            &data,
            &checkpoint,
            supervised.as_deref(),
            limit,
            threshold,
        ),
        Command::Report { run_dir, out } => dino_stream::commands_eval::report(&run_dir, out),
        Command::Export { checkpoint, out } => dino_stream::commands::export(&checkpoint, &out),
        Command::Bench(BenchCommand::Pipeline { pipeline, seconds }) => {
            let loaded = load(&pipeline)?;
            dino_stream::bench::pipeline(&loaded.config, seconds)
        }
        Command::Bench(BenchCommand::Train {
            pipeline,
            steps,
            warmup,
        }) => {
            let loaded = load(&pipeline)?;
            dino_stream::bench::train(&loaded.config, steps, warmup)
        }
    }
}
