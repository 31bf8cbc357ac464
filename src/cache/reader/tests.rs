use super::*;
use crate::cache::{encode_record, BuildSettings, Encoding, RecordSettings, ShardWriter};

fn frame(seed: u8, w: u32, h: u32) -> Frame {
    Frame::from_rgb(
        w,
        h,
        (0..w * h * 3)
            .map(|i| (i as u8).wrapping_mul(seed))
            .collect(),
    )
}

fn settings(shard_bytes: u64, encoding: Encoding) -> BuildSettings {
    BuildSettings {
        records: RecordSettings {
            encoding,
            quality: 90,
            auto_ratio: 6.0,
            max_side: None,
            short_side: None,
        },
        shard_bytes,
        source: serde_json::json!({"type": "synthetic"}),
        seed: None,
        max_pixels: 1 << 30,
    }
}

fn raw_writer(dir: &Path, shard_bytes: u64) -> ShardWriter {
    ShardWriter::open(dir, &settings(shard_bytes, Encoding::Raw)).unwrap()
}

fn push_raw(w: &mut ShardWriter, id: u64, label: Option<u32>, f: Frame) {
    let s = settings(0, Encoding::Raw).records;
    w.push(id, label, encode_record(f, &s).unwrap()).unwrap();
}

fn decoded(p: Payload) -> Frame {
    match p {
        Payload::Decoded(f) => f,
        Payload::Encoded(bytes) => crate::decode::decode_image(&bytes, 1 << 30).unwrap(),
    }
}

/// Raw records come back byte for byte, through `pread` (owned) and `mmap` (mapped) alike.
#[test]
fn raw_round_trip_across_shards_with_either_io() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = raw_writer(dir.path(), 4096);
    for i in 0..10u8 {
        push_raw(&mut w, i as u64, Some(i as u32 % 3), frame(i + 1, 20, 10));
    }
    let m = w.finish().unwrap();
    assert!(m.shards.len() > 1, "small shard size must split: {m:?}");
    for io in [ReadIo::Pread, ReadIo::Mmap] {
        let opts = ReadOptions {
            io,
            verify: true,
            ..Default::default()
        };
        let src = CacheSource::open_with(dir.path(), &opts).unwrap();
        assert_eq!(src.len(), 10);
        assert_eq!(src.num_classes(), Some(3));
        for i in 0..10u8 {
            let Payload::Decoded(f) = src.read(i as u64).unwrap() else {
                panic!("raw records are decoded frames")
            };
            match io {
                ReadIo::Mmap => assert!(matches!(f.pixels, Pixels::Mapped { .. })),
                ReadIo::Pread => assert!(matches!(f.pixels, Pixels::Owned(_))),
            }
            assert_eq!(f.data(), frame(i + 1, 20, 10).data());
            assert_eq!(src.label(i as u64), Some(i as u32 % 3));
        }
    }
    let report = verify(dir.path()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.records, 10);
}

/// JPEG records are handed to the decode stage as JPEG files of the stored size.
#[test]
fn jpeg_records_are_read_as_encoded_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(1 << 20, Encoding::Jpeg);
    let mut w = ShardWriter::open(dir.path(), &s).unwrap();
    for i in 0..3u8 {
        let rec = encode_record(frame(i + 1, 32, 24), &s.records).unwrap();
        w.push(i as u64, None, rec).unwrap();
    }
    w.finish().unwrap();
    let src = CacheSource::open(dir.path(), None).unwrap();
    let Payload::Encoded(bytes) = src.read(1).unwrap() else {
        panic!("a JPEG record is an encoded payload")
    };
    assert_eq!(&bytes[..2], &[0xFF, 0xD8]);
    let f = decoded(Payload::Encoded(bytes));
    assert_eq!((f.width, f.height), (32, 24));
}

#[test]
fn verify_finds_a_flipped_bit_in_any_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = raw_writer(dir.path(), 1 << 20);
    for i in 0..4u8 {
        push_raw(&mut w, i as u64, None, frame(i + 3, 8, 8));
    }
    w.finish().unwrap();
    let shard = dir.path().join("shard-00000.dsc");
    let mut bytes = std::fs::read(&shard).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 0x10;
    std::fs::write(&shard, bytes).unwrap();
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].contains("record 3") && report.problems[0].contains("checksum"));
    // Reading with `verify` refuses the damaged record on its first read, the others pass.
    let src = CacheSource::open_with(
        dir.path(),
        &ReadOptions {
            verify: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(src.read(0).is_ok() && src.read(2).is_ok());
    let err = src.read(3).err().expect("checksum mismatch").to_string();
    assert!(
        err.contains("checksum mismatch") && err.contains("shard-00000.dsc"),
        "{err}"
    );
    // Without `verify` nothing is checked on read.
    assert!(CacheSource::open(dir.path(), None).unwrap().read(3).is_ok());
}

/// A shard truncated while a reader has it open: the records past the cut are reported as
/// errors naming the shard (the source actor skips and counts them); nothing crashes.
#[test]
fn a_shard_truncated_while_open_is_reported_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = raw_writer(dir.path(), 1 << 20);
    for i in 0..6u8 {
        push_raw(&mut w, i as u64, None, frame(i + 1, 16, 16));
    }
    w.finish().unwrap();
    let src = CacheSource::open(dir.path(), None).unwrap();
    assert!(src.read(5).is_ok());
    let shard = dir.path().join("shard-00000.dsc");
    let len = std::fs::metadata(&shard).unwrap().len();
    // Truncate in place (the same inode the reader holds), cutting the last two records.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_len(len - 16 * 16 * 3 - 10)
        .unwrap();
    for id in 0..4 {
        assert_eq!(
            decoded(src.read(id).unwrap()).data(),
            frame(id as u8 + 1, 16, 16).data()
        );
    }
    for id in 4..6 {
        let err = src.read(id).err().expect("truncated record").to_string();
        assert!(
            err.contains("shard-00000.dsc") && err.contains("truncated"),
            "{err}"
        );
    }
    // Opening it afresh refuses the shard up front.
    let err = CacheSource::open(dir.path(), None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("outside the file"), "{err}");
}

#[test]
fn an_interrupted_build_resumes_after_the_last_complete_shard() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = raw_writer(dir.path(), 4096);
    for i in 0..7u8 {
        push_raw(&mut w, i as u64, None, frame(i + 1, 20, 10));
    }
    // Dropped without finish(): a crash. Complete shards are in the manifest, the rest is lost.
    let done = w.manifest().consumed;
    drop(w);
    std::fs::write(dir.path().join("shard-00009.dsc.tmp"), b"half-written").unwrap();
    let w = raw_writer(dir.path(), 4096);
    assert_eq!(w.manifest().consumed, done);
    assert!(done > 0 && done < 7, "consumed {done}");
    assert!(!dir.path().join("shard-00009.dsc.tmp").exists());
    drop(w);
    // Resuming with other settings or another source is refused, naming what differs.
    let mut other = settings(4096, Encoding::Jpeg);
    let err = ShardWriter::open(dir.path(), &other)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("records.encoding: \"raw\" -> \"jpeg\""),
        "{err}"
    );
    other = settings(4096, Encoding::Raw);
    other.source = serde_json::json!({"type": "image_folder", "path": "/elsewhere"});
    let err = ShardWriter::open(dir.path(), &other)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("source.type") && err.contains("source.path"),
        "{err}"
    );
}

/// Arbitrary and mutated manifests: errors, never panics, never a path outside the cache.
#[test]
fn mutated_manifests_never_panic_or_escape() {
    let good = format!(
        r#"{{"version":{FORMAT_VERSION},"shards":[{{"file":"shard-00000.dsc","records":3}}],"consumed":3,"complete":true,"skipped":0,"settings":null}}"#
    );
    assert!(parse_manifest(&good).is_ok());
    for bad in [
        "../../etc/passwd",
        "/etc/passwd",
        "sub/shard.dsc",
        "..",
        ".",
    ] {
        let escape = good.replace("shard-00000.dsc", bad);
        assert!(
            parse_manifest(&escape)
                .unwrap_err()
                .contains("not a file name"),
            "{bad}"
        );
    }
    for version in [1, FORMAT_VERSION + 1] {
        let other = good.replace(
            &format!("\"version\":{FORMAT_VERSION}"),
            &format!("\"version\":{version}"),
        );
        let err = parse_manifest(&other).unwrap_err();
        assert!(
            err.contains(&format!("version {version}")) && err.contains("rebuild"),
            "{err}"
        );
    }
    // A version-1 manifest (no settings key, shards without bytes) names the version too.
    let v1 = r#"{"version":1,"shards":[{"file":"shard-00000.dsc","records":3}],"consumed":3,"complete":true,"skipped":0}"#;
    assert!(parse_manifest(v1).unwrap_err().contains("version 1"));
    let mut rng = crate::rng::Rng::keyed(&[13, 9]);
    for round in 0..5000u64 {
        let bytes = crate::testing::mutate(good.as_bytes(), &mut rng, round);
        if let Ok(m) = parse_manifest(&String::from_utf8_lossy(&bytes)) {
            assert!(m
                .shards
                .iter()
                .all(|s| !s.file.contains('/') && s.file != ".."));
        }
    }
}

/// `quasi_random` through the source: every id once per epoch, deterministic, and the shards'
/// real sizes (with `limit` cutting the last one) are what it orders.
#[test]
fn the_source_reads_in_its_configured_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = raw_writer(dir.path(), 4096);
    for i in 0..40u64 {
        push_raw(&mut w, i, None, frame(i as u8 + 1, 10, 10));
    }
    w.finish().unwrap();
    let opts = ReadOptions {
        limit: Some(33),
        order: ReadOrder::QuasiRandom,
        window: 4,
        lanes: 2,
        ..Default::default()
    };
    let src = CacheSource::open_with(dir.path(), &opts).unwrap();
    assert_eq!(src.len(), 33);
    let a = src.epoch_order(7, 0);
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..33).collect::<Vec<_>>());
    assert_eq!(a, src.epoch_order(7, 0));
    assert_ne!(a, src.epoch_order(7, 1));
    let random = CacheSource::open(dir.path(), Some(33)).unwrap();
    assert_eq!(
        random.epoch_order(7, 0),
        crate::source::epoch_order(7, 0, 33)
    );
}

/// Several ranks: each walks `dist::Shard`'s slots of the one quasi-random order (as the source
/// actor does), so per epoch their records are disjoint and together cover every whole global
/// block; the order differs per epoch.
#[test]
fn ranks_read_disjoint_records_of_the_quasi_random_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = raw_writer(dir.path(), 4096);
    for i in 0..50u64 {
        push_raw(&mut w, i, None, frame(i as u8 + 1, 10, 10));
    }
    w.finish().unwrap();
    let opts = ReadOptions {
        order: ReadOrder::QuasiRandom,
        window: 4,
        lanes: 3,
        ..Default::default()
    };
    let src = CacheSource::open_with(dir.path(), &opts).unwrap();
    let (world, per_rank) = (3usize, 4usize);
    let mut epochs = Vec::new();
    for epoch in 0..2 {
        let order = src.epoch_order(11, epoch);
        let mut seen: Vec<u64> = Vec::new();
        for rank in 0..world {
            let shard = crate::dist::Shard {
                rank,
                world,
                per_rank,
            };
            seen.extend(
                shard
                    .slots(0, src.len())
                    .map(|s| order[s.position as usize]),
            );
        }
        let whole = 50 / (world * per_rank) * world * per_rank;
        assert_eq!(seen.len(), whole);
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), whole, "a record read by two ranks");
        let mut want = order[..whole].to_vec();
        want.sort_unstable();
        assert_eq!(sorted, want);
        epochs.push(seen);
    }
    assert_ne!(epochs[0], epochs[1]);
}
