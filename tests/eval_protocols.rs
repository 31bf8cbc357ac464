//! The evaluation protocols' arithmetic: the linear probe learns a linearly separable set,
//! top-k counting, the cosine schedule, Jaccard and its disc baseline, the composite set's masks,
//! the viridis colormap.

mod common;

use dino_stream::eval::linear::{topk_accuracy, train_on_features, LinearConfig, Trainer};
use dino_stream::eval::segment::{disc_baseline, jaccard, Sample};
use dino_stream::frame::Frame;
use dino_stream::viz::colormap::viridis;
use tch::Tensor;

/// Labels from a random linear map (linearly separable, with a margin): the probe reaches at
/// least 99% top-1 on held-out points.
#[test]
fn linear_probe_learns_a_linearly_separable_set() {
    tch::manual_seed(7);
    let (dim, classes) = (24i64, 6i64);
    let truth = Tensor::randn([classes, dim], tch::kind::FLOAT_CPU);
    let sample = |n: i64| {
        tch::no_grad(|| {
            let x = Tensor::randn([n, dim], tch::kind::FLOAT_CPU);
            let scores = x.matmul(&truth.tr());
            let (top2, idx) = scores.topk(2, 1, true, true);
            let margin = top2.select(1, 0) - top2.select(1, 1);
            let keep = margin.gt(0.5).nonzero().squeeze_dim(1);
            (
                x.index_select(0, &keep),
                idx.select(1, 0).index_select(0, &keep),
            )
        })
    };
    let (train_x, train_y) = sample(4000);
    let (test_x, test_y) = sample(2000);
    let cfg = LinearConfig {
        epochs: 30,
        lr: 2.0,
        batch_size: 64,
        ..LinearConfig::default()
    };
    let clf = train_on_features(&train_x, &train_y, classes, &cfg);
    let (top1, top5) = tch::no_grad(|| topk_accuracy(&clf.logits(&test_x), &test_y));
    assert!(top1 >= 0.99, "top-1 {top1}");
    assert!(top5 >= top1 && top5 <= 1.0, "top-5 {top5}");
}

#[test]
fn top_k_counts_hits_by_rank() {
    let logits = Tensor::from_slice(&[
        0.9f32, 0.1, 0.0, 0.0, 0.0, 0.0, //
        0.1, 0.0, 0.2, 0.3, 0.4, 0.5, //
    ])
    .view([2, 6]);
    // Sample 0: label 0 is first. Sample 1: label 1 ranks 6th of 6 (outside the top 5).
    assert_eq!(
        topk_accuracy(&logits, &Tensor::from_slice(&[0i64, 1])),
        (0.5, 0.5)
    );
    // Sample 0: label 1 second; sample 1: label 2 fourth. Neither first, both in the top 5.
    assert_eq!(
        topk_accuracy(&logits, &Tensor::from_slice(&[1i64, 2])),
        (0.0, 1.0)
    );
}

#[test]
fn cosine_schedule_starts_at_the_scaled_lr_and_ends_near_zero() {
    let t = Trainer::new(4, 2, 0.001, 512, 10, 0);
    assert!((t.lr_at(0) - 0.002).abs() < 1e-12);
    assert!((t.lr_at(5) - 0.001).abs() < 1e-12);
    assert!(t.lr_at(9) < 0.0001);
}

#[test]
fn jaccard_of_known_sets_and_the_disc_baseline() {
    let a = [true, true, false, false];
    let b = [true, false, true, false];
    assert!((jaccard(&a, &b) - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(jaccard(&a, &a), 1.0);
    assert_eq!(jaccard(&[false; 3], &[false; 3]), 1.0);
    // A centred disc scores (nearly) 1 against a centred disc mask of the same area, and
    // poorly against a mask in a corner.
    let (w, h) = (40u32, 40u32);
    let disc: Vec<bool> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| {
            let (dx, dy) = (x as f64 + 0.5 - 20.0, y as f64 + 0.5 - 20.0);
            dx * dx + dy * dy <= 100.0
        })
        .collect();
    let corner: Vec<bool> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| x < 10 && y < 10)
        .collect();
    let image = || Frame::from_rgb(w, h, vec![0; (w * h * 3) as usize]);
    let centred = [Sample {
        image: image(),
        mask: disc,
    }];
    assert!(
        disc_baseline(&centred) > 0.95,
        "{}",
        disc_baseline(&centred)
    );
    let cornered = [Sample {
        image: image(),
        mask: corner,
    }];
    assert!(
        disc_baseline(&cornered) < 0.05,
        "{}",
        disc_baseline(&cornered)
    );
}

/// Endpoints and midpoint of matplotlib's viridis table (#440154, #21918c, #fde725), to within
/// 4 levels (the polynomial fit is off by 3 at t = 0 and 4 in blue at t = 1).
#[test]
fn viridis_matches_matplotlib_at_known_points() {
    for (t, want) in [
        (0.0, [0x44, 0x01, 0x54]),
        (0.5, [0x21, 0x91, 0x8c]),
        (1.0, [0xfd, 0xe7, 0x25]),
    ] {
        let got = viridis(t);
        for (g, w) in got.iter().zip(want) {
            assert!((*g as i32 - w).abs() <= 4, "t={t}: {got:?} vs {want:?}");
        }
    }
}

fn composite_spec(
    garments: &std::path::Path,
    backgrounds: &std::path::Path,
    garment_scale: [f64; 2],
) -> dino_stream::eval::composite::CompositeSpec {
    dino_stream::eval::composite::CompositeSpec {
        fashion_mnist: garments.to_path_buf(),
        split: dino_stream::source::IdxSplit::Train,
        backgrounds: backgrounds.to_path_buf(),
        count: 12,
        size: 64,
        seed: 3,
        garment_scale,
    }
}

/// The composite set: rebuilding gives the same files; garments are opaque, so on two plain
/// backgrounds (one grey, one black) every mask pixel is the same garment colour in both builds
/// and every other pixel is the background; a larger garment scale gives larger masks; an
/// impossible scale is refused.
#[test]
fn composite_masks_are_exactly_the_pasted_garment() {
    use dino_stream::eval::composite::build;
    use dino_stream::eval::segment::read_set;
    let dir = tempfile::tempdir().unwrap();
    let garments = dir.path().join("fmnist");
    std::fs::create_dir_all(&garments).unwrap();
    common::write_garments(&garments, 40);
    let set_on = |level: u8, scale: [f64; 2], name: &str| {
        let bg = dir.path().join(format!("bg-{name}"));
        std::fs::create_dir_all(&bg).unwrap();
        image::RgbImage::from_pixel(96, 80, image::Rgb([level; 3]))
            .save(bg.join("plain.png"))
            .unwrap();
        let out = dir.path().join(name);
        assert_eq!(
            build(&composite_spec(&garments, &bg, scale), &out).unwrap(),
            12
        );
        out
    };
    let grey = set_on(128, [0.35, 0.7], "grey");
    let black = set_on(0, [0.35, 0.7], "black");
    let again = set_on(128, [0.35, 0.7], "grey-again");
    for f in ["index.csv", "masks/00000.png", "masks/00011.png"] {
        assert_eq!(
            std::fs::read(grey.join(f)).unwrap(),
            std::fs::read(again.join(f)).unwrap(),
            "{f}"
        );
    }
    let (on_grey, on_black) = (
        read_set(&grey, None).unwrap(),
        read_set(&black, None).unwrap(),
    );
    assert_eq!(on_grey.len(), 12);
    for (g, b) in on_grey.iter().zip(&on_black) {
        assert_eq!(g.mask, b.mask);
        assert!(g.mask.iter().any(|&m| m), "an empty mask");
        let (gp, bp) = (g.image.data().chunks(3), b.image.data().chunks(3));
        for ((m, gp), bp) in g.mask.iter().zip(gp).zip(bp) {
            if *m {
                assert_eq!(gp, bp, "the background shows through a garment pixel");
            } else {
                assert_eq!((gp, bp), (&[128u8; 3][..], &[0u8; 3][..]));
            }
        }
    }
    let area = |set: &[Sample]| -> usize {
        set.iter()
            .map(|s| s.mask.iter().filter(|&&m| m).count())
            .sum()
    };
    let small = set_on(128, [0.2, 0.2], "small");
    let large = set_on(128, [0.9, 0.9], "large");
    assert!(area(&read_set(&large, None).unwrap()) > 10 * area(&read_set(&small, None).unwrap()));
    let bg = dir.path().join("bg-grey");
    for bad in [[0.8, 0.5], [0.0, 0.5], [0.5, 1.5]] {
        let e = build(
            &composite_spec(&garments, &bg, bad),
            &dir.path().join("bad"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("garment scale"), "{e}");
    }
}
