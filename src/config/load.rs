//! Layered loading with the `config` crate, then typed deserialisation that collects every
//! unknown key and type error instead of stopping at the first.

use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat, Value, ValueKind};

use super::{PipelineConfig, Problems};

const ENV_PREFIX: &str = "DINO_STREAM";
const DEFAULTS_FILE: &str = "config/default.toml";
/// `config/default.toml` as built into the binary, so that layer is there wherever the binary
/// runs from (it used to be read from the working directory and silently vanished elsewhere).
pub const BUILTIN_DEFAULTS: &str = include_str!("../../config/default.toml");
const BUILTIN_DEFAULTS_NAME: &str = "config/default.toml (built in)";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: not valid TOML: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("--set {0}: expected key=value")]
    BadSet(String),
    #[error("{0}")]
    Layers(String),
    /// One line per problem, each `origin: key.path: message`.
    #[error("{0}")]
    Invalid(String),
}

/// What to layer on top of the pipeline file.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `key=value` overrides from the command line.
    pub sets: Vec<String>,
    /// Read `DINO_STREAM__*` environment variables (off in tests that must be hermetic).
    pub use_env: bool,
    /// Directory in which to look for `config/default.toml`; none skips that layer.
    pub defaults_dir: Option<PathBuf>,
    /// Layer the built-in copy of `config/default.toml` (the binary sets this; off in tests
    /// that must be hermetic). A `defaults_dir` file is layered above it.
    pub builtin_defaults: bool,
}

/// A validated configuration and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: PipelineConfig,
    pub pipeline_path: PathBuf,
    /// Keys set on purpose by `--set` or a `DINO_STREAM__…` variable (dotted, lower case):
    /// where they disagree with a checkpoint's configuration, that is an error, not a silent
    /// override (see `recipe`).
    pub explicit_keys: Vec<String>,
}

/// Loads, layers, deserialises and validates a pipeline file.
pub fn load(pipeline: &Path, opts: &LoadOptions) -> Result<LoadedConfig, ConfigError> {
    let pipeline_text = read(pipeline)?;
    load_text(pipeline, &pipeline_text, opts)
}

/// [`load`] of a pipeline given as text (e.g. the configuration saved in a checkpoint);
/// `pipeline` names it in messages.
pub fn load_text(
    pipeline: &Path,
    pipeline_text: &str,
    opts: &LoadOptions,
) -> Result<LoadedConfig, ConfigError> {
    let pipeline_toml = parse_toml(pipeline, pipeline_text)?;

    let mut layers: Vec<(String, toml::Table)> = Vec::new();
    let mut builder = Config::builder();
    if opts.builtin_defaults {
        let table = parse_toml(Path::new(BUILTIN_DEFAULTS_NAME), BUILTIN_DEFAULTS)?;
        builder = builder.add_source(File::from_str(BUILTIN_DEFAULTS, FileFormat::Toml));
        layers.push((BUILTIN_DEFAULTS_NAME.to_string(), table));
    }
    if let Some(dir) = &opts.defaults_dir {
        let path = dir.join(DEFAULTS_FILE);
        if path.exists() {
            let text = read(&path)?;
            let table = parse_toml(&path, &text)?;
            builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
            layers.push((path.display().to_string(), table));
        }
    }
    builder = builder.add_source(File::from_str(pipeline_text, FileFormat::Toml));
    layers.push((pipeline.display().to_string(), pipeline_toml));

    // (dotted key, variable name)
    let mut env_keys: Vec<(String, String)> = Vec::new();
    if opts.use_env {
        for (name, _) in std::env::vars() {
            if let Some(rest) = name.strip_prefix(&format!("{ENV_PREFIX}__")) {
                env_keys.push((rest.to_ascii_lowercase().replace("__", "."), name.clone()));
            }
        }
        builder = builder.add_source(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
    }

    let mut set_keys: Vec<String> = Vec::new();
    for set in &opts.sets {
        let (key, raw) = set
            .split_once('=')
            .ok_or_else(|| ConfigError::BadSet(set.clone()))?;
        let key = key.trim();
        builder = builder
            .set_override(key, parse_set_value(raw.trim()))
            .map_err(|e| ConfigError::Layers(format!("--set {set}: {e}")))?;
        set_keys.push(key.to_string());
    }

    let merged: serde_json::Value =
        builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| {
                let blame = match (set_keys.is_empty(), env_keys.is_empty()) {
                    (true, true) => pipeline.display().to_string(),
                    _ => format!(
                        "{} with its --set/DINO_STREAM__* overrides",
                        pipeline.display()
                    ),
                };
                ConfigError::Layers(format!("{blame}: {e}"))
            })?;

    let origin = |key: &str| -> String {
        if set_keys.iter().any(|k| key_matches(k, key)) {
            return "--set".to_string();
        }
        if let Some((_, var)) = env_keys.iter().find(|(k, _)| key_matches(k, key)) {
            return format!("environment variable {var}");
        }
        for (name, table) in layers.iter().rev() {
            if table_has(table, key) {
                return name.clone();
            }
        }
        pipeline.display().to_string()
    };

    let (mut config, mut problems) = deserialize_collecting(merged.clone());
    if let Some(cfg) = &mut config {
        problems.extend(cfg.validate());
        preset_sizes(&merged, &cfg.model, &mut problems);
        cfg.model.resolve_preset();
    }
    if !problems.is_empty() {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}: {}", origin(&p.key), p.key, p.message))
            .collect();
        return Err(ConfigError::Invalid(lines.join("\n")));
    }
    let mut explicit_keys = set_keys;
    explicit_keys.extend(env_keys.into_iter().map(|(k, _)| k));
    Ok(LoadedConfig {
        config: config.expect("no problems implies a config"),
        pipeline_path: pipeline.to_path_buf(),
        explicit_keys,
    })
}

/// A ViT preset fixes `embed_dim`, `depth` and `heads`; a layer that sets one of them to
/// another value would be silently ignored, so it is a problem instead.
fn preset_sizes(
    merged: &serde_json::Value,
    model: &crate::model::ModelConfig,
    problems: &mut Problems,
) {
    let Some(preset) = model.vit_preset() else {
        return;
    };
    let (dim, depth, heads) = model.vit_dims();
    for (field, fixed) in [("embed_dim", dim), ("depth", depth), ("heads", heads)] {
        let given = merged.get("model").and_then(|m| m.get(field));
        if let Some(v) = given.and_then(|v| v.as_i64()).filter(|v| *v != fixed) {
            problems.push(
                format!("model.{field}"),
                format!(
                    "{v} is ignored: model.arch = \"{preset}\" fixes {field} = {fixed}; set \
                     model.arch = \"vit\" to choose embed_dim, depth and heads"
                ),
            );
        }
    }
}

/// Parses TOML, naming the file, line and column of a syntax error.
fn parse_toml(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let offset = e.span().map_or(0, |s| s.start).min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })
}
fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses a `--set` value as a TOML value (numbers, booleans, arrays, quoted strings), falling
/// back to a bare string, so `--set source.path=/data` needs no quotes.
fn parse_set_value(raw: &str) -> Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => toml_to_config(t.remove("v").expect("key v")),
        Err(_) => Value::new(None, ValueKind::String(raw.to_string())),
    }
}

fn toml_to_config(v: toml::Value) -> Value {
    let kind = match v {
        toml::Value::String(s) => ValueKind::String(s),
        toml::Value::Integer(i) => ValueKind::I64(i),
        toml::Value::Float(f) => ValueKind::Float(f),
        toml::Value::Boolean(b) => ValueKind::Boolean(b),
        toml::Value::Datetime(d) => ValueKind::String(d.to_string()),
        toml::Value::Array(a) => ValueKind::Array(a.into_iter().map(toml_to_config).collect()),
        toml::Value::Table(t) => {
            ValueKind::Table(t.into_iter().map(|(k, v)| (k, toml_to_config(v))).collect())
        }
    };
    Value::new(None, kind)
}

/// `a.b` set at the command line covers problems at `a.b` and below it.
fn key_matches(set_key: &str, problem_key: &str) -> bool {
    problem_key == set_key
        || problem_key.starts_with(&format!("{set_key}."))
        || problem_key.starts_with(&format!("{set_key}["))
}

fn table_has(table: &toml::Table, key: &str) -> bool {
    let mut current: Option<&toml::Value> = None;
    let mut tbl = Some(table);
    for part in key.split('.') {
        let part = part.split('[').next().unwrap_or(part);
        let Some(t) = tbl else {
            return current.is_some();
        };
        match t.get(part) {
            Some(v) => {
                current = Some(v);
                tbl = v.as_table();
            }
            None => return false,
        }
    }
    current.is_some()
}

/// Deserialises, and on each unknown key or bad value records the problem at its path, removes
/// that key and tries again, so one run reports every such mistake.
fn deserialize_collecting(mut value: serde_json::Value) -> (Option<PipelineConfig>, Problems) {
    let mut problems = Problems::new();
    for _ in 0..64 {
        let result: Result<PipelineConfig, _> = serde_path_to_error::deserialize(value.clone());
        match result {
            Ok(cfg) => return (Some(cfg), problems),
            Err(err) => {
                let path = err.path().to_string();
                let inner = err.into_inner().to_string();
                let (key, removed) = match unknown_field(&inner) {
                    Some(field) => {
                        let key = join_path(&path, &field);
                        let removed = remove_path(&mut value, &key);
                        (key, removed)
                    }
                    None => {
                        let removed = remove_path(&mut value, &path);
                        (path, removed)
                    }
                };
                problems.push(
                    if key == "." { String::new() } else { key },
                    tidy_serde_message(&inner),
                );
                if !removed {
                    return (None, problems);
                }
            }
        }
    }
    (None, problems)
}

fn join_path(parent: &str, field: &str) -> String {
    // serde_path_to_error sometimes already ends the path with the unknown field.
    if parent == field || parent.ends_with(&format!(".{field}")) {
        parent.to_string()
    } else if parent.is_empty() || parent == "." {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

fn tidy_serde_message(message: &str) -> String {
    if let Some(field) = unknown_field(message) {
        let expected = message
            .split_once(", expected")
            .map(|(_, e)| e.trim())
            .unwrap_or("");
        return format!("unknown key `{field}` (expected {expected})");
    }
    user_type_names(message)
}

/// serde speaks Rust (`expected usize`); users write TOML.
fn user_type_names(message: &str) -> String {
    let mut out = message.to_string();
    for (rust, user) in [
        ("expected usize", "expected a whole number >= 0"),
        ("expected u64", "expected a whole number >= 0"),
        ("expected u32", "expected a whole number >= 0"),
        ("expected u16", "expected a whole number >= 0"),
        ("expected u8", "expected a whole number >= 0"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("a sequence", "an array"),
        ("struct ", "table "),
        ("a map", "a table"),
        ("an array of length", "an array of length"),
        ("invalid type: sequence", "invalid type: array"),
        ("invalid type: map", "invalid type: table"),
        ("tuple of size", "array of length"),
    ] {
        out = out.replace(rust, user);
    }
    out
}

/// Removes the value at a dotted path (with `[i]` indices); true when something was removed.
fn remove_path(value: &mut serde_json::Value, path: &str) -> bool {
    let parts: Vec<&str> = path.split('.').filter(|p| !p.is_empty()).collect();
    let Some((last, parents)) = parts.split_last() else {
        return false;
    };
    let mut current = value;
    for part in parents {
        let name = part.split('[').next().unwrap_or(part);
        match current.get_mut(name) {
            Some(v) => current = v,
            None => return false,
        }
    }
    let name = last.split('[').next().unwrap_or(last);
    current
        .as_object_mut()
        .map(|o| o.remove(name).is_some())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_temp(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn every_unknown_key_and_bad_value_is_reported_with_its_path_and_file() {
        let f = write_temp(
            "[train]\nlr_typo = 1\nbatch_size = -4\n[augment]\nflip_p = 3.0\nbogus = true\n[source]\ntype = \"synthetic\"\n",
        );
        let err = load(f.path(), &LoadOptions::default())
            .unwrap_err()
            .to_string();
        let file = f.path().display().to_string();
        assert!(
            err.contains(&format!("{file}: train.lr_typo: unknown key")),
            "{err}"
        );
        assert!(
            err.contains(&format!("{file}: augment.bogus: unknown key")),
            "{err}"
        );
        assert!(err.contains("train.batch_size:"), "{err}");
        assert!(
            err.contains(&format!("{file}: augment.flip_p: must be in [0, 1], got 3")),
            "{err}"
        );
    }

    #[test]
    fn set_overrides_win_and_are_named_as_the_origin() {
        let f = write_temp("[source]\ntype = \"synthetic\"\n[train]\nbatch_size = 8\n");
        let opts = LoadOptions {
            sets: vec!["train.batch_size=16".into()],
            ..Default::default()
        };
        let cfg = load(f.path(), &opts).unwrap();
        assert_eq!(cfg.config.train.batch_size, 16);
        let opts = LoadOptions {
            sets: vec!["train.base_lr=-1".into()],
            ..Default::default()
        };
        let err = load(f.path(), &opts).unwrap_err().to_string();
        assert!(
            err.contains("--set: train.base_lr: must be > 0, got -1"),
            "{err}"
        );
    }

    #[test]
    fn set_accepts_bare_strings_and_arrays() {
        let f = write_temp("[source]\ntype = \"image_folder\"\npath = \"/nowhere\"\n");
        let opts = LoadOptions {
            sets: vec![
                "source.path=/data/imgs".into(),
                "augment.global_scale=[0.3, 1.0]".into(),
            ],
            ..Default::default()
        };
        let cfg = load(f.path(), &opts).unwrap();
        assert_eq!(cfg.config.augment.global_scale, [0.3, 1.0]);
        match cfg.config.source {
            crate::source::SourceConfig::ImageFolder { path, .. } => {
                assert_eq!(path, PathBuf::from("/data/imgs"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn environment_layer_sits_between_file_and_set() {
        // Unique key so parallel tests are unaffected.
        std::env::set_var("DINO_STREAM__CHECKPOINT__EVERY_STEPS", "77");
        let f = write_temp("[source]\ntype = \"synthetic\"\n[checkpoint]\nevery_steps = 5\n");
        let opts = LoadOptions {
            use_env: true,
            ..Default::default()
        };
        let cfg = load(f.path(), &opts).unwrap();
        std::env::remove_var("DINO_STREAM__CHECKPOINT__EVERY_STEPS");
        assert_eq!(cfg.config.checkpoint.every_steps, 77);
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let f = write_temp("[train\nbatch_size = 1\n");
        let err = load(f.path(), &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{}:1:7: not valid TOML", f.path().display())),
            "{err}"
        );
    }
}
