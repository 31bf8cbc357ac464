//! The engine checked against PyTorch: the same weights and inputs go through a faithful copy of
//! facebookresearch/dino's code (`tests/reference/dino_reference.py`: ViT, DINOHead, DINOLoss,
//! clip_gradients, cancel_gradients_last_layer, cosine_scheduler, torch.optim.AdamW/SGD and
//! DINO's LARS) and through timm's `VisionTransformer`. Each step is checked from the engine's own
//! state before it, each piece on identical inputs, so CPU-specific rounding cannot compound;
//! the script states its fp32 tolerances (see its `TOL` and module doc: multiples of PyTorch's
//! own noise floor across kernel paths) and proves they still catch deliberate bugs (its
//! mutants). Needs the venv python (see `common::python`).

mod common;

use std::path::Path;

use dino_stream::augment::AugmentConfig;
use dino_stream::model::{Arch, ModelConfig, Pass};
use dino_stream::train::config::{DeviceChoice, OptimizerKind, Plan, TrainConfig};
use dino_stream::train::engine::Engine;
use dino_stream::train::export::{describe, export_backbone};
use tch::{Device, Kind, Tensor};

fn model(head_bn: bool, head_layers: i64, norm_last_layer: bool) -> ModelConfig {
    ModelConfig {
        arch: Arch::Vit,
        embed_dim: 32,
        depth: 2,
        heads: 4,
        patch_size: 4,
        mlp_ratio: 2.0,
        drop_path: 0.0,
        out_dim: 96,
        head_hidden: 48,
        head_bottleneck: 16,
        head_layers,
        head_bn,
        norm_last_layer,
        sync_bn: true,
        ..Default::default()
    }
}

fn augment() -> AugmentConfig {
    AugmentConfig {
        global_size: 16,
        local_size: 8,
        local_crops: 3,
        ..Default::default()
    }
}

fn train(optimizer: OptimizerKind) -> TrainConfig {
    TrainConfig {
        device: DeviceChoice::Cpu,
        batch_size: 4,
        epochs: 2,
        optimizer,
        base_lr: 0.05,
        warmup_epochs: 0.5,
        warmup_teacher_temp_epochs: 1.0,
        freeze_last_layer_epochs: 0.25,
        clip_grad: 0.3,
        monitor_every: 1,
        seed: 3,
        threads: 1,
        ..Default::default()
    }
}

const STEPS: u64 = 4;
const STEPS_PER_EPOCH: u64 = 4;

/// Writes one case: config, initial state, batches, step-0 forward/gradients, then the state
/// after every engine step.
fn write_case(dir: &Path, name: &str, m: &ModelConfig, t: &TrainConfig, aug: &AugmentConfig) {
    let aug = aug.clone();
    let case = dir.join(name);
    std::fs::create_dir_all(&case).unwrap();
    let plan = Plan {
        steps_per_epoch: STEPS_PER_EPOCH,
        epochs: t.epochs,
    };
    let mut e = Engine::new(m, t, &aug, plan, Device::Cpu).unwrap();
    let cfg =
        serde_json::json!({ "model": m, "train": t, "augment": aug, "plan": plan, "steps": STEPS });
    std::fs::write(case.join("config.json"), cfg.to_string()).unwrap();

    let batches: Vec<_> = (0..STEPS)
        .map(|s| dino_stream::batch::Batch::random(&aug, t.batch_size, 100 + s))
        .collect();
    let mut io: Vec<(String, Tensor)> = Vec::new();
    for (s, b) in batches.iter().enumerate() {
        io.push((format!("batch{s}.global"), Tensor::from_slice(&b.global)));
        io.push((format!("batch{s}.local"), Tensor::from_slice(&b.local)));
    }
    // Step-0 forward pieces and the loss gradient w.r.t. every student parameter. The head-BN
    // case skips this (BatchNorm in the head makes the pieces depend on the batch split).
    if !m.head_bn {
        let groups = e.inputs(&batches[0]).unwrap();
        let refs: Vec<&Tensor> = groups.iter().collect();
        let student = e.student();
        io.push((
            "fwd.backbone_global".into(),
            student
                .backbone
                .forward(&groups[0], &mut Pass::train_no_drop())
                .detach(),
        ));
        io.push((
            "fwd.backbone_local".into(),
            student
                .backbone
                .forward(&groups[1], &mut Pass::train_no_drop())
                .detach(),
        ));
        let s_out = student.forward_groups(&refs, &mut Pass::train_no_drop());
        let t_out = tch::no_grad(|| {
            e.teacher()
                .forward_groups(&[&groups[0]], &mut Pass::train_no_drop())
        });
        let temp = e.schedules().at(0).teacher_temp;
        let loss = e.loss_fn().loss(&s_out, &t_out, temp);
        loss.backward();
        io.push(("fwd.student_out".into(), s_out.detach()));
        io.push(("fwd.loss".into(), loss.detach().reshape([1])));
        for p in student.params.trainable() {
            io.push((format!("grad.{}", p.name), p.tensor.grad().copy()));
        }
    }
    // The state the first step starts from (after the probe forwards above, which move the
    // BatchNorm running statistics of a ResNet; train-mode outputs do not depend on them).
    Tensor::write_safetensors(&e.state(), case.join("state_0.safetensors")).unwrap();
    let sched = e.schedules().clone();
    io.push(("sched.lr".into(), Tensor::from_slice(&sched.lr)));
    io.push(("sched.wd".into(), Tensor::from_slice(&sched.weight_decay)));
    io.push(("sched.momentum".into(), Tensor::from_slice(&sched.momentum)));
    io.push((
        "sched.teacher_temp".into(),
        Tensor::from_slice(&sched.teacher_temp),
    ));
    let mut losses = Vec::new();
    for (s, b) in batches.iter().enumerate() {
        let st = e.step(b).unwrap();
        losses.push(st.loss);
        // The gradients the optimiser consumed (after clipping; the engine zeroes them at the
        // start of the next step), so the reference can step its optimiser on the same inputs.
        for p in e.student().params.trainable() {
            io.push((format!("grad{s}.{}", p.name), p.tensor.grad().copy()));
        }
        let mon = st.monitors.unwrap();
        io.push((
            format!("monitors{s}"),
            Tensor::from_slice(&[
                mon.teacher_entropy,
                mon.teacher_mean_entropy,
                mon.kl_teacher_student,
                mon.center_norm,
                mon.active_dims,
            ]),
        ));
        Tensor::write_safetensors(
            &e.state(),
            case.join(format!("state_{}.safetensors", s + 1)),
        )
        .unwrap();
    }
    io.push(("losses".into(), Tensor::from_slice(&losses)));
    let io: Vec<(String, Tensor)> = io.into_iter().map(|(k, t)| (k, t.contiguous())).collect();
    Tensor::write_safetensors(&io, case.join("io.safetensors")).unwrap();
}

/// Where the cases go: a temporary directory, or `DINO_REF_CASES` to keep them (for measuring
/// the reference's own noise floor with `dino_reference.py --dump` / `--noise`).
fn cases_dir() -> (Option<tempfile::TempDir>, std::path::PathBuf) {
    match std::env::var_os("DINO_REF_CASES") {
        Some(d) => {
            let d = std::path::PathBuf::from(d);
            std::fs::create_dir_all(&d).unwrap();
            (None, d)
        }
        None => {
            let t = tempfile::tempdir().unwrap();
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    }
}

#[test]
fn training_step_matches_pytorch_dino() {
    let (_keep, dir) = cases_dir();
    let dir = dir.as_path();
    write_case(
        dir,
        "adamw",
        &model(false, 3, true),
        &train(OptimizerKind::Adamw),
        &augment(),
    );
    write_case(
        dir,
        "sgd",
        &model(false, 2, false),
        &train(OptimizerKind::Sgd),
        &augment(),
    );
    write_case(
        dir,
        "lars",
        &model(false, 1, true),
        &train(OptimizerKind::Lars),
        &augment(),
    );
    // A BatchNorm head under AdamW: the biases in front of its norms have mathematically zero
    // gradients, so AdamW's first update there is ±lr in the sign of float noise on either
    // side. The reference steps its optimiser on the engine's gradients, which makes even
    // these updates comparable (see the reference script's module doc).
    write_case(
        dir,
        "adamw_head_bn",
        &model(true, 3, true),
        &train(OptimizerKind::Adamw),
        &augment(),
    );
    let epoch_teacher = TrainConfig {
        teacher_update: dino_stream::train::config::TeacherUpdate::Epoch,
        centering: false,
        ..train(OptimizerKind::Adamw)
    };
    write_case(
        dir,
        "epoch_teacher_no_centering",
        &model(false, 3, true),
        &epoch_teacher,
        &augment(),
    );
    // The paper's ConvNet option: BatchNorm in train mode on both networks (DINO never puts the
    // teacher in eval mode), running statistics per resolution group, EMA over parameters only.
    // 64/32 px crops and batch 8: at 16 px ResNet-18's last stage is 1x1 and its BatchNorms
    // normalise 8 values each, which leaves float32 gradients there barely resolved (PyTorch's
    // own differ by ~2% of the tensor's largest entry between kernel paths, measured).
    let resnet = ModelConfig {
        arch: Arch::Resnet18,
        ..model(false, 3, true)
    };
    let resnet_train = TrainConfig {
        batch_size: 8,
        ..train(OptimizerKind::Adamw)
    };
    let resnet_crops = AugmentConfig {
        global_size: 64,
        local_size: 32,
        local_crops: 2,
        ..Default::default()
    };
    write_case(dir, "resnet18_adamw", &resnet, &resnet_train, &resnet_crops);
    let out = common::run_reference("dino_reference.py", &[dir]);
    println!("{out}");
}

/// Exports the teacher backbone and loads it into timm (torchvision for ResNets) with
/// `strict=True`; their features on the same images must match the engine's.
fn export_case(dir: &Path, name: &str, m: &ModelConfig, aug: &AugmentConfig, n: i64) {
    let t = train(OptimizerKind::Adamw);
    let plan = Plan {
        steps_per_epoch: 2,
        epochs: 1,
    };
    let mut e = Engine::new(m, &t, aug, plan, Device::Cpu).unwrap();
    let b = dino_stream::batch::Batch::random(aug, 2, 5);
    e.step(&b).unwrap(); // teacher ≠ student init after a step
    let case = dir.join(name);
    std::fs::create_dir_all(&case).unwrap();
    let path = case.join("backbone.safetensors");
    export_backbone(&e.state(), &path).unwrap();
    let g = aug.global_size as i64;
    let images = Tensor::randint(256, [n, g, g, 3], (Kind::Uint8, Device::Cpu));
    let feats = e.teacher_features(&images);
    Tensor::write_safetensors(
        &[("images", &images), ("features", &feats)],
        case.join("io.safetensors"),
    )
    .unwrap();
    let cfg = serde_json::json!({ "model": m, "augment": aug });
    std::fs::write(case.join("config.json"), cfg.to_string()).unwrap();
    // The loader `dino-stream export` prints, which the script runs as a user would.
    let pipeline = dino_stream::config::PipelineConfig {
        model: m.clone(),
        augment: aug.clone(),
        ..Default::default()
    };
    std::fs::write(case.join("load.py"), describe(&pipeline, 1).python(&path)).unwrap();
}

#[test]
fn exported_backbone_loads_in_timm_with_same_features() {
    let dir = tempfile::tempdir().unwrap();
    let small = ModelConfig {
        embed_dim: 64,
        depth: 2,
        heads: 4,
        patch_size: 8,
        mlp_ratio: 4.0,
        ..model(false, 3, true)
    };
    let aug = AugmentConfig {
        global_size: 32,
        local_size: 16,
        local_crops: 2,
        ..Default::default()
    };
    export_case(dir.path(), "custom", &small, &aug, 3);
    let vit_small = ModelConfig {
        arch: Arch::VitSmall,
        patch_size: 16,
        mlp_ratio: 4.0,
        ..model(false, 3, true)
    };
    let aug224 = AugmentConfig {
        global_size: 224,
        local_size: 96,
        local_crops: 0,
        ..Default::default()
    };
    export_case(dir.path(), "vit_small_patch16_224", &vit_small, &aug224, 2);
    // ResNet-18 with torchvision names; features in eval mode use the BN running statistics
    // the training step updated.
    let resnet = ModelConfig {
        arch: Arch::Resnet18,
        ..model(false, 3, true)
    };
    let aug_r = AugmentConfig {
        global_size: 32,
        local_size: 16,
        local_crops: 2,
        ..Default::default()
    };
    export_case(dir.path(), "resnet18", &resnet, &aug_r, 3);
    // The small-image ResNet: 3x3 stem, no max-pool, three stages (torchvision's blocks).
    let resnet_small = ModelConfig {
        arch: Arch::ResnetSmall,
        resnet_width: 8,
        resnet_blocks: 2,
        ..model(false, 3, true)
    };
    export_case(dir.path(), "resnet_small", &resnet_small, &aug_r, 3);
    // Its spatial readout: the 8x8 last map pooled to 3x3 (overlapping adaptive windows).
    let resnet_small_grid = ModelConfig {
        resnet_pool_grid: 3,
        ..resnet_small
    };
    export_case(
        dir.path(),
        "resnet_small_grid",
        &resnet_small_grid,
        &aug_r,
        3,
    );
    let out = common::run_reference("export_check.py", &[dir.path()]);
    println!("{out}");
}
