//! One DINO training step (student fwd/bwd on all crops, teacher fwd, loss, clip, AdamW, EMA)
//! on synthetic u8 batches, for a small ViT. `tests/reference/bench_train_torch.py` times the
//! same model, batch and crops in PyTorch eager for a side-by-side ratio.
//!
//! Config (keep in sync with the script and `benches/train_step.toml`, the same setting for
//! `dino-stream bench train`): ViT embed 192, depth 4, heads 3, patch 16; batch 16; 2 global
//! crops of 96 px and 4 local crops of 48 px; head 512-512-128 → K = 4096; fp32, CPU.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dino_stream::augment::AugmentConfig;
use dino_stream::batch::Batch;
use dino_stream::model::{Arch, ModelConfig};
use dino_stream::train::config::{DeviceChoice, Plan, TrainConfig};
use dino_stream::train::engine::{select_device, Engine};

fn bench_step(c: &mut Criterion) {
    let model = ModelConfig {
        arch: Arch::Vit,
        embed_dim: 192,
        depth: 4,
        heads: 3,
        patch_size: 16,
        mlp_ratio: 4.0,
        drop_path: 0.1,
        out_dim: 4096,
        head_hidden: 512,
        head_bottleneck: 128,
        head_layers: 3,
        head_bn: false,
        norm_last_layer: true,
        sync_bn: true,
        ..Default::default()
    };
    let aug = AugmentConfig {
        global_size: 96,
        local_size: 48,
        local_crops: 4,
        ..Default::default()
    };
    let device = match std::env::var("DINO_STREAM_BENCH_DEVICE").as_deref() {
        Ok("cuda") => DeviceChoice::Cuda,
        _ => DeviceChoice::Cpu,
    };
    let train = TrainConfig {
        device,
        batch_size: 16,
        epochs: 100,
        freeze_last_layer_epochs: 0.0,
        ..Default::default()
    };
    let plan = Plan {
        steps_per_epoch: 100,
        epochs: 100,
    };
    let mut engine = Engine::new(&model, &train, &aug, plan, select_device(device)).unwrap();
    let batches: Vec<Batch> = (0..4)
        .map(|k| Batch::random(&aug, train.batch_size, k))
        .collect();
    for b in &batches {
        engine.step(b).unwrap(); // warm-up (allocator, kernels)
    }
    let mut g = c.benchmark_group("train");
    g.sample_size(10);
    g.throughput(Throughput::Elements(train.batch_size as u64));
    let mut i = 0;
    g.bench_function("dino_step_vit192x4_b16_2x96_4x48", |bench| {
        bench.iter(|| {
            i += 1;
            engine.step(&batches[i % batches.len()]).unwrap().loss
        })
    });
    g.finish();
}

criterion_group!(benches, bench_step);
criterion_main!(benches);
