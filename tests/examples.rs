//! Every command example in README.md and in `dino-stream --help` runs here, so an example can
//! never again be wrong: pipeline commands through `validate` (every key, every source opened,
//! the device), the others as written (they must get past argument parsing), in a sandbox where
//! the data paths they name exist (absolute `/data/…` and the Fashion-MNIST path rewritten into
//! a temporary directory, with small real images, IDX files and a video in them).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const FASHION: &str = "/usr/share/datasets/fashion-mnist";

fn idx(path: &Path, magic: u32, dims: &[u32], data: &[u8]) {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

/// A sandbox: `pipelines/` with its data paths rewritten under `root`, and the data.
fn sandbox(root: &Path) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = root.join("data");
    std::fs::create_dir_all(root.join("pipelines")).unwrap();
    for entry in std::fs::read_dir(repo.join("pipelines")).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let text = text
            .replace("\"/data/", &format!("\"{}/", data.display()))
            .replace(FASHION, &root.join("fashion-mnist").display().to_string());
        std::fs::write(root.join("pipelines").join(entry.file_name()), text).unwrap();
    }
    // ImageNet layout, more than one batch of 128 (the --help example's batch size); the other
    // folders are symbolic links to it (image folders follow them).
    write_jpeg_folder(&data.join("imagenet/train"), 2, 65, 32);
    write_jpeg_folder(&data.join("imagenet/val"), 2, 4, 32);
    // What `dino-stream composite` writes for pipelines/composite.toml (relative paths).
    write_jpeg_folder(&root.join("runs/composite-train/images"), 2, 65, 64);
    write_jpeg_folder(&root.join("runs/composite-test/images"), 2, 4, 64);
    std::fs::create_dir_all(data.join("pets")).unwrap();
    for d in ["my-images", "pets/train", "pets/val"] {
        std::os::unix::fs::symlink(data.join("imagenet/train"), data.join(d)).unwrap();
    }
    // pipelines/webdataset.toml's two tar shards, from the ImageNet-layout folder's images.
    let wds = data.join("imagenet-wds");
    std::fs::create_dir_all(&wds).unwrap();
    for (shard, class) in ["class_0", "class_1"].iter().enumerate() {
        let file = std::fs::File::create(wds.join(format!("train-{shard:06}.tar"))).unwrap();
        let mut tar = tar::Builder::new(file);
        let dir = data.join("imagenet/train").join(class);
        let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let name = e.file_name().to_string_lossy().into_owned();
            tar.append_path_with_name(e.path(), format!("{class}/{name}"))
                .unwrap();
            let key = name.trim_end_matches(".jpg");
            let mut h = tar::Header::new_ustar();
            h.set_size(1);
            h.set_mode(0o644);
            tar.append_data(
                &mut h,
                format!("{class}/{key}.cls"),
                &[b'0' + shard as u8][..],
            )
            .unwrap();
        }
        tar.finish().unwrap();
    }
    // Fashion-MNIST's four IDX files, 200 training and 50 test images.
    let fm = root.join("fashion-mnist");
    std::fs::create_dir_all(&fm).unwrap();
    for (split, n) in [("train", 200u32), ("t10k", 50)] {
        let pixels: Vec<u8> = (0..n * 784).map(|i| (i * 7 % 251) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        idx(
            &fm.join(format!("{split}-images-idx3-ubyte")),
            0x803,
            &[n, 28, 28],
            &pixels,
        );
        idx(
            &fm.join(format!("{split}-labels-idx1-ubyte")),
            0x801,
            &[n],
            &labels,
        );
    }
    // Videos: the relative `data/videos` of pipelines/video.toml and /data/my-videos.
    for d in [root.join("data/videos"), data.join("my-videos")] {
        std::fs::create_dir_all(&d).unwrap();
        let out = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg("testsrc=size=64x48:rate=10:duration=20")
            .args(["-pix_fmt", "yuv420p"])
            .arg(d.join("clip.mp4"))
            .output()
            .expect("ffmpeg CLI (make installs it)");
        assert!(out.status.success(), "ffmpeg: {}", text(&out));
    }
}

/// `dino-stream …` command lines in README.md (indented code) and `--help` (its Examples).
fn examples() -> Vec<(String, String)> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    for line in readme.lines() {
        if let Some(cmd) = line.strip_prefix("    dino-stream ") {
            let cmd = cmd.split("  #").next().unwrap().trim();
            found.push(("README.md".to_string(), cmd.to_string()));
        }
    }
    let help = Command::new(bin()).arg("--help").output().unwrap();
    for line in String::from_utf8_lossy(&help.stdout).lines() {
        if let Some(cmd) = line.strip_prefix("  dino-stream ") {
            found.push(("--help".to_string(), cmd.trim().to_string()));
        }
    }
    found
}

/// The `validate` command that checks a pipeline example: its pipeline and `--set`s.
fn as_validate(args: &[String]) -> Option<Vec<String>> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let pipeline_at = match words[..] {
        ["run" | "validate", ..] => 1,
        ["cache", "build", ..] | ["bench", "pipeline" | "train", ..] => 2,
        ["eval", "knn", p, ..] if p.ends_with(".toml") => 2,
        _ => return None,
    };
    let mut out = vec!["validate".to_string(), args[pipeline_at].clone()];
    let mut i = pipeline_at + 1;
    while i < args.len() {
        match words[i] {
            "--set" => {
                out.push("--set".into());
                out.push(args[i + 1].clone());
                i += 1;
            }
            "--no-eval" => out.extend(["--set".into(), "eval.knn.enabled=false".into()]),
            _ => {}
        }
        i += 1;
    }
    Some(out)
}

#[test]
fn every_readme_and_help_example_validates() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    sandbox(root);
    let examples = examples();
    assert!(
        examples.iter().filter(|(w, _)| w == "--help").count() >= 5,
        "{examples:?}"
    );
    assert!(
        examples.iter().filter(|(w, _)| w == "README.md").count() >= 8,
        "{examples:?}"
    );
    let data = root.join("data").display().to_string();
    let mut failures = Vec::new();
    for (whence, cmd) in &examples {
        let args: Vec<String> = cmd
            .split_whitespace()
            .map(|a| a.replace("=/data/", &format!("={data}/")))
            .map(|a| match a.strip_prefix("/data/") {
                Some(rest) => format!("{data}/{rest}"),
                None => a,
            })
            .collect();
        let (run, must_succeed) = match as_validate(&args) {
            Some(v) => (v, true),
            None => (args.clone(), args[0] == "config"),
        };
        let refs: Vec<&str> = run.iter().map(String::as_str).collect();
        let out = run_in(root, &refs);
        let t = text(&out);
        let usage_error = t.contains("Usage: dino-stream")
            || t.contains("unexpected argument")
            || t.contains("invalid value");
        if usage_error || (must_succeed && !out.status.success()) {
            failures.push(format!("{whence}: dino-stream {cmd}\n  ran: {run:?}\n{t}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn shipped_pipelines_validate() {
    let dir = tempfile::tempdir().unwrap();
    sandbox(dir.path());
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut shipped: Vec<String> = std::fs::read_dir(repo.join("pipelines"))
        .unwrap()
        .flatten()
        .map(|e| format!("pipelines/{}", e.file_name().to_string_lossy()))
        .filter(|p| p.ends_with(".toml"))
        .collect();
    shipped.sort();
    assert!(shipped.len() >= 7, "{shipped:?}");
    for p in &shipped {
        let p = p.as_str();
        let out = run_in(dir.path(), &["validate", p]);
        assert!(out.status.success(), "{p}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{p}: ok")));
    }
}
