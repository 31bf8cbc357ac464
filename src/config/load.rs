//! Layered loading with the `config` crate, then typed deserialisation that collects every
//! unknown key and type error instead of stopping at the first.

use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat, Value, ValueKind};

use super::{PipelineConfig, Problems};

const ENV_PREFIX: &str = "DINO_STREAM";
const DEFAULTS_FILE: &str = "config/default.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
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
}

/// A validated configuration and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: PipelineConfig,
    pub pipeline_path: PathBuf,
}

/// Loads, layers, deserialises and validates a pipeline file.
pub fn load(pipeline: &Path, opts: &LoadOptions) -> Result<LoadedConfig, ConfigError> {
    let pipeline_text = read(pipeline)?;
    let pipeline_toml: toml::Table =
        toml::from_str(&pipeline_text).map_err(|e| ConfigError::Syntax {
            path: pipeline.to_path_buf(),
            message: e.message().to_string(),
        })?;

    let mut layers: Vec<(String, toml::Table)> = Vec::new();
    let mut builder = Config::builder();
    if let Some(dir) = &opts.defaults_dir {
        let path = dir.join(DEFAULTS_FILE);
        if path.exists() {
            let text = read(&path)?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                path: path.clone(),
                message: e.message().to_string(),
            })?;
            builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
            layers.push((path.display().to_string(), table));
        }
    }
    builder = builder.add_source(File::from_str(&pipeline_text, FileFormat::Toml));
    layers.push((pipeline.display().to_string(), pipeline_toml));

    let mut env_keys: Vec<String> = Vec::new();
    if opts.use_env {
        for (name, _) in std::env::vars() {
            if let Some(rest) = name.strip_prefix(&format!("{ENV_PREFIX}__")) {
                env_keys.push(rest.to_ascii_lowercase().replace("__", "."));
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
            .map_err(|e| ConfigError::Layers(e.to_string()))?;
        set_keys.push(key.to_string());
    }

    let merged: serde_json::Value = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| ConfigError::Layers(format!("{}: {e}", pipeline.display())))?;

    let origin = |key: &str| -> String {
        if set_keys.iter().any(|k| key_matches(k, key)) {
            return "--set".to_string();
        }
        if env_keys.iter().any(|k| key_matches(k, key)) {
            return "environment".to_string();
        }
        for (name, table) in layers.iter().rev() {
            if table_has(table, key) {
                return name.clone();
            }
        }
        pipeline.display().to_string()
    };

    let (config, mut problems) = deserialize_collecting(merged);
    if let Some(cfg) = &config {
        problems.extend(cfg.validate());
    }
    if !problems.is_empty() {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}: {}", origin(&p.key), p.key, p.message))
            .collect();
        return Err(ConfigError::Invalid(lines.join("\n")));
    }
    Ok(LoadedConfig {
        config: config.expect("no problems implies a config"),
        pipeline_path: pipeline.to_path_buf(),
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
    message.to_string()
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
        assert!(err.starts_with(&f.path().display().to_string()), "{err}");
        assert!(err.contains("not valid TOML"), "{err}");
    }
}
