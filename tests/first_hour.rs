//! A new user's first hour (issue 15), through the real binary: k-NN labels by class name,
//! every source opened before step 1, the checkpoint's configuration as the source of truth,
//! presets, device and precision checks, broken pipes, and the messages around them.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The k-NN accuracy printed by `eval knn`.
fn accuracy(out: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with("k-NN accuracy"))
        .unwrap_or_else(|| panic!("no accuracy line in:\n{out}"));
    let pct = line.rsplit(' ').next().unwrap().trim_end_matches('%');
    pct.parse().unwrap()
}

fn knn_section(train: &Path, test: &Path) -> String {
    format!(
        "[eval.knn]\nk = 5\nbatch_size = 16\ncompare_untrained = false\n\
         [eval.knn.train]\n{}\n[eval.knn.test]\n{}\n",
        image_folder_source(train),
        image_folder_source(test)
    )
}

#[test]
fn knn_labels_follow_class_names_and_one_sided_classes_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (bank, full, part, other) = (
        dir.path().join("bank"),
        dir.path().join("full"),
        dir.path().join("part"),
        dir.path().join("other"),
    );
    write_jpeg_folder(&bank, 3, 8, 40);
    write_jpeg_folder(&full, 3, 3, 40);
    // The queries lack class_0: by folder position, class_1 would be label 0 here.
    write_jpeg_folder(&part, 3, 3, 40);
    std::fs::remove_dir_all(part.join("class_0")).unwrap();
    std::fs::create_dir_all(other.join("zebra")).unwrap();
    std::fs::copy(
        full.join("class_0/img_000.jpg"),
        other.join("zebra/img_000.jpg"),
    )
    .unwrap();

    let eval = |test: &Path| {
        let p = tiny_pipeline(
            dir.path(),
            &image_folder_source(&bank),
            &knn_section(&bank, test),
        );
        run_in(dir.path(), &["eval", "knn", s(&p), "--untrained"])
    };
    let out = eval(&full);
    assert!(out.status.success(), "{}", text(&out));
    let acc_full = accuracy(&text(&out));
    let out = eval(&part);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let acc_part = accuracy(&t);
    // The untrained network separates these colour-coded classes; with labels by position the
    // partial test folder scored 0.00%.
    assert!(acc_full > 60.0, "{t}");
    assert!(acc_part > 60.0, "full {acc_full}, part {acc_part}: {t}");
    assert!(
        t.contains("classes in eval.knn.train but not in eval.knn.test: class_0"),
        "{t}"
    );
    // No class in common: an error, not a silent 0%.
    let out = eval(&other);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("share no class name"), "{t}");
    assert!(t.contains("zebra"), "{t}");
}

#[test]
fn validate_and_run_open_the_evaluation_sources_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_jpeg_folder(&data, 2, 8, 40);
    let missing = dir.path().join("imagenet/val");
    let p = tiny_pipeline(
        dir.path(),
        &image_folder_source(&data),
        &knn_section(&data, &missing),
    );
    for cmd in ["validate", "run"] {
        let out = run_in(dir.path(), &[cmd, s(&p)]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {t}");
        assert!(
            t.contains(&format!(
                "eval.knn.test.path: {}: not a directory",
                missing.display()
            )),
            "{t}"
        );
        assert!(t.contains("--no-eval"), "{t}");
        assert!(!dir.path().join("run").exists(), "{cmd} started: {t}");
    }
    let out = run_in(
        dir.path(),
        &["validate", s(&p), "--set", "eval.knn.enabled=false"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = run_in(
        dir.path(),
        &[
            "run",
            s(&p),
            "--no-eval",
            "--max-steps",
            "1",
            "--no-progress",
        ],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(!t.contains("k-NN accuracy"), "{t}");
}

#[test]
fn the_checkpoint_decides_the_model_and_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_jpeg_folder(&data, 2, 12, 40);
    let p = tiny_pipeline(
        dir.path(),
        &image_folder_source(&data),
        &knn_section(&data, &data),
    );
    // Trained with a width the pipeline file does not have.
    let out = run_in(
        dir.path(),
        &[
            "run",
            s(&p),
            "--set",
            "model.embed_dim=48",
            "--max-steps",
            "2",
            "--no-eval",
            "--no-progress",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    // eval knn without the --set: the checkpoint's model (was: a shape error).
    let out = run_in(dir.path(), &["eval", "knn", s(&p)]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("model.embed_dim = 48 from the checkpoint"),
        "{t}"
    );
    // A --set that contradicts the checkpoint names the key.
    let out = run_in(
        dir.path(),
        &["eval", "knn", s(&p), "--set", "model.embed_dim=64"],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("model.embed_dim: set to 64"), "{t}");

    // Resume: another batch size on the command line is a conflict...
    let resume = |extra: &[&str]| {
        let mut args = vec!["run", s(&p), "--resume", "--max-steps", "3"];
        args.extend_from_slice(&["--no-eval", "--no-progress"]);
        args.extend_from_slice(extra);
        run_in(dir.path(), &args)
    };
    let out = resume(&["--set", "train.batch_size=4"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("train.batch_size: set to 4 but the checkpoint"),
        "{t}"
    );
    assert!(t.contains("--allow-config-change"), "{t}");
    // ...while the file's own values give way to the checkpoint's, with a note: the file says
    // embed_dim 32 and (edited now) batch size 4; the checkpoint has 48 and 8.
    let text_now = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text_now.replace("batch_size = 8", "batch_size = 4")).unwrap();
    let out = resume(&[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("resume: model.embed_dim = 48 from the checkpoint"),
        "{t}"
    );
    assert!(
        t.contains("resume: train.batch_size = 8 from the checkpoint (the pipeline says 4)"),
        "{t}"
    );
    let log = std::fs::read_to_string(dir.path().join("run/train_log.jsonl")).unwrap();
    let steps: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(steps.last().unwrap()["step"], 3, "{log}");
    // With the override flag the new batch size is taken.
    let mut args = vec!["run", s(&p), "--resume", "--max-steps", "4", "--no-eval"];
    args.extend_from_slice(&["--no-progress", "--set", "train.batch_size=2"]);
    args.push("--allow-config-change");
    let out = run_in(dir.path(), &args);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("train.batch_size = 2 as set (the checkpoint has 8)"),
        "{t}"
    );
}

#[test]
fn presets_show_their_real_sizes_and_reject_overridden_ones() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        "[source]\ntype = \"synthetic\"\n[model]\narch = \"vit_tiny\"\n[train]\ndevice = \"cpu\"\n",
    )
    .unwrap();
    let out = run_in(dir.path(), &["validate", s(&p), "--print"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("embed_dim = 192"), "{t}");
    assert!(t.contains("heads = 3"), "{t}");
    let out = run_in(
        dir.path(),
        &["validate", s(&p), "--set", "model.embed_dim=512"],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("--set: model.embed_dim: 512 is ignored: model.arch = \"vit_tiny\" fixes embed_dim = 192"),
        "{t}"
    );
}

#[test]
fn device_and_precision_are_checked_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny_pipeline(dir.path(), "type = \"synthetic\"\ncount = 64", "");
    if !tch::Cuda::is_available() {
        let out = run_in(
            dir.path(),
            &["run", s(&p), "--set", "train.device=cuda", "--no-progress"],
        );
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{t}");
        assert!(
            t.contains("train.device: \"cuda\", but libtorch finds no CUDA GPU"),
            "{t}"
        );
        assert!(!t.contains("panicked"), "{t}");
        assert!(!dir.path().join("run").exists());
    }
    let out = run_in(
        dir.path(),
        &[
            "run",
            s(&p),
            "--set",
            "train.precision=fp16",
            "--no-progress",
        ],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("train.precision: \"fp16\" needs a CUDA device"),
        "{t}"
    );
    assert!(!dir.path().join("run").exists());
}

#[test]
fn output_piped_into_head_ends_quietly() {
    let mut child = Command::new(bin())
        .args(["config"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read nothing: close our end at once, like `head -0`.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("Broken pipe"), "{err}");
}

#[test]
fn messages_name_the_place_and_say_things_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // TOML syntax: file, line and column.
    let bad = d.join("bad.toml");
    std::fs::write(&bad, "[source]\ntype = \"synthetic\"\n[train\n").unwrap();
    let t = text(&run_in(d, &["validate", s(&bad)]));
    assert!(
        t.contains(&format!("{}:3:7: not valid TOML", bad.display())),
        "{t}"
    );
    // The environment variable is named, and types are TOML's, not Rust's.
    let p = tiny_pipeline(d, "type = \"synthetic\"\ncount = 64", "");
    let out = Command::new(bin())
        .current_dir(d)
        .args(["validate", s(&p)])
        .env("DINO_STREAM__TRAIN__BATCH_SIZE", "many")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(
        t.contains("environment variable DINO_STREAM__TRAIN__BATCH_SIZE: train.batch_size"),
        "{t}"
    );
    assert!(t.contains("expected a whole number"), "{t}");
    assert!(!t.contains("usize"), "{t}");
    // An error is not repeated by its cause.
    let out = run_in(d, &["eval", "knn", s(&p), "--checkpoint", "nowhere/step-1"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert_eq!(t.matches("no such checkpoint").count(), 1, "{t}");
    // cache verify on a directory that is no cache.
    let t = text(&run_in(d, &["cache", "verify", s(d)]));
    assert!(t.contains("is not a shard cache"), "{t}");
    // An unknown main_dino.py flag points to its key.
    let t = text(&run_in(d, &["run", s(&p), "--epochs", "5"]));
    assert!(t.contains("--set train.epochs=5"), "{t}");

    // Logs: no colours when redirected, no Rust debug values, the checkpoint directory named.
    let out = run_in(d, &["run", s(&p), "--max-steps", "1", "--no-progress"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(!t.contains('\x1b'), "{t}");
    assert!(!t.contains("Some("), "{t}");
    assert!(
        t.contains(&format!("checkpoints in {}", d.join("run").display())),
        "{t}"
    );
    // export of a step that does not exist lists the ones that do.
    let out = run_in(
        d,
        &[
            "export",
            s(&d.join("run/step-000000099")),
            "--out",
            "x.safetensors",
        ],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("no such checkpoint; the checkpoints there are:"),
        "{t}"
    );
    assert!(t.contains("step-000000001"), "{t}");
}

#[test]
fn export_takes_a_run_dir_and_the_printed_python_loads_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = tiny_pipeline(d, "type = \"synthetic\"\ncount = 64", "");
    let out = run_in(d, &["run", s(&p), "--max-steps", "1", "--no-progress"]);
    assert!(out.status.success(), "{}", text(&out));
    let file = d.join("backbone.safetensors");
    let out = run_in(d, &["export", s(&d.join("run")), "--out", s(&file)]);
    let t = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    let code: String = t
        .lines()
        .skip_while(|l| !l.starts_with("load it in Python"))
        .skip(1)
        .collect::<Vec<_>>()
        .join("\n");
    let check = format!(
        "{code}\nfrom safetensors import safe_open\n\
         m = safe_open({:?}, 'pt').metadata()\n\
         assert m['dino_stream.arch'] == 'vit' and m['dino_stream.patch_size'] == '8', m\n\
         assert m['dino_stream.image_size'] == '32' and m['dino_stream.embed_dim'] == '32', m\n\
         assert 'batch_size = 8' in m['dino_stream.config']\n\
         print('loaded', sum(p.numel() for p in model.parameters()))\n",
        file.display().to_string()
    );
    let out = Command::new(python())
        .args(["-c", &check])
        .env("CUDA_VISIBLE_DEVICES", "")
        .output()
        .unwrap();
    assert!(out.status.success(), "{code}\n{}", text(&out));
}

#[test]
fn eval_knn_takes_labelled_folders_and_a_checkpoint_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("data");
    write_jpeg_folder(&data, 2, 8, 40);
    let p = tiny_pipeline(d, &image_folder_source(&data), "");
    let out = run_in(d, &["run", s(&p), "--max-steps", "1", "--no-progress"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run_in(
        d,
        &[
            "eval",
            "knn",
            "--checkpoint",
            s(&d.join("run")),
            "--train",
            s(&data),
            "--test",
            s(&data),
        ],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(accuracy(&t) > 0.0, "{t}");
}

#[test]
fn image_folders_decode_webp_bmp_tiff_follow_links_and_report_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let elsewhere = d.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    for (i, ext) in ["webp", "bmp", "tif", "png", "JPG"].iter().enumerate() {
        sample_image(1, i as u32, 40, 40)
            .save_with_format(
                elsewhere.join(format!("img_{i}.{ext}")),
                image::ImageFormat::from_extension(ext.to_lowercase()).unwrap(),
            )
            .unwrap();
    }
    std::fs::write(elsewhere.join("notes.txt"), "not an image").unwrap();
    let root = d.join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.join("linked_class")).unwrap();
    let p = tiny_pipeline(d, &image_folder_source(&root), "");
    let out = run_in(d, &["cache", "build", s(&p), "--out", s(&d.join("cache"))]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("5 images written, 0 skipped"), "{t}");
    assert!(
        t.contains("skipped files that are not images of a supported kind: 1 .txt"),
        "{t}"
    );
}
