//! The key reference that `dino-stream config` prints: docs/CONFIG.md, generated from the
//! config structs' doc comments and `Default`s by `tests/config_reference.rs` (which fails
//! when a key is missing or the file is stale; `DINO_STREAM_BLESS=1` rewrites it).

use super::PipelineConfig;

/// docs/CONFIG.md as built into the binary.
pub const CONFIG_MD: &str = include_str!("../../docs/CONFIG.md");

/// The reference as Markdown.
pub fn markdown() -> &'static str {
    CONFIG_MD
}

/// One row of the reference table: (key, default, description). Rows whose default is
/// `(unset)` are optional keys.
pub fn rows() -> Vec<(&'static str, &'static str, &'static str)> {
    CONFIG_MD
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.strip_prefix("| `")?.splitn(3, " | ").collect();
            let [key, default, doc] = cells[..] else {
                return None;
            };
            let key = key.strip_suffix('`')?;
            let doc = doc.strip_suffix(" |").unwrap_or(doc);
            Some((key, default.trim_matches('`'), doc))
        })
        .collect()
}

/// The resolved configuration as TOML, followed by the optional keys it leaves unset, as
/// comments (TOML has no null, so they would otherwise be invisible).
pub fn annotated_toml(cfg: &PipelineConfig) -> String {
    let mut out = cfg.to_toml();
    let value = toml::Value::try_from(cfg).expect("config serialises");
    let source_kind = cfg.source.kind_name();
    let mut unset = Vec::new();
    for (key, default, doc) in rows() {
        if default != "(unset)" {
            continue;
        }
        // `source.limit (image_folder, idx, cache)`: only for those kinds.
        let (key, kinds) = match key.split_once(" (") {
            Some((k, kinds)) => (k, Some(kinds.trim_end_matches(')'))),
            None => (key, None),
        };
        if let Some(kinds) = kinds {
            let section_kind = if key.starts_with("source.") {
                Some(source_kind)
            } else {
                None
            };
            if section_kind.is_some_and(|k| !kinds.split(", ").any(|x| x == k))
                || !key.starts_with("source.")
            {
                continue;
            }
        }
        let parts: Vec<&str> = key.split('.').collect();
        let parent_present = parts[..parts.len() - 1]
            .iter()
            .try_fold(&value, |v, p| v.get(*p))
            .is_some();
        let present = parts.iter().try_fold(&value, |v, p| v.get(*p)).is_some();
        if parent_present && !present {
            unset.push(format!("# {key} = …  # unset: {doc}"));
        }
    }
    if !unset.is_empty() {
        out.push_str("\n# Optional keys left unset:\n");
        out.push_str(&unset.join("\n"));
        out.push('\n');
    }
    out
}
