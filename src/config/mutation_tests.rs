//! Config files are parsers of untrusted input too: arbitrary and mutated bytes of every
//! shipped pipeline (and of `config/default.toml`), and hostile `--set` values, go through
//! [`load`] — TOML, the layering of the `config` crate, typed deserialisation and `validate` —
//! and must give an `Ok` or an error, never a panic. Seeded and bounded, so every failure
//! replays and the whole test costs seconds.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use super::{load, load_text, LoadOptions};
use crate::rng::Rng;
use crate::testing::mutate;

/// Values that break typed configs: out of range for every integer type, negative sizes,
/// non-finite floats, wrong types, empty and odd strings, nested tables.
const HOSTILE_VALUES: &[&str] = &[
    "0",
    "-1",
    "1",
    "65537",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "1e308",
    "-1e308",
    "5e-324",
    "nan",
    "inf",
    "-inf",
    "-0.0",
    "0.5",
    "true",
    "\"\"",
    "\"../../../../etc/passwd\"",
    "\"\\u0000\"",
    "\"auto\"",
    "\"cuda\"",
    "\"::1\"",
    "[]",
    "[1, 2, 3]",
    "[[]]",
    "{}",
    "{ a = 1 }",
    "1979-05-27T07:32:00Z",
];

/// The shipped pipelines and the defaults layer, by path.
fn seeds() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("pipelines"))
        .expect("pipelines/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files.push(root.join("config/default.toml"));
    assert!(files.len() >= 4, "{files:?}");
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

/// Text-level edits that keep the file mostly TOML, so mutations reach the typed layer and
/// `validate`: a value replaced by a hostile one, a line dropped or repeated, a key renamed, a
/// table header inserted.
fn mutate_text(text: &str, rng: &mut Rng) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for _ in 0..1 + rng.below(4) {
        if lines.is_empty() {
            break;
        }
        let at = rng.below(lines.len() as u64) as usize;
        match rng.below(5) {
            0 | 1 => {
                if let Some((key, _)) = lines[at].split_once('=') {
                    let v = HOSTILE_VALUES[rng.below(HOSTILE_VALUES.len() as u64) as usize];
                    lines[at] = format!("{key}= {v}");
                }
            }
            2 => {
                lines.remove(at);
            }
            3 => {
                let copy = lines[at].clone();
                let to = rng.below(lines.len() as u64 + 1) as usize;
                lines.insert(to, copy);
            }
            _ => {
                let header = [
                    "[source]",
                    "[model]",
                    "[train]",
                    "[eval.knn]",
                    "[x.y]",
                    "[[a]]",
                ][rng.below(6) as usize];
                lines.insert(at, header.to_string());
            }
        }
    }
    lines.join("\n")
}

fn options(sets: Vec<String>) -> LoadOptions {
    LoadOptions {
        sets,
        use_env: false,
        defaults_dir: None,
        builtin_defaults: true,
    }
}

/// Loads `bytes` as a pipeline file; panics with the round and the input if loading panicked.
fn load_never_panics(file: &Path, bytes: &[u8], round: u64, origin: &Path) -> bool {
    std::fs::write(file, bytes).unwrap();
    let result = catch_unwind(AssertUnwindSafe(|| load(file, &options(Vec::new()))));
    match result {
        Ok(r) => r.is_ok(),
        Err(_) => panic!(
            "config::load panicked on round {round} of a mutation of {}:\n{}",
            origin.display(),
            String::from_utf8_lossy(bytes)
        ),
    }
}

#[test]
fn mutated_and_arbitrary_config_files_give_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pipeline.toml");
    let (mut accepted, mut refused) = (0u32, 0u32);
    for (i, (path, text)) in seeds().iter().enumerate() {
        let mut rng = Rng::keyed(&[0xC0F1, i as u64]);
        for round in 0..600u64 {
            // Half byte-level (bit flips, truncation, size-like runs, random bytes; often not
            // UTF-8 or not TOML), half text-level (valid TOML with hostile values).
            let bytes = if round % 2 == 0 {
                mutate(text.as_bytes(), &mut rng, round)
            } else {
                mutate_text(text, &mut rng).into_bytes()
            };
            if load_never_panics(&file, &bytes, round, path) {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
    }
    // Both outcomes occur: the mutations reach past the TOML parser to values that load.
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} ok, {refused} errors"
    );
}

#[test]
fn hostile_set_values_give_errors_never_panics() {
    let (path, text) = seeds().into_iter().next().unwrap();
    let keys: Vec<String> = {
        let mut section = String::new();
        let mut keys = Vec::new();
        for line in text.lines().map(str::trim) {
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = s.to_string();
            } else if let Some((k, _)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
                keys.push(format!("{section}.{}", k.trim()));
            }
        }
        keys
    };
    assert!(keys.len() > 5, "{keys:?}");
    let mut rng = Rng::keyed(&[0x5E7]);
    let mut refused = 0;
    for round in 0..1500u64 {
        let key = &keys[rng.below(keys.len() as u64) as usize];
        let value = HOSTILE_VALUES[rng.below(HOSTILE_VALUES.len() as u64) as usize];
        // Unquoted values too: `--set` parses its right-hand side itself.
        let value = if rng.chance(0.3) {
            value.trim_matches('"')
        } else {
            value
        };
        let set = match round % 10 {
            0 => key.clone(),
            1 => format!("={value}"),
            2 => format!("{key}.deeper={value}"),
            _ => format!("{key}={value}"),
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            load_text(&path, &text, &options(vec![set.clone()]))
        }));
        match result {
            Ok(Err(_)) => refused += 1,
            Ok(Ok(_)) => {}
            Err(_) => panic!("--set {set:?} panicked on {}", path.display()),
        }
    }
    assert!(refused > 0);
}
