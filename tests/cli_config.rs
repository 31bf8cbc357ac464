//! `validate` and configuration errors, through the real binary.

mod common;

use common::*;

// The shipped pipelines validate in tests/examples.rs, where the data they name exists
// (`validate` opens every source).

#[test]
fn a_bad_pipeline_is_rejected_with_file_key_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[source]\ntype = \"synthetic\"\n[train]\nbatch_size = 0\nlearning_rate = 3\n[augment]\nhue = 0.9\n").unwrap();
    for cmd in ["validate", "run"] {
        let out = run_in(dir.path(), &[cmd, path.to_str().unwrap()]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {t}");
        let file = path.display().to_string();
        assert!(
            t.contains(&format!("{file}: train.batch_size: must be > 0, got 0")),
            "{t}"
        );
        assert!(
            t.contains(&format!("{file}: train.learning_rate: unknown key")),
            "{t}"
        );
        assert!(
            t.contains(&format!(
                "{file}: augment.hue: must be in [0, 0.5], got 0.9"
            )),
            "{t}"
        );
        // Nothing started: no run directory was created.
        assert!(!dir.path().join("runs").exists());
    }
}

#[test]
fn a_source_kind_is_a_closed_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[source]\ntype = \"parquet\"\npath = \"x\"\n").unwrap();
    let out = run_in(dir.path(), &["validate", path.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("source") && t.contains("parquet"), "{t}");
}

#[test]
fn environment_and_set_layers_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        "[source]\ntype = \"synthetic\"\n[train]\nbatch_size = 8\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .current_dir(dir.path())
        .args([
            "validate",
            path.to_str().unwrap(),
            "--print",
            "--set",
            "train.epochs=7",
        ])
        .env("DINO_STREAM__TRAIN__BATCH_SIZE", "24")
        .env("DINO_STREAM__TRAIN__EPOCHS", "5")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("batch_size = 24"), "env overrides the file: {t}");
    assert!(t.contains("epochs = 7"), "--set overrides env: {t}");
}
