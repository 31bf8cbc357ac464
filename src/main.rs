//! The `dino-stream` binary: parses the command line, sets up logging, maps errors to exit
//! codes (`dino_stream::exit`: 2 for a bad configuration, 3 interrupted, 4 stream ended early,
//! 1 for anything else).

use std::process::ExitCode;

use std::io::IsTerminal;
use std::path::Path;

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
    default_sigpipe();
    passive_openmp();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DINO_STREAM_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        // A failed log write would be reported with eprintln!, which panics when stderr is gone
        // (a closed terminal after SIGHUP): the logging thread, perhaps the trainer, would die
        // before its checkpoint. A lost log line is dropped instead.
        .log_internal_errors(false)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let hint = main_dino_hint(&err);
            let _ = err.print();
            if let Some(hint) = hint {
                eprintln!("\nhint: {hint}");
            }
            return ExitCode::from(err.exit_code() as u8);
        }
    };
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Fallible writes: a stderr that is gone (closed terminal after SIGHUP) must not
            // turn the exit code into a panic's.
            use std::io::Write;
            let mut stderr = std::io::stderr();
            if let Some(cfg_err) = err.downcast_ref::<ConfigError>() {
                let _ = writeln!(stderr, "invalid configuration:\n{cfg_err}");
                return ExitCode::from(dino_stream::exit::CONFIG);
            }
            if let Some(end) = err.downcast_ref::<dino_stream::exit::EarlyEnd>() {
                let _ = writeln!(stderr, "{end}");
                return ExitCode::from(end.code());
            }
            let _ = writeln!(stderr, "error: {}", render_chain(&err));
            ExitCode::from(dino_stream::exit::ERROR)
        }
    }
}

/// Rust ignores SIGPIPE, so `dino-stream ... | head` would panic in `println!` once `head`
/// exits; the default action ends the process quietly, like any Unix tool.
fn default_sigpipe() {
    extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
    }
    const SIGPIPE: i32 = 13;
    const SIG_DFL: usize = 0;
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    unsafe {
        signal(SIGPIPE, SIG_DFL);
    }
}

/// An error and its causes on one line, each cause once: an error that already quotes its
/// source (`path: No such file or directory`) is not followed by that source again.
fn render_chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// For an unknown argument that is a flag of the official main_dino.py (`--epochs 100`), the
/// `--set` that does its job.
fn main_dino_hint(err: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    if err.kind() != clap::error::ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    let args: Vec<String> = std::env::args().collect();
    let value = args
        .iter()
        .position(|a| a == arg)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    dino_stream::main_dino::hint(arg, value)
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

fn options(sets: &[String]) -> LoadOptions {
    LoadOptions {
        sets: sets.to_vec(),
        use_env: true,
        defaults_dir: None,
        builtin_defaults: true,
    }
}

fn load(args: &PipelineArgs) -> Result<LoadedConfig, ConfigError> {
    config::load(&args.pipeline, &options(&args.sets))
}

/// The configuration for `eval knn`: the pipeline file, or without one the configuration saved
/// in the checkpoint; `--train`/`--test` replace `[eval.knn]`'s sources by image folders.
fn load_for_eval(
    pipeline: Option<&Path>,
    sets: &[String],
    checkpoint: Option<&Path>,
    folders: Option<(&Path, &Path)>,
) -> anyhow::Result<LoadedConfig> {
    let mut sets = sets.to_vec();
    if let Some((train, test)) = folders {
        for (side, dir) in [("train", train), ("test", test)] {
            sets.push(format!("eval.knn.{side}.type=image_folder"));
            sets.push(format!("eval.knn.{side}.path={}", dir.display()));
        }
    }
    let mut loaded = match (pipeline, checkpoint) {
        (Some(p), _) => {
            // The file's own [eval.knn] sources give way to --train/--test whole (an `idx`
            // source's `split` key would not fit an image folder).
            if folders.is_some() {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                let mut table: toml::Table = text.parse().unwrap_or_default();
                if let Some(knn) = table
                    .get_mut("eval")
                    .and_then(|e| e.get_mut("knn"))
                    .and_then(|k| k.as_table_mut())
                {
                    knn.remove("train");
                    knn.remove("test");
                    config::load_text(p, &table.to_string(), &options(&sets))?
                } else {
                    config::load(p, &options(&sets))?
                }
            } else {
                config::load(p, &options(&sets))?
            }
        }
        (None, Some(c)) => {
            let dir = dino_stream::checkpoint::find(c)?;
            let meta = dino_stream::checkpoint::load_meta(&dir)?;
            let mut table: toml::Table = meta.config.parse().unwrap_or_default();
            if folders.is_some() {
                table.remove("eval");
            }
            // Checkpoints written before presets were resolved hold the default sizes next to
            // a preset; the preset decides, so drop them rather than report a conflict.
            if let Some(model) = table.get_mut("model").and_then(|m| m.as_table_mut()) {
                if model.get("arch").and_then(|a| a.as_str()) != Some("vit") {
                    for key in ["embed_dim", "depth", "heads"] {
                        model.remove(key);
                    }
                }
            }
            config::load_text(&dir.join("state.json"), &table.to_string(), &options(&sets))?
        }
        (None, None) => anyhow::bail!("give a pipeline file or --checkpoint DIR"),
    };
    loaded.explicit_keys.retain(|k| !k.starts_with("eval.knn."));
    Ok(loaded)
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            pipeline,
            max_steps,
            resume,
            restart,
            no_progress,
            no_eval,
            allow_config_change,
        } => {
            let mut loaded = load(&pipeline)?;
            if no_eval {
                if let Some(knn) = &mut loaded.config.eval.knn {
                    knn.enabled = false;
                }
            }
            dino_stream::run::run(
                loaded,
                dino_stream::run::RunOptions {
                    max_steps,
                    resume,
                    show_progress: !no_progress,
                    restart,
                    allow_config_change,
                },
            )
        }
        Command::Validate { pipeline, print } => {
            let loaded = load(&pipeline)?;
            dino_stream::preflight::check(&loaded.config, None, true)?;
            if print {
                println!("{}", config::reference::annotated_toml(&loaded.config));
            }
            println!("{}: ok", pipeline.pipeline.display());
            Ok(())
        }
        Command::Config => {
            print!("{}", config::reference::markdown());
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
        Command::Cache(CacheCommand::Info { dir }) => dino_stream::commands::cache_info(&dir),
        Command::Cache(CacheCommand::Export {
            dir,
            webdataset,
            per_tar,
        }) => dino_stream::commands::cache_export(&dir, &webdataset, per_tar),
        Command::Eval(EvalCommand::Knn {
            pipeline,
            sets,
            checkpoint,
            train,
            test,
            untrained,
            k,
            raw_pixels,
        }) => {
            let folders = train.as_deref().zip(test.as_deref());
            let loaded = load_for_eval(pipeline.as_deref(), &sets, checkpoint.as_deref(), folders)?;
            dino_stream::commands::eval_knn(
                &loaded,
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
            garment_scale,
            out,
        } => {
            let [lo, hi] = garment_scale[..] else {
                anyhow::bail!("--garment-scale takes MIN,MAX, got {garment_scale:?}");
            };
            dino_stream::commands_eval::composite(
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
                    garment_scale: [lo, hi],
                },
                &out,
            )
        }
        Command::Eval(EvalCommand::Segment {
            data,
            checkpoint,
            supervised,
            supervised_heads,
            limit,
            threshold,
        }) => dino_stream::commands_eval::eval_segment(
            &data,
            &checkpoint,
            supervised.as_deref(),
            supervised_heads,
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
            dino_stream::preflight::device(&loaded.config.train)
                .map_err(|p| ConfigError::Invalid(p.to_string()))?;
            dino_stream::bench::train(&loaded.config, steps, warmup)
        }
    }
}
