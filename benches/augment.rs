//! Throughput of the image side: decode, resize, each photometric op, blur and the whole DINO
//! multi-crop, in images per second on one core. Per-op figures are per 224×224 view (the
//! op alone, after a 150 KB copy that restores the input); `multicrop` is 2×224 + 8×96 views
//! of one 500×375 image. Compare with tests/reference/bench_pil_recipe.py.
//!
//! Inputs are procedural (smooth gradients, hard edges and noise, JPEG-encoded in setup) so the
//! bench needs no network or data files.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dino_stream::augment::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, grayscale, hflip,
    resized_crop, solarize, AugmentConfig, CropRect, GaussianBlur, JitterOp, JitterParams,
    MultiCrop, Resampler,
};
use dino_stream::decode::decode_image;
use dino_stream::frame::Frame;
use dino_stream::rng::Rng;
use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, ImageEncoder};

/// A 500×375 photo-like picture: gradients, a few discs with hard edges, mild noise.
fn picture(w: u32, h: u32) -> Vec<u8> {
    let mut rng = Rng::new(1);
    let mut v = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            let disc = ((fx - 0.4).powi(2) + (fy - 0.5).powi(2)) < 0.05;
            let n = (rng.next_u64() % 16) as f32;
            let r = if disc { 220.0 } else { 255.0 * fx } + n;
            let g = 180.0 * fy + 40.0 * (fx * 20.0).sin() + n;
            let b = if disc {
                30.0
            } else {
                120.0 + 100.0 * (fy * 9.0).cos()
            } + n;
            v.extend_from_slice(&[
                r.clamp(0.0, 255.0) as u8,
                g.clamp(0.0, 255.0) as u8,
                b.clamp(0.0, 255.0) as u8,
            ]);
        }
    }
    v
}

fn bench(c: &mut Criterion) {
    let (w, h) = (500, 375);
    let pixels = picture(w, h);
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, 90)
        .write_image(&pixels, w, h, ExtendedColorType::Rgb8)
        .unwrap();
    let frame = Frame::from_rgb(w, h, pixels);
    let view224 = resized_crop(
        &frame,
        CropRect {
            top: 20,
            left: 60,
            height: 300,
            width: 330,
        },
        224,
        224,
    )
    .unwrap();

    let mut g = c.benchmark_group("augment");
    g.throughput(Throughput::Elements(1));

    g.bench_function("decode_jpeg_500x375", |b| {
        b.iter(|| decode_image(black_box(&jpeg), 1 << 26).unwrap())
    });

    let mut rs = Resampler::new();
    let mut out224 = vec![0u8; 224 * 224 * 3];
    let mut out96 = vec![0u8; 96 * 96 * 3];
    let big = CropRect {
        top: 20,
        left: 60,
        height: 300,
        width: 330,
    };
    let small = CropRect {
        top: 100,
        left: 200,
        height: 80,
        width: 70,
    };
    g.bench_function("resize_330x300_to_224", |b| {
        b.iter(|| rs.resized_crop(&frame, big, 224, 224, &mut out224).unwrap())
    });
    g.bench_function("resize_70x80_to_96", |b| {
        b.iter(|| rs.resized_crop(&frame, small, 96, 96, &mut out96).unwrap())
    });

    let jitter = JitterParams {
        order: [
            JitterOp::Hue,
            JitterOp::Contrast,
            JitterOp::Brightness,
            JitterOp::Saturation,
        ],
        brightness: Some(1.2),
        contrast: Some(0.8),
        saturation: Some(1.1),
        hue: Some(0.05),
    };
    let mut buf = view224.clone();
    g.bench_function("jitter_224", |b| {
        b.iter(|| {
            buf.copy_from_slice(&view224);
            jitter.apply(&mut buf)
        })
    });
    type Op = fn(&mut [u8]);
    let ops: [(&str, Op); 7] = [
        ("hflip", |b| hflip(b, 224)),
        ("brightness", |b| adjust_brightness(b, 1.2)),
        ("contrast", |b| adjust_contrast(b, 0.8)),
        ("saturation", |b| adjust_saturation(b, 1.1)),
        ("hue", |b| adjust_hue(b, 0.05)),
        ("grayscale", grayscale),
        ("solarize", |b| solarize(b, 128)),
    ];
    for (name, op) in ops {
        g.bench_function(format!("{name}_224"), |b| {
            b.iter(|| {
                buf.copy_from_slice(&view224);
                op(&mut buf)
            })
        });
    }
    let mut blur = GaussianBlur::new();
    for sigma in [0.5, 1.0, 2.0] {
        g.bench_function(format!("blur_224_sigma{sigma}"), |b| {
            b.iter(|| {
                buf.copy_from_slice(&view224);
                blur.apply(&mut buf, 224, 224, sigma)
            })
        });
    }

    let cfg = AugmentConfig::default();
    let mut mc = MultiCrop::new(&cfg, 0);
    let mut global = vec![0u8; 2 * cfg.global_bytes()];
    let mut local = vec![0u8; cfg.local_crops * cfg.local_bytes()];
    let mut id = 0u64;
    g.bench_function("multicrop_2x224_8x96", |b| {
        b.iter(|| {
            id += 1;
            mc.apply(&frame, 0, id, &mut global, &mut local).unwrap()
        })
    });
    g.bench_function("decode_and_multicrop", |b| {
        b.iter(|| {
            id += 1;
            let f = decode_image(&jpeg, 1 << 26).unwrap();
            mc.apply(&f, 0, id, &mut global, &mut local).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
