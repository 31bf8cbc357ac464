//! Shared helpers for the integration tests: the real binary, small real data, tiny pipelines,
//! and the reference python (PyTorch, torchvision, timm in the venv).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dino-stream"))
}

/// Runs the binary with `args` in `cwd` (no DINO_STREAM__* leaking in from the environment).
pub fn run_in(cwd: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    // Caches the binary keeps by default (video keyframe indexes under $XDG_CACHE_HOME) stay
    // in the test's own directory, not in the home of whoever runs the tests.
    cmd.current_dir(cwd)
        .args(args)
        .env("DINO_STREAM_LOG", "info")
        .env("XDG_CACHE_HOME", cwd.join(".cache"));
    for (k, _) in std::env::vars() {
        if k.starts_with("DINO_STREAM__") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("run dino-stream")
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs the ffmpeg CLI (quiet, overwriting) and asserts that it succeeded.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg CLI (make installs it)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every frame of `video` as the ffmpeg CLI decodes it, as raw bytes on stdout (one frame per
/// picture, `-fps_mode passthrough`), with `output_args` (filters, pixel format) before
/// `-f rawvideo`; asserts that it succeeded.
pub fn ffmpeg_rawvideo(video: &Path, output_args: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-i"])
        .arg(video)
        .args(["-fps_mode", "passthrough"])
        .args(output_args)
        .args(["-f", "rawvideo", "-"])
        .output()
        .expect("ffmpeg CLI (make installs it)");
    assert!(
        out.status.success(),
        "ffmpeg -i {} {output_args:?}: {}",
        video.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A small labelled RGB image: class-dependent stripes plus noise.
pub fn sample_image(class: u32, index: u32, w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let stripe = ((x * (class + 1) + y * (index % 3 + 1)) / 4) % 2;
        let base = [
            (class * 80) % 256,
            255 - (class * 60) % 256,
            (index * 37) % 256,
        ];
        let v = |c: u32| if stripe == 1 { c as u8 } else { (c / 3) as u8 };
        image::Rgb([v(base[0]), v(base[1]), v(base[2])])
    })
}

/// `root/class_k/img_i.jpg` for `classes × per_class` images.
pub fn write_jpeg_folder(root: &Path, classes: u32, per_class: u32, size: u32) {
    for c in 0..classes {
        let dir = root.join(format!("class_{c}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let img = sample_image(c, i, size + (i % 3) * 7, size);
            img.save(dir.join(format!("img_{i:03}.jpg"))).unwrap();
        }
    }
}

/// The `[source]` body of an image folder at `root`.
pub fn image_folder_source(root: &Path) -> String {
    format!("type = \"image_folder\"\npath = \"{}\"", root.display())
}

/// A tiny model and recipe so a step takes milliseconds; `source` is the `[source]` body.
pub fn tiny_pipeline(dir: &Path, source: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[source]
{source}

[decode]
workers = 1
channel_capacity = 16

[augment]
workers = 2
channel_capacity = 16
global_size = 32
local_crops = 2
local_size = 16

[batcher]
channel_capacity = 2

[model]
arch = "vit"
embed_dim = 32
depth = 2
heads = 2
patch_size = 8
drop_path = 0.1
out_dim = 256
head_hidden = 64
head_bottleneck = 32

[train]
device = "cpu"
batch_size = 8
epochs = 4
warmup_epochs = 1
threads = 1
log_every = 1
monitor_every = 2

[checkpoint]
dir = "{ckpt}"
every_steps = 2
keep = 5

[metrics]
port = 0
{extra}
"#,
        ckpt = dir.join("run").display()
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Per-step losses from a run directory's `train_log.jsonl`.
pub fn losses(run_dir: &Path) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(run_dir.join("train_log.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

/// GET `path` from 127.0.0.1:`port`, returning the body.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// The value of an unlabelled (or first matching) sample in Prometheus text format.
pub fn metric_value(body: &str, name_with_labels: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name_with_labels) && l[name_with_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

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

/// Starts `run` of `pipeline` in `dir` with `/metrics` on `port`, until killed or stopped.
pub fn spawn_run(
    dir: &Path,
    pipeline: &Path,
    port: u16,
    output: fn() -> std::process::Stdio,
) -> std::process::Child {
    Command::new(bin())
        .current_dir(dir)
        .args([
            "run",
            pipeline.to_str().unwrap(),
            "--no-progress",
            "--set",
            &format!("metrics.port={port}"),
        ])
        .stdout(output())
        .stderr(output())
        .spawn()
        .expect("spawn dino-stream run")
}

/// A synthetic source large enough that a run outlives any test that watches it.
pub const ENDLESS_SYNTHETIC: &str = "type = \"synthetic\"\ncount = 4096\nwidth = 48\nheight = 48";

/// The first `n` batches of the data pipeline of `cfg` from `start` (no trainer).
pub fn pipeline_batches(
    cfg: &dino_stream::config::PipelineConfig,
    start: dino_stream::batch::Cursor,
    n: usize,
) -> Vec<dino_stream::batch::Batch> {
    let metrics = dino_stream::metrics::Metrics::new();
    let p = dino_stream::pipeline::Pipeline::start(
        cfg,
        cfg.source.open().unwrap(),
        start,
        cfg.train.epochs,
        &metrics,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let out: Vec<_> = (0..n).map_while(|_| p.batches.recv()).collect();
    p.shutdown();
    out
}

/// The tiny pipeline of `source` loaded with `sets` (`key=value` overrides), as a test that
/// drives the library's pipeline directly wants it.
pub fn tiny_config(
    dir: &Path,
    source: &str,
    sets: Vec<String>,
) -> dino_stream::config::PipelineConfig {
    let path = tiny_pipeline(dir, source, "");
    dino_stream::config::load(
        &path,
        &dino_stream::config::LoadOptions {
            sets,
            ..Default::default()
        },
    )
    .unwrap()
    .config
}

/// `dino-stream cache build PIPELINE --out OUT`, run in `dir`.
pub fn cache_build(dir: &Path, pipeline: &Path, out: &Path) -> Output {
    run_in(
        dir,
        &[
            "cache",
            "build",
            pipeline.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    )
}

/// Fashion-MNIST-format IDX files of `n` 28x28 garments: a filled rectangle of intensity
/// 60..255 (a dark garment too) on 0, whose size varies with `i`.
pub fn write_garments(dir: &std::path::Path, n: u32) {
    let mut images = vec![0, 0, 8, 3];
    for d in [n, 28, 28] {
        images.extend_from_slice(&d.to_be_bytes());
    }
    let mut labels = vec![0, 0, 8, 1];
    labels.extend_from_slice(&n.to_be_bytes());
    for i in 0..n {
        let (half, level) = (4 + i % 8, 60 + (i * 37 % 196) as u8);
        for y in 0..28u32 {
            for x in 0..28u32 {
                let inside = x.abs_diff(14) < half && y.abs_diff(14) < half + 2;
                images.push(if inside { level } else { 0 });
            }
        }
        labels.push((i % 10) as u8);
    }
    std::fs::write(dir.join("train-images-idx3-ubyte"), images).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), labels).unwrap();
}
