//! The shard cache at scale (issue 14), through the real binary: JPEG and resized records,
//! parallel builds that write the same bytes as a serial one, `cache info`, a resumed build
//! with other settings refused, training on a quasi-random verified cache, and
//! `cache export --webdataset` read back with Python's `tarfile` and PIL.

mod common;

use std::path::Path;

use common::{image_folder_source, run_in, run_reference, text, tiny_pipeline, write_jpeg_folder};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn build(dir: &Path, pipeline: &Path, out: &Path, sets: &[&str]) -> std::process::Output {
    let mut args = vec!["cache", "build", s(pipeline), "--out", s(out)];
    for set in sets {
        args.extend(["--set", set]);
    }
    run_in(dir, &args)
}

#[test]
fn jpeg_resized_cache_builds_in_parallel_trains_and_exports_to_webdataset() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let images = d.join("images");
    // 2 classes × 6 pictures of 60..74 × 60 pixels.
    write_jpeg_folder(&images, 2, 6, 60);
    let pipeline = tiny_pipeline(d, &image_folder_source(&images), "");
    let settings = [
        "cache.encoding=\"jpeg\"",
        "cache.quality=85",
        "cache.max_side=40",
        "cache.shard_bytes=8192",
    ];
    let (par, ser) = (d.join("par"), d.join("ser"));
    let out = build(
        d,
        &pipeline,
        &par,
        &[&settings[..], &["cache.workers=3"]].concat(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("12 images written, 0 skipped"),
        "{}",
        text(&out)
    );
    let out = build(
        d,
        &pipeline,
        &ser,
        &[&settings[..], &["cache.workers=1"]].concat(),
    );
    assert!(out.status.success(), "{}", text(&out));
    // Deterministic whatever the worker count: the same shard files, byte for byte.
    let shards = |dir: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".dsc"))
            .collect();
        v.sort();
        v
    };
    assert!(shards(&par).len() > 1, "{:?}", shards(&par));
    assert_eq!(shards(&par), shards(&ser));
    for name in shards(&par) {
        assert_eq!(
            std::fs::read(par.join(&name)).unwrap(),
            std::fs::read(ser.join(&name)).unwrap(),
            "{name}"
        );
    }

    let out = run_in(d, &["cache", "info", s(&par)]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for want in [
        "records:  12 in",
        "kinds:    0 raw, 12 jpeg",
        "encoding: Jpeg (quality 85",
        "max_side 40",
        "\"image_folder\"",
        s(&images),
    ] {
        assert!(t.contains(want), "{want:?} missing from:\n{t}");
    }
    let out = run_in(d, &["cache", "verify", s(&par)]);
    assert!(out.status.success(), "{}", text(&out));

    // Building again with another encoding (complete or not) is refused, naming the key.
    let out = build(
        d,
        &pipeline,
        &par,
        &["cache.encoding=\"raw\"", "cache.max_side=40"],
    );
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("records.encoding") && t.contains("other settings"),
        "{t}"
    );

    // Train on it: quasi-random order, checksums checked on first read.
    let cached = tiny_pipeline(
        d,
        &format!(
            "type = \"cache\"\npath = \"{}\"\norder = \"quasi_random\"\nwindow = 2\nlanes = 2\nverify = true",
            par.display()
        ),
        "",
    );
    let out = run_in(d, &["run", s(&cached), "--max-steps", "2", "--no-progress"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("0 unreadable samples skipped"), "{t}");

    // Export and read back with Python's tarfile: every record once, in id order, JPEGs copied
    // verbatim at the stored size, labels as .cls.
    let wds = d.join("wds");
    let out = run_in(
        d,
        &[
            "cache",
            "export",
            s(&par),
            "--webdataset",
            s(&wds),
            "--per-tar",
            "5",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("12 records in 3 tar files"),
        "{}",
        text(&out)
    );
    let json = run_reference("read_wds_tars.py", &[&wds]);
    let recs: Vec<serde_json::Value> = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(recs.len(), 12, "{json}");
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["key"], format!("{i:09}"), "{r}");
        assert_eq!(r["tar"], format!("shard-{:06}.tar", i / 5), "{r}");
        assert_eq!(r["exts"], serde_json::json!(["cls", "jpg"]), "{r}");
        assert_eq!(r["format"], "JPEG");
        assert_eq!(r["cls"], (i / 6) as u64, "{r}");
        // Class folders hold 60..74 × 60 pictures; longer side resized to 40, never enlarged.
        let size = r["size"].as_array().unwrap();
        let (w, h) = (size[0].as_u64().unwrap(), size[1].as_u64().unwrap());
        assert_eq!(w, 40, "{r}");
        let orig_w = 60 + (i as u64 % 6 % 3) * 7;
        assert_eq!(h, (60.0 * 40.0 / orig_w as f64).round() as u64, "{r}");
    }
    // The JPEG members are the records' bytes: the same as the cache's own.
    let first_tar = std::fs::read(wds.join("shard-000000.tar")).unwrap();
    let shard0 = std::fs::read(par.join("shard-00000.dsc")).unwrap();
    let size = std::str::from_utf8(&first_tar[124..135]).unwrap();
    let size = usize::from_str_radix(size, 8).unwrap();
    let member = &first_tar[512..512 + size]; // the first member's data follows its header
    assert_eq!(&member[..2], &[0xFF, 0xD8]);
    assert!(
        shard0.windows(size).any(|w| w == member),
        "the exported JPEG is not the stored record"
    );
}

/// Raw records export as lossless PNGs with exactly the cached pixels.
#[test]
fn raw_cache_exports_png_members_with_the_cached_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let images = d.join("images");
    write_jpeg_folder(&images, 1, 3, 30);
    let pipeline = tiny_pipeline(d, &image_folder_source(&images), "");
    let cache = d.join("cache");
    let out = build(d, &pipeline, &cache, &["cache.short_side=20"]);
    assert!(out.status.success(), "{}", text(&out));
    let wds = d.join("wds");
    let out = run_in(d, &["cache", "export", s(&cache), "--webdataset", s(&wds)]);
    assert!(out.status.success(), "{}", text(&out));
    let json = run_reference("read_wds_tars.py", &[&wds]);
    let recs: Vec<serde_json::Value> = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(recs.len(), 3, "{json}");
    for r in &recs {
        assert_eq!(r["format"], "PNG", "{r}");
        assert_eq!(r["mode"], "RGB", "{r}");
        // 30..44 × 30 pictures, shorter side to 20.
        assert_eq!(r["size"][1], 20, "{r}");
    }
}
