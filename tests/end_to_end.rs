//! The real binary, end to end, on small data the tests make: image folders with a corrupt
//! file, IDX files, a video made with the ffmpeg CLI, the shard cache, resume and Ctrl-C.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn corrupt_files(root: &Path) {
    let dir = root.join("class_0");
    // Truncated JPEG: a real header cut short.
    let good = std::fs::read(dir.join("img_000.jpg")).unwrap();
    std::fs::write(dir.join("truncated.jpg"), &good[..good.len() / 5]).unwrap();
    std::fs::write(dir.join("empty.jpg"), b"").unwrap();
}

#[test]
fn folder_run_checkpoints_skips_corrupt_files_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    write_jpeg_folder(&images, 3, 12, 40);
    corrupt_files(&images);
    let src = image_folder_source(&images);
    let pipeline = tiny_pipeline(dir.path(), &src, "");
    let p = pipeline.to_str().unwrap();

    let out = run_in(dir.path(), &["run", p, "--max-steps", "3", "--no-progress"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("2 unreadable samples skipped"),
        "both bad files skipped and counted: {t}"
    );
    assert!(
        t.contains("truncated.jpg") && t.contains("empty.jpg"),
        "skips logged with paths: {t}"
    );
    let run = dir.path().join("run");
    let ckpts = dino_stream::checkpoint::list(&run);
    assert_eq!(
        ckpts.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![2, 3],
        "every 2 steps and at the end"
    );
    let first = losses(&run);
    assert_eq!(
        first.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(first.iter().all(|(_, l)| l.is_finite()));

    let out = run_in(
        dir.path(),
        &["run", p, "--max-steps", "5", "--resume", "--no-progress"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let all = losses(&run);
    assert_eq!(
        all.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5],
        "resume continues at step 4"
    );
    let meta = dino_stream::checkpoint::load_meta(&dino_stream::checkpoint::latest(&run).unwrap())
        .unwrap();
    assert_eq!(meta.step, 5);
    // 38 files, 36 readable: epoch 0 holds 4 full batches of 8 (the 4 left over are dropped), so
    // step 5 is the first batch of epoch 1 and the cursor sits just past its 8 good samples.
    assert_eq!(meta.cursor.epoch, 1, "{:?}", meta.cursor);
    assert!(
        (8..=10).contains(&meta.cursor.position),
        "{:?}",
        meta.cursor
    );
}

#[test]
fn a_resumed_run_reproduces_the_uninterrupted_losses_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    write_jpeg_folder(&images, 2, 10, 36);
    let src = image_folder_source(&images);

    // Uninterrupted: 6 steps (2 epochs of 20 samples = 2 steps each, so this crosses epochs).
    let a = tempfile::tempdir().unwrap();
    let pa = tiny_pipeline(a.path(), &src, "");
    let out = run_in(
        a.path(),
        &[
            "run",
            pa.to_str().unwrap(),
            "--max-steps",
            "6",
            "--no-progress",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    // Interrupted after 3 steps (mid-epoch), then resumed to 6.
    let b = tempfile::tempdir().unwrap();
    let pb = tiny_pipeline(b.path(), &src, "");
    let out = run_in(
        b.path(),
        &[
            "run",
            pb.to_str().unwrap(),
            "--max-steps",
            "3",
            "--no-progress",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = run_in(
        b.path(),
        &[
            "run",
            pb.to_str().unwrap(),
            "--max-steps",
            "6",
            "--resume",
            "--no-progress",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    let (la, lb) = (losses(&a.path().join("run")), losses(&b.path().join("run")));
    assert_eq!(la.len(), 6);
    for ((sa, x), (sb, y)) in la.iter().zip(&lb) {
        assert_eq!(sa, sb);
        assert_eq!(x.to_bits(), y.to_bits(), "step {sa}: {x} vs {y}");
    }
}

#[test]
fn metrics_are_served_while_running_and_ctrl_c_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let pipeline = tiny_pipeline(dir.path(), ENDLESS_SYNTHETIC, "");
    let mut child = spawn_run(dir.path(), &pipeline, port, Stdio::piped);
    let body = wait_for(Duration::from_secs(60), || {
        let b = http_get(port, "/metrics")?;
        (metric_value(&b, "dino_stream_train_steps_total")? >= 2.0).then_some(b)
    });
    let Some(body) = body else {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!("no training metrics on /metrics: {}", text(&out));
    };
    for name in [
        "dino_stream_stage_items_total{stage=\"decode\"}",
        "dino_stream_stage_items_total{stage=\"augment\"}",
        "dino_stream_channel_capacity{channel=\"batch\"}",
        "dino_stream_train_loss",
        "dino_stream_train_lr",
        "dino_stream_train_images_per_second",
    ] {
        assert!(
            metric_value(&body, name).is_some(),
            "{name} missing from /metrics:\n{body}"
        );
    }
    assert!(metric_value(&body, "dino_stream_train_loss")
        .unwrap()
        .is_finite());

    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(dino_stream::exit::INTERRUPTED as i32),
        "Ctrl-C exits with the interrupted code: {}",
        text(&out)
    );
    assert!(text(&out).contains("(interrupted)"), "{}", text(&out));
    let latest = dino_stream::checkpoint::latest(&dir.path().join("run"))
        .expect("a checkpoint after Ctrl-C");
    let meta = dino_stream::checkpoint::load_meta(&latest).unwrap();
    assert_eq!(
        meta.step,
        losses(&dir.path().join("run")).last().unwrap().0,
        "the last finished step is saved"
    );
}

#[test]
fn a_metrics_port_in_use_is_a_clear_error_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let pipeline = tiny_pipeline(dir.path(), "type = \"synthetic\"", "");
    let out = run_in(
        dir.path(),
        &[
            "run",
            pipeline.to_str().unwrap(),
            "--set",
            &format!("metrics.port={port}"),
        ],
    );
    let t = text(&out);
    assert!(!out.status.success());
    assert!(
        t.contains(&format!("127.0.0.1:{port}")) && t.contains("metrics.port"),
        "{t}"
    );
    assert!(losses(&dir.path().join("run")).is_empty(), "no step ran");
}

#[cfg(feature = "video")]
#[test]
fn video_frames_train_and_a_corrupt_video_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let videos = dir.path().join("videos");
    std::fs::create_dir_all(&videos).unwrap();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=10:duration=4",
        "-pix_fmt",
        "yuv420p",
        videos.join("a.mp4").to_str().unwrap(),
    ]);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "mandelbrot=size=64x48:rate=10",
        "-t",
        "3",
        "-pix_fmt",
        "yuv420p",
        videos.join("b.mkv").to_str().unwrap(),
    ]);
    std::fs::write(videos.join("broken.mp4"), b"this is not a video at all").unwrap();
    let src = format!(
        "type = \"video\"\npath = \"{}\"\nstride = 2",
        videos.display()
    );
    let pipeline = tiny_pipeline(dir.path(), &src, "");
    let out = run_in(
        dir.path(),
        &[
            "run",
            pipeline.to_str().unwrap(),
            "--max-steps",
            "4",
            "--no-progress",
            "--set",
            "train.steps_per_epoch=10",
        ],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("broken.mp4"),
        "the corrupt video is logged by path: {t}"
    );
    assert!(
        t.contains("1 unreadable samples skipped"),
        "and counted: {t}"
    );
    assert_eq!(losses(&dir.path().join("run")).len(), 4);
}

#[test]
fn cache_build_verify_train_and_detect_a_flipped_bit() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    write_jpeg_folder(&images, 2, 10, 40);
    corrupt_files(&images);
    let src = image_folder_source(&images);
    let pipeline = tiny_pipeline(dir.path(), &src, "");
    let cache = dir.path().join("cache");
    let out = cache_build(dir.path(), &pipeline, &cache);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("20 images written, 2 skipped"), "{t}");
    let out = run_in(dir.path(), &["cache", "verify", cache.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));

    let cached = tiny_pipeline(
        dir.path(),
        &format!("type = \"cache\"\npath = \"{}\"", cache.display()),
        "",
    );
    let out = run_in(
        dir.path(),
        &[
            "run",
            cached.to_str().unwrap(),
            "--max-steps",
            "2",
            "--no-progress",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("0 unreadable samples skipped"),
        "{}",
        text(&out)
    );

    let shard = cache.join("shard-00000.dsc");
    let mut bytes = std::fs::read(&shard).unwrap();
    let i = bytes.len() - 100;
    bytes[i] ^= 1;
    std::fs::write(&shard, bytes).unwrap();
    let out = run_in(dir.path(), &["cache", "verify", cache.to_str().unwrap()]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("checksum mismatch") && t.contains("shard-00000.dsc"),
        "{t}"
    );
}

fn write_idx(dir: &Path, prefix: &str, n: u32) {
    let side = 28u32;
    let mut images = vec![0, 0, 8, 3];
    for d in [n, side, side] {
        images.extend_from_slice(&d.to_be_bytes());
    }
    let mut labels = vec![0, 0, 8, 1];
    labels.extend_from_slice(&n.to_be_bytes());
    for i in 0..n {
        let class = i % 2;
        let img = sample_image(class, i, side, side);
        images.extend(img.pixels().map(|p| p.0[0]));
        labels.push(class as u8);
    }
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
}

#[test]
fn idx_training_then_knn_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("idx");
    std::fs::create_dir_all(&data).unwrap();
    write_idx(&data, "train", 64);
    write_idx(&data, "t10k", 32);
    let src = format!("type = \"idx\"\npath = \"{}\"", data.display());
    let knn = format!(
        "[eval.knn]\nk = 5\nbatch_size = 16\n[eval.knn.train]\ntype = \"idx\"\npath = \"{0}\"\n[eval.knn.test]\ntype = \"idx\"\npath = \"{0}\"\nsplit = \"test\"\n",
        data.display()
    );
    let pipeline = tiny_pipeline(dir.path(), &src, &knn);
    let out = run_in(
        dir.path(),
        &[
            "run",
            pipeline.to_str().unwrap(),
            "--max-steps",
            "2",
            "--no-progress",
        ],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let line = t
        .lines()
        .find(|l| l.starts_with("k-NN accuracy"))
        .unwrap_or_else(|| panic!("no k-NN line: {t}"));
    assert!(
        line.contains("trained") && line.contains("untrained"),
        "{line}"
    );
    let out = run_in(dir.path(), &["eval", "knn", pipeline.to_str().unwrap()]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("k-NN accuracy (k=5, T=0.07) of"), "{t}");
}

/// `bench pipeline` prints every figure the speed notes quote (pipeline, per-stage, decode-only,
/// their ratio, and the serial one-core decode + multi-crop), each a positive rate. Speed itself
/// is measured in benchmarks, not asserted here.
#[test]
fn bench_pipeline_reports_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    write_jpeg_folder(&dir.path().join("data"), 2, 4, 48);
    let source = image_folder_source(&dir.path().join("data"));
    let pipeline = tiny_pipeline(dir.path(), &source, "");
    let out = run_in(
        dir.path(),
        &[
            "bench",
            "pipeline",
            pipeline.to_str().unwrap(),
            "--seconds",
            "1",
        ],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let rate = |prefix: &str| -> f64 {
        let line = t
            .lines()
            .map(str::trim_start)
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{t}"));
        let number = line[prefix.len()..]
            .split_whitespace()
            .next()
            .and_then(|w| w.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no number after {prefix:?}: {line}"));
        assert!(number > 0.0, "{line}");
        number
    };
    rate("pipeline:");
    rate("decode ");
    rate("augment ");
    rate("decode-only:");
    rate("ratio pipeline/decode-only:");
    rate("decode+augment on one core, serially:");
}
