//! Official DINO and timm weights in: `.pth` (read without Python) and `.safetensors` files made
//! by PyTorch with DINO's own model code (tests/reference/weights_ref.py) import and give the
//! same attention maps, intermediate tokens and features as that code on the same input.

mod common;

use std::collections::HashMap;
use std::path::Path;

use dino_stream::eval::loader::{FeatureModel, OpenOptions};
use dino_stream::viz::attention::mass_mask;
use dino_stream::weights::{self, Which};
use tch::{Kind, Tensor};

fn reference() -> (tempfile::TempDir, HashMap<String, Tensor>) {
    let dir = tempfile::tempdir().unwrap();
    common::run_reference("weights_ref.py", &[dir.path()]);
    let expected = Tensor::read_safetensors(dir.path().join("expected.safetensors"))
        .unwrap()
        .into_iter()
        .collect();
    (dir, expected)
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.size(), want.size(), "{what}: shape");
    let got = got.to_kind(Kind::Double);
    let want = want.to_kind(Kind::Double);
    let err = (&got - &want).abs().max().double_value(&[]);
    assert!(err <= tol, "{what}: max abs error {err:e} > {tol:e}");
}

fn open(path: &Path, which: Which) -> FeatureModel {
    FeatureModel::open(
        path,
        OpenOptions {
            which,
            ..OpenOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn official_and_timm_weights_match_their_own_code() {
    tch::set_num_threads(1);
    let (dir, want) = reference();
    let images = &want["images"];

    // Attention of a tiny ViT with known weights equals DINO's get_last_selfattention, on an
    // image of another size than the position grid (interpolated), from .pth and .safetensors.
    for file in ["backbone.pth", "backbone.safetensors"] {
        let model = open(&dir.path().join(file), Which::Teacher);
        let vit = model.vit().unwrap();
        assert_eq!(vit.dims.img_size, 32, "{file}");
        assert_eq!(vit.dims.heads, 2, "{file}");
        let x = model.normalize(images);
        let attn = tch::no_grad(|| vit.last_selfattention(&x));
        assert_close(
            &format!("{file} attention"),
            &attn,
            &want["attention"],
            1e-5,
        );
        let layers = tch::no_grad(|| vit.intermediate_layers(&x, 2));
        assert_eq!(layers.len(), 2);
        for (i, t) in layers.iter().enumerate() {
            assert_close(
                &format!("{file} intermediate {i}"),
                t,
                &want[&format!("intermediate{i}")],
                1e-4,
            );
        }
        assert_close(
            &format!("{file} features"),
            &model.features(images),
            &want["features"],
            1e-4,
        );
        // The 60%-mass mask of visualize_attention.py, from the same attention.
        let cls = attn.get(0).select(1, 0).narrow(1, 1, 30);
        assert_close("cls attention", &cls, &want["cls_attention0"], 1e-5);
        let mask = mass_mask(&want["cls_attention0"], 0.6);
        assert!(
            mask.to_kind(Kind::Uint8).equal(&want["mask60"]),
            "60% mass mask differs from DINO's"
        );
    }

    // A DINO training checkpoint: teacher by default, the DDP-wrapped student on request.
    let full = dir.path().join("full.pth");
    let teacher = open(&full, Which::Teacher);
    assert_close(
        "teacher features",
        &teacher.features(images),
        &want["teacher_features"],
        1e-4,
    );
    let student = open(&full, Which::Student);
    assert_close(
        "student features",
        &student.features(images),
        &want["student_features"],
        1e-4,
    );
    let imported =
        weights::select(&full, weights::read_file(&full).unwrap(), Which::Teacher).unwrap();
    assert!(imported.head.contains_key("last_layer.weight_g"));
    assert!(imported.head.contains_key("mlp.0.weight"));

    // timm's ViT (classifier head dropped), from .pth and .safetensors.
    let native = images.narrow(1, 0, 32).narrow(2, 0, 32);
    for file in ["timm.pth", "timm.safetensors"] {
        let model = open(&dir.path().join(file), Which::Teacher);
        assert_close(
            &format!("{file} features"),
            &model.features(&native),
            &want["timm_features"],
            1e-4,
        );
    }
}

#[test]
fn the_pth_reader_handles_dtypes_views_and_nesting() {
    let (dir, want) = reference();
    let got: HashMap<String, Tensor> = weights::pth::read(&dir.path().join("tensors.pth"))
        .unwrap()
        .into_iter()
        .collect();
    for name in [
        "nested.half",
        "nested.bf16",
        "double",
        "long",
        "transposed",
        "view_a",
        "view_b",
        "param",
        "scalar",
    ] {
        let g = got.get(name).unwrap_or_else(|| panic!("{name} missing"));
        let w = &want[name];
        assert_eq!(g.kind(), w.kind(), "{name} dtype");
        assert!(g.equal(w), "{name}: {g:?} vs {w:?}");
    }
    assert_eq!(got.len(), 9, "{:?}", got.keys().collect::<Vec<_>>());
}

#[test]
fn bad_weight_files_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pth");
    std::fs::write(&junk, b"PK\x03\x04 this is not a zip").unwrap();
    let err = FeatureModel::open(&junk, OpenOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("junk.pth"), "{err}");
    let other = dir.path().join("other.safetensors");
    Tensor::write_safetensors(
        &[("w", Tensor::zeros([2, 2], tch::kind::FLOAT_CPU))],
        &other,
    )
    .unwrap();
    let err = FeatureModel::open(&other, OpenOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("other.safetensors") && err.contains("no ViT backbone"),
        "{err}"
    );
}

/// Continued pretraining: an engine whose `[model]` matches the official checkpoint starts
/// from its teacher (backbone and DINO head), in both networks.
#[test]
fn training_starts_from_an_official_checkpoint() {
    use dino_stream::augment::AugmentConfig;
    use dino_stream::model::{Arch, ModelConfig};
    use dino_stream::train::engine::Engine;
    use dino_stream::train::{Plan, TrainConfig};
    tch::set_num_threads(1);
    let (dir, want) = reference();
    let model = ModelConfig {
        arch: Arch::Vit,
        embed_dim: 128,
        depth: 2,
        heads: 2,
        patch_size: 8,
        mlp_ratio: 4.0,
        drop_path: 0.1,
        out_dim: 64,
        head_hidden: 32,
        head_bottleneck: 16,
        head_layers: 3,
        head_bn: false,
        norm_last_layer: true,
        sync_bn: true,
        ..Default::default()
    };
    let augment = AugmentConfig {
        global_size: 32,
        local_size: 16,
        ..AugmentConfig::default()
    };
    let train = TrainConfig {
        device: dino_stream::train::config::DeviceChoice::Cpu,
        ..TrainConfig::default()
    };
    let plan = Plan {
        steps_per_epoch: 10,
        epochs: 1,
    };
    let mut engine = Engine::new(&model, &train, &augment, plan, tch::Device::Cpu).unwrap();
    let what = engine.init_from(&dir.path().join("full.pth")).unwrap();
    assert!(what.contains("with its DINO head"), "{what}");
    assert_close(
        "teacher features after init_from",
        &engine.teacher_features(&want["images"]),
        &want["teacher_features"],
        1e-4,
    );
    let student = engine
        .student()
        .params
        .get("head.last_layer.weight_v")
        .unwrap();
    let teacher = engine
        .teacher()
        .params
        .get("head.last_layer.weight_v")
        .unwrap();
    assert!(student.equal(teacher));

    // A mismatched architecture is refused with the file and tensor named.
    let wrong = ModelConfig {
        embed_dim: 64,
        heads: 1,
        ..model
    };
    let mut engine = Engine::new(&wrong, &train, &augment, plan, tch::Device::Cpu).unwrap();
    let err = engine
        .init_from(&dir.path().join("full.pth"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("full.pth") && err.contains("shape"), "{err}");
}

/// The supervised baseline of `eval segment`: scripts/train-supervised-vit.py trains timm's
/// ViT on a composite set's labels and writes a state dict that imports with the given heads;
/// `eval segment --supervised` then scores it as a third row, head by head.
#[test]
fn the_supervised_baseline_script_writes_weights_that_eval_segment_scores() {
    let dir = tempfile::tempdir().unwrap();
    let (garments, backgrounds, set) = (
        dir.path().join("fmnist"),
        dir.path().join("bg"),
        dir.path().join("set"),
    );
    std::fs::create_dir_all(&garments).unwrap();
    std::fs::create_dir_all(&backgrounds).unwrap();
    common::write_garments(&garments, 30);
    image::RgbImage::from_fn(80, 72, |x, y| {
        image::Rgb([(x * 3) as u8, (y * 3) as u8, 90])
    })
    .save(backgrounds.join("gradient.png"))
    .unwrap();
    let spec = dino_stream::eval::composite::CompositeSpec {
        fashion_mnist: garments,
        split: dino_stream::source::IdxSplit::Train,
        backgrounds,
        count: 24,
        size: 32,
        seed: 0,
        garment_scale: [0.4, 0.8],
    };
    dino_stream::eval::composite::build(&spec, &set).unwrap();
    let weights = dir.path().join("supervised.safetensors");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/train-supervised-vit.py");
    let out = std::process::Command::new(common::python())
        .arg(&script)
        .args([set.as_os_str(), weights.as_os_str()])
        .args(["--test", set.to_str().unwrap()])
        .args([
            "--embed-dim",
            "32",
            "--depth",
            "2",
            "--heads",
            "2",
            "--patch",
            "8",
        ])
        .args(["--epochs", "2", "--batch", "8", "--threads", "1"])
        .env("CUDA_VISIBLE_DEVICES", "")
        .output()
        .unwrap();
    let log = common::text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("test accuracy"), "{log}");
    let model = FeatureModel::open(
        &weights,
        OpenOptions {
            heads: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(model.vit().unwrap().dims.heads, 2);
    let w = weights.to_str().unwrap();
    let out = common::run_in(
        dir.path(),
        &[
            "eval",
            "segment",
            set.to_str().unwrap(),
            w,
            "--supervised",
            w,
            "--supervised-heads",
            "2",
        ],
    );
    let text = common::text(&out);
    assert!(out.status.success(), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("supervised"))
        .unwrap_or_else(|| panic!("no supervised row: {text}"));
    assert_eq!(
        row.split('[').nth(1).unwrap().split_whitespace().count(),
        2,
        "{row}"
    );
}
