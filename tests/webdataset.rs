//! WebDataset shards as a source: tar files written by Python's `tarfile` and by the
//! `webdataset` package read back byte for byte with their labels, brace patterns expand as
//! `braceexpand` does, a webdataset packed from an image folder gives the folder's batches byte
//! for byte (fresh and resumed), and damaged shards are skipped and counted while `cache build`
//! writes the rest.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::pipeline_batches as batches;
use dino_stream::batch::Cursor;
use dino_stream::config::PipelineConfig;
use dino_stream::source::{IndexedSource, OpenedSource, Payload, SourceConfig};

#[derive(Debug, serde::Deserialize)]
struct Written {
    shard: String,
    key: String,
    file: String,
    label: u32,
}

fn pack(images: &Path, out: &Path, mode: &str) -> Vec<Written> {
    let text = common::run_reference("make_webdataset.py", &[images, out, Path::new(mode)]);
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

fn open(source_toml: &str) -> Arc<dyn IndexedSource> {
    let cfg: SourceConfig = toml::from_str(source_toml).unwrap();
    match cfg.open().unwrap() {
        OpenedSource::Indexed(s) => s,
        OpenedSource::Stream(_) => panic!("an indexed source"),
    }
}

/// Every sample reads back as the file it was packed from, with its label and a name that
/// gives the shard and the member.
fn check_samples(src: &dyn IndexedSource, images: &Path, out: &Path, written: &[Written]) {
    assert_eq!(src.len(), written.len() as u64);
    for (id, w) in written.iter().enumerate() {
        let id = id as u64;
        let Payload::Encoded(bytes) = src.read(id).unwrap() else {
            panic!("encoded bytes expected")
        };
        assert!(
            bytes == std::fs::read(images.join(&w.file)).unwrap(),
            "{}: bytes differ from {}",
            src.describe(id),
            w.file
        );
        assert_eq!(src.label(id), Some(w.label), "{}", src.describe(id));
        let name = format!("{}#{}.jpg", out.join(&w.shard).display(), w.key);
        assert_eq!(src.describe(id), name);
    }
    let classes = written.iter().map(|w| w.label).max().unwrap() + 1;
    assert_eq!(src.num_classes(), Some(classes));
}

fn config(dir: &Path, source: &str, sets: &[&str]) -> PipelineConfig {
    let mut all: Vec<String> = vec![
        "decode.workers=0".into(),
        "augment.workers=2".into(),
        "batcher.reorder_window=16".into(),
    ];
    all.extend(sets.iter().map(|s| s.to_string()));
    common::tiny_config(dir, source, all)
}

#[test]
fn tarfile_shards_read_in_place_and_batch_like_the_image_folder() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    common::write_jpeg_folder(&images, 3, 7, 40);
    std::fs::write(
        images.join("class_1/img_zz.jpg"),
        b"\xff\xd8\xff\xe0 broken",
    )
    .unwrap();
    let out = dir.path().join("shards");
    let written = pack(&images, &out, "tarfile");
    assert_eq!(written.len(), 22);
    assert!(written[7].key.len() > 100, "shard 1 has PAX names");

    // A brace pattern, and a list of a path and a pattern, name the same shards.
    let one = format!(
        "type = \"webdataset\"\nurls = \"{}/shard-{{000000..000003}}.tar\"",
        out.display()
    );
    let list = format!(
        "type = \"webdataset\"\nurls = [\"{0}/shard-000000.tar\", \"{0}/shard-{{000001,000002,000003}}.tar\"]",
        out.display()
    );
    for source in [&one, &list] {
        check_samples(&*open(source), &images, &out, &written);
    }

    // The webdataset has the folder's samples in the folder's order, so the pipeline must give
    // the same batches byte for byte (decode path, broken image skipped, seeded order, labels),
    // and resume the same way.
    let sets = ["decode.scaled=off"];
    let folder = config(dir.path(), &common::image_folder_source(&images), &sets);
    let wds = config(dir.path(), &one, &sets);
    let a = batches(&folder, Cursor::default(), 6);
    let b = batches(&wds, Cursor::default(), 6);
    assert_eq!(a.len(), 6);
    assert_eq!(b.len(), 6);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(
            (x.epoch, x.next, &x.labels),
            (y.epoch, y.next, &y.labels),
            "batch {i}"
        );
        assert!(
            x.global == y.global && x.local == y.local,
            "batch {i}: crops differ"
        );
    }
    let resumed = batches(&wds, b[3].next, 2);
    for (i, (x, y)) in b[4..].iter().zip(&resumed).enumerate() {
        assert_eq!(x.next, y.next, "resumed batch {i}");
        assert!(
            x.global == y.global && x.local == y.local,
            "resumed batch {i} differs"
        );
    }
}

#[test]
fn webdataset_package_shards_and_braceexpand_agree() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    common::write_jpeg_folder(&images, 2, 7, 24);
    let out = dir.path().join("wds");
    let written = pack(&images, &out, "webdataset");
    let shards = written.last().unwrap().shard.clone();
    assert_eq!(shards, "wds-000002.tar");
    let src = open(&format!(
        "type = \"webdataset\"\nurls = \"{}/wds-{{000000..000002}}.tar\"",
        out.display()
    ));
    check_samples(&*src, &images, &out, &written);

    let patterns = [
        "shard-{000000..000012}.tar",
        "{a,b}-{8..11}.tar",
        "{-2..1}",
        "{001..3}",
        "x{b,c{d,e}}y",
        "{10..0..5}",
        "{a,}.tar",
        "lit{x}-{0..1}",
    ];
    let mut args = vec![Path::new("braces")];
    args.extend(patterns.iter().map(Path::new));
    let text = common::run_reference("make_webdataset.py", &args);
    let theirs: Vec<Vec<String>> = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    for (p, expected) in patterns.iter().zip(theirs) {
        assert_eq!(
            dino_stream::source::braces::expand(p).unwrap(),
            expected,
            "{p}"
        );
    }
}

/// Flips a byte of the checksum field of the tar header that names `member`.
fn damage_header(tar: &Path, member: &str) {
    let mut bytes = std::fs::read(tar).unwrap();
    let at = (0..bytes.len())
        .step_by(512)
        .find(|&i| bytes[i..].starts_with(member.as_bytes()))
        .unwrap_or_else(|| panic!("{member} not in {}", tar.display()));
    bytes[at + 150] ^= 0x55;
    std::fs::write(tar, bytes).unwrap();
}

#[test]
fn damaged_shards_are_skipped_and_counted_and_cache_build_writes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    common::write_jpeg_folder(&images, 2, 10, 32);
    // Sorts between img_004 and img_005: sample 5, in shard 0.
    std::fs::write(
        images.join("class_0/img_0045.jpg"),
        b"\xff\xd8\xff\xe0 broken",
    )
    .unwrap();
    let out = dir.path().join("shards");
    let written = common::run_reference(
        "make_webdataset.py",
        &[&images, &out, Path::new("tarfile"), Path::new("--orphan")],
    );
    let written: Vec<Written> = serde_json::from_str(written.lines().last().unwrap()).unwrap();
    assert_eq!(written.len(), 21);
    assert_eq!(written[5].file, "class_0/img_0045.jpg");
    // Shard 0: class_0/img_002.jpg's header damaged (its .cls, found by searching forward,
    // is left without an image). Shard 2: cut inside its last image, class_1/img_009.jpg.
    damage_header(&out.join("shard-000000.tar"), "class_0/img_002.jpg");
    let cut_in = &written[20];
    assert_eq!(cut_in.shard, "shard-000002.tar");
    let s2 = out.join("shard-000002.tar");
    let bytes = std::fs::read(&s2).unwrap();
    let member = format!("{}.jpg", cut_in.key);
    let header = (0..bytes.len())
        .step_by(512)
        .find(|&i| bytes[i..].starts_with(member.as_bytes()))
        .unwrap();
    std::fs::write(&s2, &bytes[..header + 512 + 100]).unwrap();
    // Shard 3 is missing; shard 4 is not a tar.
    std::fs::write(out.join("shard-000004.tar"), vec![7u8; 4096]).unwrap();

    let source = format!(
        "type = \"webdataset\"\nurls = \"{}/shard-{{000000..000004}}.tar\"",
        out.display()
    );
    let pipeline = common::tiny_pipeline(dir.path(), &source, "");
    let cache = dir.path().join("cache");
    let run = common::cache_build(dir.path(), &pipeline, &cache);
    let log = common::text(&run);
    assert!(run.status.success(), "{log}");
    // 21 packed samples, the orphan key and the damaged header's own entry: 23. Skipped: the
    // orphan and img_002 (no image member), the damaged header, the truncated image (read
    // errors, stage "source") and the broken JPEG (stage "decode").
    let s0 = out.join("shard-000000.tar").display().to_string();
    for needle in [
        format!("{s0}#orphan_key: no image member"),
        format!("{s0}#class_0/img_002: no image member"),
        format!("{s0}#@"),
        format!("{}#{}.jpg: truncated", s2.display(), cut_in.key),
        format!("{s0}#class_0/img_0045.jpg"),
        format!("{}/shard-000003.tar: skipped", out.display()),
        format!(
            "{}/shard-000004.tar: skipped: not a tar file",
            out.display()
        ),
    ] {
        assert!(log.contains(&needle), "log lacks {needle:?}:\n{log}");
    }
    assert_eq!(
        log.matches("shard-000003.tar").count(),
        1,
        "the missing shard is logged once:\n{log}"
    );
    assert!(
        log.contains("18 images written, 5 skipped"),
        "expected 18 written and 5 skipped:\n{log}"
    );

    // The cache holds the readable samples in the source's order, decoded from the right files.
    let cached = open(&format!("type = \"cache\"\npath = \"{}\"", cache.display()));
    let lost = [
        "class_0/img_002.jpg",
        "class_0/img_0045.jpg",
        cut_in.file.as_str(),
    ];
    let readable: Vec<&Written> = written
        .iter()
        .filter(|w| !lost.contains(&w.file.as_str()))
        .collect();
    assert_eq!(cached.len(), readable.len() as u64);
    for (id, w) in readable.iter().enumerate() {
        let Payload::Decoded(frame) = cached.read(id as u64).unwrap() else {
            panic!("decoded frame")
        };
        let expected = image::open(images.join(&w.file)).unwrap().to_rgb8();
        assert_eq!(
            (frame.width, frame.height),
            expected.dimensions(),
            "{}",
            w.file
        );
        let diff = frame
            .data()
            .iter()
            .zip(expected.as_raw())
            .map(|(&a, &b)| a.abs_diff(b) as f64)
            .sum::<f64>()
            / expected.as_raw().len() as f64;
        assert!(diff < 3.0, "{}: {diff:.2} levels from the JPEG", w.file);
        assert_eq!(cached.label(id as u64), Some(w.label), "{}", w.file);
    }
}
