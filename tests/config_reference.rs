//! docs/CONFIG.md (what `dino-stream config` prints) is generated here from the config structs:
//! their doc comments, read from the source, and their `Default`s, read from the library. The
//! test fails when a key has no description, when a key that the configuration serialises is
//! missing from the reference, or when docs/CONFIG.md is stale. Regenerate with
//! `DINO_STREAM_BLESS=1 cargo test --release --test config_reference`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use dino_stream::config::PipelineConfig;

/// A field of a config struct (or of a struct variant of a config enum), as written in the source.
#[derive(Debug, Clone)]
struct Field {
    name: String,
    ty: String,
    doc: String,
}

/// Struct name → fields; enum name → (variant in snake_case, its doc, its fields).
#[derive(Default)]
struct Source {
    structs: BTreeMap<String, Vec<Field>>,
    enums: BTreeMap<String, Vec<(String, String, Vec<Field>)>>,
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// A line scanner for `pub struct X { /// doc  pub field: Type, }` and enums of struct
/// variants; enough for the config structs, which rustfmt keeps in this shape.
fn parse(text: &str, out: &mut Source) {
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        let header = line
            .strip_prefix("pub struct ")
            .map(|r| (true, r))
            .or_else(|| line.strip_prefix("pub enum ").map(|r| (false, r)));
        let Some((is_struct, rest)) = header.filter(|(_, r)| r.ends_with('{')) else {
            i += 1;
            continue;
        };
        let name = rest.trim_end_matches('{').trim().to_string();
        i += 1;
        let mut doc = String::new();
        let mut fields = Vec::new();
        let mut variants: Vec<(String, String, Vec<Field>)> = Vec::new();
        let mut in_variant = false;
        while i < lines.len() && lines[i].trim() != "}" {
            let l = lines[i].trim();
            if let Some(d) = l.strip_prefix("///") {
                if !doc.is_empty() {
                    doc.push(' ');
                }
                doc.push_str(d.trim());
            } else if l.starts_with("#[") {
            } else if !is_struct && !in_variant && l.ends_with('{') {
                let v = l.trim_end_matches('{').trim();
                variants.push((snake(v), std::mem::take(&mut doc), Vec::new()));
                in_variant = true;
            } else if !is_struct && in_variant && (l == "}," || l == "}") {
                in_variant = false;
            } else if !is_struct && !in_variant && l.ends_with(',') && !l.contains(':') {
                // `Unit,` or `Newtype(Struct),`: a newtype's fields are its struct's, marked
                // here by a nameless field of that type and expanded by `walk`.
                let v = l.trim_end_matches(',');
                let (v, inner) = match v.split_once('(') {
                    Some((v, t)) => (
                        v,
                        vec![Field {
                            name: String::new(),
                            ty: t.trim_end_matches(')').to_string(),
                            doc: String::new(),
                        }],
                    ),
                    None => (v, Vec::new()),
                };
                variants.push((snake(v), std::mem::take(&mut doc), inner));
            } else if let Some(f) = l.strip_prefix("pub ").or(in_variant.then_some(l)) {
                if let Some((fname, ty)) = f.split_once(':') {
                    let field = Field {
                        name: fname.trim().to_string(),
                        ty: ty.trim().trim_end_matches(',').to_string(),
                        doc: std::mem::take(&mut doc),
                    };
                    if in_variant {
                        variants.last_mut().unwrap().2.push(field);
                    } else {
                        fields.push(field);
                    }
                } else {
                    doc.clear();
                }
            } else {
                doc.clear();
            }
            i += 1;
        }
        if is_struct {
            out.structs.insert(name, fields);
        } else if variants.iter().any(|v| !v.2.is_empty()) {
            out.enums.insert(name, variants);
        }
    }
}

fn parse_tree(dir: &Path, out: &mut Source) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            parse_tree(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            parse(&std::fs::read_to_string(&p).unwrap(), out);
        }
    }
}

/// One row: key, kinds it applies to (source variants), doc.
struct Row {
    key: String,
    kinds: Vec<String>,
    doc: String,
}

fn strip_option(ty: &str) -> &str {
    ty.strip_prefix("Option<")
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(ty)
}

fn walk(src: &Source, ty: &str, prefix: &str, rows: &mut Vec<Row>) {
    if let Some(fields) = src.structs.get(ty) {
        for f in fields {
            let key = format!("{prefix}{}", f.name);
            let inner = strip_option(&f.ty);
            if src.structs.contains_key(inner) || src.enums.contains_key(inner) {
                walk(src, inner, &format!("{key}."), rows);
            } else {
                rows.push(Row {
                    key,
                    kinds: Vec::new(),
                    doc: f.doc.clone(),
                });
            }
        }
    } else if let Some(variants) = src.enums.get(ty) {
        let names: Vec<String> = variants.iter().map(|v| format!("`{}`", v.0)).collect();
        rows.push(Row {
            key: format!("{prefix}type"),
            kinds: Vec::new(),
            doc: format!(
                "The kind: {}. {}",
                names.join(", "),
                variants
                    .iter()
                    .map(|v| format!("`{}`: {}", v.0, v.1))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        });
        let mut by_field: BTreeMap<String, (Vec<String>, String)> = BTreeMap::new();
        let mut order = Vec::new();
        for (kind, _, fields) in variants {
            let expanded: Vec<&Field> = fields
                .iter()
                .flat_map(|f| match (f.name.is_empty(), src.structs.get(&f.ty)) {
                    (true, Some(inner)) => inner.iter().collect(),
                    _ => vec![f],
                })
                .collect();
            for f in expanded {
                let e = by_field.entry(f.name.clone()).or_insert_with(|| {
                    order.push(f.name.clone());
                    (Vec::new(), String::new())
                });
                e.0.push(kind.clone());
                if e.1.is_empty() {
                    e.1 = f.doc.clone();
                }
            }
        }
        for name in order {
            let (kinds, doc) = &by_field[&name];
            rows.push(Row {
                key: format!("{prefix}{name}"),
                kinds: kinds.clone(),
                doc: doc.clone(),
            });
        }
    }
}

/// Flattens a TOML value to dotted keys (arrays stay whole).
fn flatten(v: &toml::Value, prefix: &str, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(v, &key, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Defaults of every key: the default config, an `[eval.knn]` of defaults, and each source kind.
fn defaults() -> (
    BTreeMap<String, String>,
    BTreeMap<String, BTreeMap<String, String>>,
) {
    let mut all = BTreeMap::new();
    flatten(
        &toml::Value::try_from(PipelineConfig::default()).unwrap(),
        "",
        &mut all,
    );
    let with_knn: PipelineConfig = toml::from_str(
        "[eval.knn.train]\ntype = \"synthetic\"\n[eval.knn.test]\ntype = \"synthetic\"\n",
    )
    .unwrap();
    let mut knn = BTreeMap::new();
    flatten(&toml::Value::try_from(with_knn).unwrap(), "", &mut knn);
    for (k, v) in knn {
        if k.starts_with("eval.knn.")
            && !k.starts_with("eval.knn.train")
            && !k.starts_with("eval.knn.test")
        {
            all.insert(k, v);
        }
    }
    let mut per_kind = BTreeMap::new();
    for (kind, body) in [
        ("image_folder", "path = \"x\""),
        ("idx", "path = \"x\""),
        ("video", "path = \"x\""),
        ("synthetic", ""),
        ("cache", "path = \"x\""),
        ("webdataset", "urls = \"x\""),
    ] {
        let cfg: PipelineConfig =
            toml::from_str(&format!("[source]\ntype = \"{kind}\"\n{body}\n")).unwrap();
        let mut flat = BTreeMap::new();
        flatten(&toml::Value::try_from(cfg).unwrap(), "", &mut flat);
        flat.retain(|k, _| k.starts_with("source."));
        per_kind.insert(kind.to_string(), flat);
    }
    (all, per_kind)
}

fn generate() -> (String, Vec<String>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut src = Source::default();
    parse_tree(&root.join("src"), &mut src);
    let mut rows = Vec::new();
    walk(&src, "PipelineConfig", "", &mut rows);
    let (defaults, per_kind) = defaults();
    let mut problems = Vec::new();

    let mut md = String::from(
        "# Configuration keys\n\n\
         Generated from the config structs by `tests/config_reference.rs`; `dino-stream config`\n\
         prints this file. Set a key in a pipeline file (`[train]` `batch_size = 32`), in the\n\
         environment (`DINO_STREAM__TRAIN__BATCH_SIZE=32`) or on the command line\n\
         (`--set train.batch_size=32`); later layers win. Keys that default to `(unset)` are\n\
         optional. `source.*` keys apply to the source kinds named after them; `eval.knn.train.*`\n\
         and `eval.knn.test.*` take the same keys as `source.*`.\n",
    );
    let mut section = String::new();
    let mut seen = BTreeSet::new();
    for row in &rows {
        if row.key.starts_with("eval.knn.train.") || row.key.starts_with("eval.knn.test.") {
            seen.insert(row.key.clone());
            continue;
        }
        let sec = row.key.split('.').next().unwrap().to_string();
        if sec != section {
            md.push_str(&format!(
                "\n## [{sec}]\n\n| key | default | description |\n|---|---|---|\n"
            ));
            section = sec;
        }
        let default = if row.kinds.is_empty() {
            defaults.get(&row.key).cloned()
        } else {
            row.kinds
                .iter()
                .find_map(|k| per_kind[k].get(&row.key).cloned())
        };
        let default = match default {
            // The stand-in that `defaults()` gives required paths.
            Some(d) if d == "\"x\"" || d == "[\"x\"]" => "(required)".to_string(),
            Some(d) => format!("`{d}`"),
            None if row.key.ends_with(".type") => "`synthetic`".to_string(),
            None => "(unset)".to_string(),
        };
        let key = if row.kinds.is_empty() {
            row.key.clone()
        } else {
            format!("{} ({})", row.key, row.kinds.join(", "))
        };
        if row.doc.trim().is_empty() {
            problems.push(format!("{}: no doc comment on its field", row.key));
        }
        md.push_str(&format!(
            "| `{key}` | {default} | {} |\n",
            row.doc.replace('|', "\\|")
        ));
        seen.insert(row.key.clone());
    }
    md.push_str(
        "\n## main_dino.py flags\n\nThe official DINO script's flags and the keys that do \
         their job here (`dino-stream run P --epochs 100` answers with this hint too):\n\n",
    );
    md.push_str(&dino_stream::main_dino::markdown());
    // Every key the configuration serialises must be in the reference.
    let mut serialised: BTreeSet<String> = defaults.keys().cloned().collect();
    for flat in per_kind.values() {
        serialised.extend(flat.keys().cloned());
    }
    for key in serialised {
        if !seen.contains(&key) {
            problems.push(format!("{key}: serialised but missing from the reference"));
        }
    }
    for (_, key, _) in dino_stream::main_dino::FLAGS {
        if !seen.contains(*key) {
            problems.push(format!("main_dino table names {key}, which is no key"));
        }
    }
    (md, problems)
}

#[test]
fn config_md_covers_every_key_and_is_current() {
    let (md, problems) = generate();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIG.md");
    if std::env::var_os("DINO_STREAM_BLESS").is_some() {
        std::fs::write(&path, &md).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap();
    assert!(
        on_disk == md,
        "docs/CONFIG.md is stale: run DINO_STREAM_BLESS=1 cargo test --release --test config_reference"
    );
}

#[test]
fn the_binary_prints_the_reference_and_validate_print_shows_optional_keys() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = common::run_in(root, &["config"]);
    assert!(out.status.success(), "{}", common::text(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        printed,
        std::fs::read_to_string(root.join("docs/CONFIG.md")).unwrap()
    );
    assert!(
        printed.contains("| `train.base_lr` | `0.0005` |"),
        "{printed}"
    );

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        "[source]\ntype = \"synthetic\"\n[train]\ndevice = \"cpu\"\n",
    )
    .unwrap();
    let out = common::run_in(dir.path(), &["validate", p.to_str().unwrap(), "--print"]);
    let t = common::text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("# train.steps_per_epoch = …  # unset:"), "{t}");
    assert!(t.contains("# cache.dir = …  # unset:"), "{t}");
}
