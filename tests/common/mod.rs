//! Shared helpers for the PyTorch reference tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use dino_stream::augment::AugmentConfig;
use dino_stream::batch::Batch;
use dino_stream::rng::Rng;

/// The venv python with torch/timm: `DINO_STREAM_PYTHON`, else `<crate>/.venv/bin/python`.
/// Panics with a clear message when it is missing: these tests must not pass silently.
pub fn python() -> PathBuf {
    let p = std::env::var_os("DINO_STREAM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    assert!(
        p.exists(),
        "reference python not found at {} — set DINO_STREAM_PYTHON to a python with torch, timm \
         and safetensors (the PyTorch reference checks cannot run without it)",
        p.display()
    );
    p
}

/// Runs `tests/reference/<script>` with `args`; panics with its output unless it exits 0.
pub fn run_reference(script: &str, args: &[&Path]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference")
        .join(script);
    let out = Command::new(python())
        .arg(&script)
        .args(args)
        .env("CUDA_VISIBLE_DEVICES", "")
        .output()
        .expect("spawn reference python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{} failed:\n{text}", script.display());
    text
}

pub fn random_batch(aug: &AugmentConfig, size: usize, key: u64) -> Batch {
    let mut r = Rng::keyed(&[key]);
    let mut bytes = |n: usize| (0..n).map(|_| r.below(256) as u8).collect::<Vec<u8>>();
    Batch {
        size,
        global_size: aug.global_size,
        local_size: aug.local_size,
        local_crops: aug.local_crops,
        global: bytes(2 * size * aug.global_bytes()),
        local: bytes(aug.local_crops * size * aug.local_bytes()),
        labels: vec![None; size],
        epoch: 0,
        next: Default::default(),
    }
}
