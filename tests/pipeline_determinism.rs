//! The data pipeline's output depends only on (seed, epoch, sample id): 1 or 3 augment workers
//! (and 1 or 2 decode workers, or decoding inside the augment workers) give byte-identical
//! batches in the same order, across epochs, with unreadable files in the stream and a resume
//! from a mid-epoch cursor; with crop-aware decoding (`decode.scaled = "auto"`) and without.

mod common;

use common::pipeline_batches as batches;
use dino_stream::batch::Cursor;
use dino_stream::config::PipelineConfig;

fn config(
    dir: &std::path::Path,
    images: &std::path::Path,
    decode: usize,
    augment: usize,
) -> PipelineConfig {
    config_with(dir, images, decode, augment, &[])
}

fn config_with(
    dir: &std::path::Path,
    images: &std::path::Path,
    decode: usize,
    augment: usize,
    extra: &[&str],
) -> PipelineConfig {
    let src = common::image_folder_source(images);
    let mut sets = vec![
        format!("decode.workers={decode}"),
        format!("augment.workers={augment}"),
        "augment.channel_capacity=3".into(),
        "batcher.reorder_window=16".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    common::tiny_config(dir, &src, sets)
}

#[test]
fn batches_are_identical_for_any_worker_count_and_after_resume() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    common::write_jpeg_folder(&images, 3, 9, 40);
    std::fs::write(
        images.join("class_1/zz_broken.jpg"),
        b"\xff\xd8\xff\xe0 not really",
    )
    .unwrap();
    // 28 files, 27 readable, batch 8: 3 batches per epoch; take 3 epochs' worth.
    let one = batches(&config(dir.path(), &images, 1, 1), Cursor::default(), 9);
    let many = batches(&config(dir.path(), &images, 2, 3), Cursor::default(), 9);
    // decode.workers = 0: each augment worker decodes its own images.
    let inline = batches(&config(dir.path(), &images, 0, 3), Cursor::default(), 9);
    assert_eq!(one.len(), 9);
    for (layout, other) in [("2 decode + 3 augment", &many), ("3 inline", &inline)] {
        assert_eq!(other.len(), 9, "{layout}");
        for (i, (a, b)) in one.iter().zip(other).enumerate() {
            assert_eq!((a.epoch, a.next), (b.epoch, b.next), "{layout}: batch {i}");
            assert!(
                a.global == b.global && a.local == b.local,
                "{layout}: batch {i}: crops differ from 1 decode + 1 augment worker"
            );
            assert_eq!(a.labels, b.labels, "{layout}: batch {i}");
        }
    }
    assert_eq!(
        one.iter().map(|b| b.epoch).collect::<Vec<_>>(),
        vec![0, 0, 0, 1, 1, 1, 2, 2, 2]
    );
    // Different epochs see different crops of the same images.
    assert_ne!(one[0].global, one[3].global);

    // Resuming from the cursor after batch 4 yields batches 5.. exactly.
    let resumed = batches(&config(dir.path(), &images, 2, 2), one[4].next, 4);
    for (i, (a, b)) in one[5..].iter().zip(&resumed).enumerate() {
        assert_eq!(a.next, b.next, "resumed batch {i}");
        assert!(
            a.global == b.global && a.local == b.local,
            "resumed batch {i} differs"
        );
    }
}

/// Crop-aware decoding changes which pixels are decoded, never which sample a worker count sees:
/// in both modes 1 worker, 3 inline workers and a decode pool give byte-identical batches. The
/// pictures (~320 px, crops of 32 and 16 px) are large enough for 1/2 and 1/4 reductions, so
/// "auto" really takes the reduced path (its batches differ from "off"'s).
#[test]
fn both_decode_modes_are_deterministic_across_worker_counts() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    common::write_jpeg_folder(&images, 2, 8, 320);
    let mut by_mode = Vec::new();
    for mode in ["auto", "off"] {
        let set = format!("decode.scaled={mode}");
        let run = |decode, augment| {
            let cfg = config_with(dir.path(), &images, decode, augment, &[&set]);
            batches(&cfg, Cursor::default(), 4)
        };
        let one = run(1, 1);
        assert_eq!(one.len(), 4, "{mode}");
        for (layout, other) in [("3 inline", run(0, 3)), ("2 decode + 2 augment", run(2, 2))] {
            assert_eq!(other.len(), 4, "{mode}, {layout}");
            for (i, (a, b)) in one.iter().zip(&other).enumerate() {
                assert_eq!(
                    (a.epoch, a.next),
                    (b.epoch, b.next),
                    "{mode}, {layout}: {i}"
                );
                assert!(
                    a.global == b.global && a.local == b.local,
                    "{mode}, {layout}: batch {i} differs from 1 decode + 1 augment worker"
                );
            }
        }
        by_mode.push(one);
    }
    let (auto, off) = (&by_mode[0], &by_mode[1]);
    for (i, (a, b)) in auto.iter().zip(off).enumerate() {
        assert_eq!(
            (a.epoch, a.next, &a.labels),
            (b.epoch, b.next, &b.labels),
            "batch {i}"
        );
        assert_ne!(a.global, b.global, "batch {i}: auto decoded at full size");
        let mean = a
            .global
            .iter()
            .chain(&a.local)
            .zip(b.global.iter().chain(&b.local))
            .map(|(&x, &y)| x.abs_diff(y) as f64)
            .sum::<f64>()
            / (a.global.len() + a.local.len()) as f64;
        assert!(
            mean < 8.0,
            "batch {i}: auto is {mean:.2} levels from off on average"
        );
    }
}
