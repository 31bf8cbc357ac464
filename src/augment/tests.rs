//! MultiCrop-level tests: determinism, buffer layout, odd inputs.

use super::*;

/// A deterministic, textured test picture (no two pixels alike along a row).
fn textured(w: u32, h: u32) -> Frame {
    let mut v = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            v.push((x * 7 + y * 3) as u8);
            v.push((x * x + y) as u8);
            v.push(((y * 5) ^ x) as u8);
        }
    }
    Frame::from_rgb(w, h, v)
}

fn run(mc: &mut MultiCrop, f: &Frame, epoch: u64, id: u64) -> (Vec<u8>, Vec<u8>) {
    let cfg = mc.config().clone();
    let mut g = vec![0u8; 2 * cfg.global_bytes()];
    let mut l = vec![0u8; cfg.local_crops * cfg.local_bytes()];
    mc.apply(f, epoch, id, &mut g, &mut l).unwrap();
    (g, l)
}

#[test]
fn same_key_gives_identical_bytes_across_instances() {
    let cfg = AugmentConfig::default();
    let f = textured(300, 200);
    let mut a = MultiCrop::new(&cfg, 42);
    let mut b = MultiCrop::new(&cfg, 42);
    // Warm `b` with another image first: scratch reuse must not leak into results.
    run(&mut b, &textured(50, 80), 9, 9);
    assert_eq!(run(&mut a, &f, 3, 17), run(&mut b, &f, 3, 17));
}

#[test]
fn different_keys_give_different_crops() {
    let cfg = AugmentConfig::default();
    let f = textured(300, 200);
    let mut mc = MultiCrop::new(&cfg, 42);
    let base = run(&mut mc, &f, 3, 17);
    assert_ne!(base, run(&mut mc, &f, 3, 18), "sample id");
    assert_ne!(base, run(&mut mc, &f, 4, 17), "epoch");
    assert_ne!(base, run(&mut MultiCrop::new(&cfg, 43), &f, 3, 17), "seed");
    // Views of one sample differ from each other too.
    let (g, l) = base;
    assert_ne!(g[..cfg.global_bytes()], g[cfg.global_bytes()..]);
    assert_ne!(
        l[..cfg.local_bytes()],
        l[cfg.local_bytes()..2 * cfg.local_bytes()]
    );
}

#[test]
fn tiny_images_are_upscaled() {
    let cfg = AugmentConfig::default();
    let mut mc = MultiCrop::new(&cfg, 1);
    for (w, h) in [(1, 1), (2, 7), (13, 5), (64, 64)] {
        run(&mut mc, &textured(w, h), 0, 0);
    }
}

#[test]
fn no_local_crops_is_fine() {
    let cfg = AugmentConfig {
        local_crops: 0,
        ..AugmentConfig::default()
    };
    let mut mc = MultiCrop::new(&cfg, 1);
    let (g, l) = run(&mut mc, &textured(100, 100), 0, 0);
    assert_eq!(g.len(), 2 * 224 * 224 * 3);
    assert!(l.is_empty());
}

#[test]
fn wrong_buffer_sizes_and_empty_frames_are_errors() {
    let cfg = AugmentConfig::default();
    let mut mc = MultiCrop::new(&cfg, 1);
    let f = textured(10, 10);
    let mut g = vec![0u8; 2 * cfg.global_bytes()];
    let mut l = vec![0u8; cfg.local_crops * cfg.local_bytes() - 1];
    assert!(matches!(
        mc.apply(&f, 0, 0, &mut g, &mut l),
        Err(AugmentError::BufferSize { .. })
    ));
    let mut l = vec![0u8; cfg.local_crops * cfg.local_bytes()];
    let empty = Frame::from_rgb(0, 5, vec![]);
    assert!(matches!(
        mc.apply(&empty, 0, 0, &mut g, &mut l),
        Err(AugmentError::Empty(0, 5))
    ));
}

#[test]
fn eval_view_is_a_centre_crop_of_the_shorter_side_resize() {
    let f = textured(500, 375);
    let v = eval_view(&f, 224).unwrap();
    assert_eq!(v.len(), 224 * 224 * 3);
    // Equals resizing the whole image to 341x256 and cutting the centre window.
    let full = resized_crop(
        &f,
        CropRect {
            top: 0,
            left: 0,
            height: 375,
            width: 500,
        },
        341,
        256,
    )
    .unwrap();
    let (left, top) = (
        center_offset(341, 224) as usize,
        center_offset(256, 224) as usize,
    );
    let mut max_diff = 0;
    for y in 0..224 {
        for x in 0..224 * 3 {
            let a = v[y * 224 * 3 + x];
            let b = full[(y + top) * 341 * 3 + left * 3 + x];
            max_diff = max_diff.max(a.abs_diff(b));
        }
    }
    assert!(max_diff <= 1, "max diff {max_diff}");
    let tiny = eval_view(&textured(3, 2), 32).unwrap();
    assert_eq!(tiny.len(), 32 * 32 * 3);
}

/// Temporal pairs: with one picture twice the pair path cuts what `apply` cuts; with two solid
/// pictures (colour changes off) global 0 is the first, global 1 the second, and each local
/// view one of the two, both used.
#[test]
fn apply_pair_takes_a_global_view_from_each_picture() {
    let cfg = AugmentConfig {
        local_crops: 12,
        ..AugmentConfig::default()
    };
    let f = textured(300, 200);
    let mut mc = MultiCrop::new(&cfg, 7);
    let mut g = vec![0u8; 2 * cfg.global_bytes()];
    let mut l = vec![0u8; cfg.local_crops * cfg.local_bytes()];
    mc.apply_pair(&f, &f, 2, 11, &mut g, &mut l).unwrap();
    assert_eq!((g.clone(), l.clone()), run(&mut mc, &f, 2, 11));

    let plain = AugmentConfig {
        jitter_p: 0.0,
        grayscale_p: 0.0,
        solarize_p: 0.0,
        blur_p_global1: 0.0,
        blur_p_global2: 0.0,
        blur_p_local: 0.0,
        ..cfg.clone()
    };
    let mut mc = MultiCrop::new(&plain, 7);
    let solid = |v: u8, w, h| Frame::from_rgb(w, h, vec![v; (w * h * 3) as usize]);
    let (a, b) = (solid(40, 300, 200), solid(200, 280, 210));
    mc.apply_pair(&a, &b, 2, 11, &mut g, &mut l).unwrap();
    let (g0, g1) = g.split_at(plain.global_bytes());
    assert!(g0.iter().all(|&x| x == 40) && g1.iter().all(|&x| x == 200));
    let locals: Vec<u8> = l.chunks(plain.local_bytes()).map(|c| c[0]).collect();
    for (c, &v) in l.chunks(plain.local_bytes()).zip(&locals) {
        assert!(
            (v == 40 || v == 200) && c.iter().all(|&x| x == v),
            "{locals:?}"
        );
    }
    assert!(locals.contains(&40) && locals.contains(&200), "{locals:?}");
}
