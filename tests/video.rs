//! Video sources on files made by the ffmpeg CLI: random sampling over several containers
//! checked frame by frame against the CLI's own decode, 1 vs 3 decoders, resume without
//! decoding the prefix, a resolution change, corrupt bytes, a playlist disguised as an .mp4,
//! list files, `max_side` and `decode.max_pixels`, and the keyframe index cache.
#![cfg(feature = "video")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use common::{ffmpeg, ffmpeg_rawvideo};
use dino_stream::source::video::index::{self, Origin};
use dino_stream::source::video::plan::{self, Sampling};
use dino_stream::source::{Pass, PassEnd, StreamSource, VideoConfig, VideoSampling, VideoSource};

fn options(sampling: VideoSampling, cache: &Path) -> VideoConfig {
    VideoConfig {
        sampling,
        shuffle_buffer: 24,
        decoders: 2,
        max_side: 0,
        index_cache: Some(cache.to_path_buf()),
        ..VideoConfig::new("")
    }
}

fn open_at(path: &Path, o: VideoConfig) -> Result<VideoSource, dino_stream::source::SourceError> {
    VideoSource::open(VideoConfig {
        path: path.to_path_buf(),
        ..o
    })
}

fn pass(epoch: u64, start: u64) -> Pass {
    Pass {
        seed: 5,
        epoch,
        start,
        max_pixels: 1 << 26,
    }
}

/// (position, width, height, RGB bytes) of every emitted frame, and the skips reported.
type Emitted = Vec<(u64, u32, u32, Vec<u8>)>;

fn collect(src: &mut VideoSource, p: &Pass) -> (Emitted, Vec<(String, String)>) {
    let mut frames = Vec::new();
    let mut skips = Vec::new();
    let end = src.run_pass(
        p,
        &mut |pos, f| {
            frames.push((pos, f.width, f.height, f.data().to_vec()));
            true
        },
        &mut |what, why| skips.push((what.to_string(), why.to_string())),
    );
    assert_eq!(end, PassEnd::Finished);
    (frames, skips)
}

/// Small test videos: 50 frames of testsrc2 (moving content, a frame counter) at 25 fps with
/// a keyframe every 12 frames, in four containers and codecs.
fn make_videos(dir: &Path) -> Vec<PathBuf> {
    let sub = dir.join("more/deeper");
    std::fs::create_dir_all(&sub).unwrap();
    let src = "testsrc2=size=96x64:rate=25:duration=2";
    let specs: [(PathBuf, &[&str]); 4] = [
        (
            dir.join("a.mp4"),
            &["-c:v", "libx264", "-g", "12", "-bf", "2"],
        ),
        (
            dir.join("b.mkv"),
            &["-c:v", "mpeg4", "-g", "12", "-bf", "1"],
        ),
        (
            sub.join("c.webm"),
            &["-c:v", "libvpx", "-g", "12", "-b:v", "300k"],
        ),
        (
            sub.join("d.ts"),
            &["-c:v", "mpeg2video", "-g", "12", "-bf", "2"],
        ),
    ];
    for (path, codec) in &specs {
        let mut args = vec!["-f", "lavfi", "-i", src, "-pix_fmt", "yuv420p"];
        args.extend_from_slice(codec);
        args.push(path.to_str().unwrap());
        ffmpeg(&args);
    }
    specs.into_iter().map(|(p, _)| p).collect()
}

/// Every frame of `file` as the ffmpeg CLI decodes it (RGB24, bilinear like the source).
fn reference_frames(file: &Path, w: usize, h: usize) -> Vec<Vec<u8>> {
    ffmpeg_rawvideo(file, &["-sws_flags", "bilinear", "-pix_fmt", "rgb24"])
        .chunks(w * h * 3)
        .map(|c| c.to_vec())
        .collect()
}

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as i32 - *y as i32).unsigned_abs() as f64)
        .sum::<f64>()
        / a.len() as f64
}

/// position → (file, frame index) for a random epoch, from the public plan.
fn frames_of_epoch(
    src: &VideoSource,
    cache: &Path,
    s: &Sampling,
    seed: u64,
    epoch: u64,
) -> Vec<(u32, u32)> {
    let idx: Vec<_> = src
        .files()
        .iter()
        .map(|f| index::load(f, cache).unwrap().0)
        .collect();
    let refs: Vec<_> = idx.iter().collect();
    let p = plan::plan(&refs, s, seed, epoch);
    let mut by_feed = Vec::new();
    for u in &p.units {
        by_feed.extend(u.frames.iter().map(|&f| (u.file, f)));
    }
    p.order.iter().map(|&i| by_feed[i as usize]).collect()
}

#[test]
fn random_sampling_seeks_to_the_right_frames_in_every_container() {
    let dir = tempfile::tempdir().unwrap();
    let (videos, cache) = (dir.path().join("v"), dir.path().join("cache"));
    std::fs::create_dir_all(&videos).unwrap();
    let files = make_videos(&videos);
    let mut src = open_at(&videos, options(VideoSampling::Random, &cache)).unwrap();
    // The directory is searched recursively, in sorted path order.
    let mut sorted = files.clone();
    sorted.sort();
    assert_eq!(src.files(), &sorted[..]);
    assert_eq!(src.epoch_len(), Some(200));
    let (frames, skips) = collect(&mut src, &pass(0, 0));
    assert!(skips.is_empty(), "{skips:?}");
    assert_eq!(frames.len(), 200);
    assert!(frames.iter().enumerate().all(|(i, f)| f.0 == i as u64));
    let sampling = Sampling {
        shuffle_buffer: 24,
        ..Sampling::default()
    };
    let which = frames_of_epoch(&src, &cache, &sampling, 5, 0);
    let refs: Vec<Vec<Vec<u8>>> = src
        .files()
        .iter()
        .map(|f| reference_frames(f, 96, 64))
        .collect();
    for r in &refs {
        assert_eq!(r.len(), 50);
    }
    let mut worst = 0f64;
    for ((_, w, h, data), &(file, frame)) in frames.iter().zip(&which) {
        assert_eq!((*w, *h), (96, 64));
        let r = &refs[file as usize];
        let d = mean_abs_diff(data, &r[frame as usize]);
        worst = worst.max(d);
        // The right frame, not a neighbour: every other frame of the file is further away.
        for (j, other) in r.iter().enumerate() {
            if j != frame as usize {
                assert!(
                    mean_abs_diff(data, other) > d,
                    "{}: frame {frame} looks like frame {j}",
                    src.files()[file as usize].display()
                );
            }
        }
    }
    assert!(
        worst < 1.0,
        "mean abs difference from the ffmpeg CLI up to {worst}"
    );
    // Batches mix places: the first 32 frames come from several files.
    let files_in_first: std::collections::HashSet<u32> = which[..32].iter().map(|w| w.0).collect();
    assert!(files_in_first.len() >= 3, "{files_in_first:?}");
    // Another epoch, another order.
    assert_ne!(which, frames_of_epoch(&src, &cache, &sampling, 5, 1));
}

#[test]
fn one_and_three_decoders_give_identical_frames_and_resume_decodes_no_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (videos, cache) = (dir.path().join("v"), dir.path().join("cache"));
    std::fs::create_dir_all(&videos).unwrap();
    make_videos(&videos);
    let opts = |decoders: usize| {
        let mut o = options(VideoSampling::Random, &cache);
        o.decoders = decoders;
        o.stride = 2;
        o.shuffle_buffer = 8;
        o
    };
    let run = |decoders: usize, start: u64| {
        let mut src = open_at(&videos, opts(decoders)).unwrap();
        let (frames, _) = collect(&mut src, &pass(3, start));
        (frames, src.stats().decoded.load(Ordering::Relaxed))
    };
    let (one, decoded_full) = run(1, 0);
    let (three, _) = run(3, 0);
    assert_eq!(one.len(), 100);
    assert!(
        one == three,
        "1 and 3 decoders emit the same frames in the same order"
    );
    let start = 75;
    let (resumed, decoded_resumed) = run(3, start);
    assert!(
        resumed[..] == one[start as usize..],
        "the resumed pass continues exactly"
    );
    // What a resume may decode: in each unit that still holds a frame at a position >= start,
    // from its keyframe to its last such frame (plus a few pictures of decoder delay and open
    // GOPs' leading frames per unit); nothing of the units wholly before the cursor.
    let src = open_at(&videos, opts(1)).unwrap();
    let idx: Vec<_> = src
        .files()
        .iter()
        .map(|f| index::load(f, &cache).unwrap().0)
        .collect();
    let refs: Vec<_> = idx.iter().collect();
    let s = Sampling {
        stride: 2,
        shuffle_buffer: 8,
        ..Sampling::default()
    };
    let p = plan::plan(&refs, &s, 5, 3);
    let later: std::collections::HashSet<u64> = p.order[start as usize..].iter().copied().collect();
    let (mut bound, mut units) = (0u64, 0u64);
    for u in &p.units {
        let last = (0..u.frames.len())
            .rev()
            .find(|&j| later.contains(&(u.feed_start + j as u64)));
        if let Some(j) = last {
            let first = idx[u.file as usize].gops[u.gop as usize].first;
            bound += (u.frames[j] - first + 1) as u64;
            units += 1;
        }
    }
    assert!(
        decoded_resumed <= bound + 4 * units && decoded_resumed < decoded_full,
        "resume decoded {decoded_resumed} pictures (bound {bound} + 4 x {units} units), the whole epoch {decoded_full}"
    );
    eprintln!(
        "resume at 75/100 decoded {decoded_resumed} pictures, the whole epoch {decoded_full}"
    );
}

#[test]
fn a_resolution_change_and_corrupt_bytes_do_not_end_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // Two H.264 segments of different sizes joined by FFmpeg's concat demuxer into one
    // MPEG-TS stream (timestamps continue): the size changes midway.
    let (a, b) = (dir.path().join("a.ts"), dir.path().join("b.ts"));
    for (p, size) in [(&a, "64x48"), (&b, "96x72")] {
        let src = format!("testsrc2=size={size}:rate=25:duration=1");
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            &src,
            "-c:v",
            "libx264",
            "-g",
            "10",
            "-pix_fmt",
            "yuv420p",
            p.to_str().unwrap(),
        ]);
    }
    let list = dir.path().join("segments.ffconcat");
    std::fs::write(
        &list,
        format!("file '{}'\nfile '{}'\n", a.display(), b.display()),
    )
    .unwrap();
    let joined = dir.path().join("joined.ts");
    ffmpeg(&[
        "-f",
        "concat",
        "-safe",
        "0",
        "-i",
        list.to_str().unwrap(),
        "-c",
        "copy",
        joined.to_str().unwrap(),
    ]);
    for sampling in [VideoSampling::Sequential, VideoSampling::Random] {
        let mut src = open_at(&joined, options(sampling, &cache)).unwrap();
        let (frames, skips) = collect(&mut src, &pass(0, 0));
        let sizes: std::collections::BTreeSet<(u32, u32)> =
            frames.iter().map(|f| (f.1, f.2)).collect();
        assert_eq!(sizes, [(64, 48), (96, 72)].into(), "{sampling:?}");
        assert!(
            frames.len() >= 48,
            "{sampling:?}: {} frames, skips {skips:?}",
            frames.len()
        );
    }

    // Corrupt bytes in the middle of an mp4's media data.
    let clean = dir.path().join("clean.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=96x64:rate=25:duration=4",
        "-c:v",
        "libx264",
        "-g",
        "25",
        "-pix_fmt",
        "yuv420p",
        clean.to_str().unwrap(),
    ]);
    let mut bytes = std::fs::read(&clean).unwrap();
    let mid = bytes.len() / 2;
    for (i, b) in bytes[mid..mid + 2000].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151) ^ 0x5A;
    }
    let broken = dir.path().join("broken.mp4");
    std::fs::write(&broken, bytes).unwrap();
    for sampling in [VideoSampling::Sequential, VideoSampling::Random] {
        let mut src = open_at(&broken, options(sampling, &cache)).unwrap();
        let (frames, skips) = collect(&mut src, &pass(0, 0));
        let stats = src.stats();
        // Frames on both sides of the damage come out; what could not be decoded is counted.
        assert!(
            frames.len() >= 60,
            "{sampling:?}: {} of 100 frames",
            frames.len()
        );
        assert!(
            frames.len() < 100
                || stats.corrupt_packets.load(Ordering::Relaxed) > 0
                || !skips.is_empty(),
            "{sampling:?}: the damage went unnoticed"
        );
        eprintln!(
            "{sampling:?}: {} frames, {} corrupt packets, {} frames skipped",
            frames.len(),
            stats.corrupt_packets.load(Ordering::Relaxed),
            skips.len()
        );
    }
}

#[test]
fn playlists_lists_max_side_max_pixels_and_the_index_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let video = dir.path().join("wide.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x180:rate=25:duration=1",
        "-c:v",
        "libx264",
        "-g",
        "10",
        "-pix_fmt",
        "yuv420p",
        video.to_str().unwrap(),
    ]);

    // An HLS playlist named .mp4 that points at a local server: refused, the server never hears.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let evil = dir.path().join("evil.mp4");
    std::fs::write(
        &evil,
        format!("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.1:{port}/x.ts\n#EXTINF:1,\n{}\n#EXT-X-ENDLIST\n", video.display()),
    )
    .unwrap();
    // A list file: a relative path, the playlist and a missing file.
    let list = dir.path().join("inputs.txt");
    std::fs::write(
        &list,
        "# training videos\nwide.mp4\n\nevil.mp4\nmissing.mkv\n",
    )
    .unwrap();
    let mut o = options(VideoSampling::Random, &cache);
    o.max_side = 64;
    let mut src = open_at(&list, o.clone()).unwrap();
    assert_eq!(src.files(), &[dir.path().join("wide.mp4")]);
    let (frames, skips) = collect(&mut src, &pass(0, 0));
    assert_eq!(frames.len(), 25);
    assert!(
        frames.iter().all(|f| (f.1, f.2) == (64, 36)),
        "scaled in FFmpeg to max_side"
    );
    let skipped: Vec<&str> = skips.iter().map(|s| s.0.as_str()).collect();
    assert!(skipped.iter().any(|s| s.ends_with("evil.mp4")), "{skips:?}");
    assert!(
        skipped.iter().any(|s| s.ends_with("missing.mkv")),
        "{skips:?}"
    );
    assert!(
        listener.accept().is_err(),
        "the playlist reached the network"
    );
    // The sequential reader opens local files the same way.
    let mut seq = open_at(&evil, options(VideoSampling::Sequential, &cache)).unwrap();
    let (frames, skips) = collect(&mut seq, &pass(0, 0));
    assert!(frames.is_empty() && skips.len() == 1, "{skips:?}");
    assert!(
        listener.accept().is_err(),
        "the playlist reached the network"
    );

    // decode.max_pixels applies to frames: every frame is skipped, naming the limit.
    let mut src = open_at(&video, o.clone()).unwrap();
    let mut p = pass(0, 0);
    p.max_pixels = 320 * 180 - 1;
    let (frames, skips) = collect(&mut src, &p);
    assert!(frames.is_empty());
    assert_eq!(skips.len(), 25);
    assert!(skips[0].1.contains("decode.max_pixels"), "{skips:?}");

    // The keyframe index is cached, keyed by path, size and mtime.
    assert_eq!(index::load(&video, &cache).unwrap().1, Origin::Cached);
    let fresh = dir.path().join("other-cache");
    let (built, origin) = index::load(&video, &fresh).unwrap();
    assert_eq!(origin, Origin::Built);
    assert_eq!(built.frames(), 25);
    assert_eq!(built.gops.len(), 3);
    let f = std::fs::File::options().append(true).open(&video).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(f);
    assert_eq!(
        index::load(&video, &fresh).unwrap().1,
        Origin::Built,
        "a changed mtime rebuilds"
    );

    // A URL cannot be sampled at random.
    let e = open_at(Path::new("rtsp://127.0.0.1:1/x"), o).err().unwrap();
    assert!(e.to_string().contains("sequential"), "{e}");
}

#[test]
fn sequential_shuffle_buffer_mixes_frames_within_its_bounds_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let video = dir.path().join("clip.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=96x64:rate=25:duration=2",
        "-c:v",
        "mpeg4",
        "-g",
        "12",
        video.to_str().unwrap(),
    ]);
    let mut plain_opts = options(VideoSampling::Sequential, &cache);
    plain_opts.shuffle_buffer = 1;
    let (plain, _) = collect(&mut open_at(&video, plain_opts).unwrap(), &pass(0, 0));
    assert_eq!(plain.len(), 50);
    let mut o = options(VideoSampling::Sequential, &cache);
    o.shuffle_buffer = 1000;
    // 96 x 64 x 3 bytes a frame: at most 7 frames below 8 frames' bytes.
    o.shuffle_bytes = 8 * 96 * 64 * 3;
    let (mixed, _) = collect(&mut open_at(&video, o.clone()).unwrap(), &pass(0, 0));
    let frame_index = |data: &[u8]| plain.iter().position(|f| f.3 == data).unwrap();
    let order: Vec<usize> = mixed.iter().map(|f| frame_index(&f.3)).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, (0..50).collect::<Vec<_>>(), "every frame once");
    assert_ne!(order, (0..50).collect::<Vec<_>>(), "not shuffled");
    for (pos, &i) in order.iter().enumerate() {
        assert!(
            pos + 7 >= i,
            "frame {i} out at {pos}: the byte bound held more than 7"
        );
    }
    let positions: Vec<u64> = mixed.iter().map(|f| f.0).collect();
    assert_eq!(positions, (0..50).collect::<Vec<_>>());
    // Another epoch, another order; a resume at 20 emits the same tail, byte for byte.
    let (other, _) = collect(&mut open_at(&video, o.clone()).unwrap(), &pass(1, 0));
    assert_ne!(
        other.iter().map(|f| frame_index(&f.3)).collect::<Vec<_>>(),
        order
    );
    let (resumed, _) = collect(&mut open_at(&video, o).unwrap(), &pass(0, 20));
    assert_eq!(resumed, mixed[20..].to_vec());
}

/// `cache build` from a video source writes the frames of random sampling's epoch 0 (at the
/// working size): with stride 5 over a 50-frame file, 10 records, each the ffmpeg CLI's decode
/// of a distinct frame of one stride grid — so a long video can be decoded once and trained
/// on from the cache.
#[test]
fn cache_build_writes_the_frames_random_sampling_draws() {
    use dino_stream::source::{IndexedSource, Payload};
    let dir = tempfile::tempdir().unwrap();
    let videos = dir.path().join("v");
    std::fs::create_dir_all(&videos).unwrap();
    let file = videos.join("a.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=96x64:rate=25:duration=2",
        "-pix_fmt",
        "yuv420p",
        "-c:v",
        "libx264",
        "-g",
        "12",
        file.to_str().unwrap(),
    ]);
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            "[source]\ntype = \"video\"\npath = \"{}\"\nsampling = \"random\"\nstride = 5\n\
             max_side = 0\nindex_cache = \"{}\"\n",
            videos.display(),
            dir.path().join("idx").display()
        ),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let out = common::cache_build(dir.path(), &pipeline, &cache);
    assert!(out.status.success(), "{}", common::text(&out));
    assert!(
        common::text(&out).contains("10 images written, 0 skipped"),
        "{}",
        common::text(&out)
    );
    let refs = reference_frames(&file, 96, 64);
    assert_eq!(refs.len(), 50);
    let src = dino_stream::cache::CacheSource::open(&cache, None).unwrap();
    assert_eq!(src.len(), 10);
    let mut seen = std::collections::BTreeSet::new();
    for id in 0..src.len() {
        let Payload::Decoded(frame) = src.read(id).unwrap() else {
            panic!("record {id}: a raw cache gives pixels");
        };
        assert_eq!((frame.width, frame.height), (96, 64));
        let (best, d) = refs
            .iter()
            .enumerate()
            .map(|(j, r)| (j, mean_abs_diff(frame.data(), r)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        assert!(
            d < 1.0,
            "record {id}: closest CLI frame {best} differs by {d}"
        );
        assert!(seen.insert(best), "frame {best} written twice");
    }
    assert_eq!(seen.len(), 10);
    // One stride grid: every 5th frame from the epoch's offset (drawn per seed, epoch, file).
    let offsets: std::collections::BTreeSet<usize> = seen.iter().map(|f| f % 5).collect();
    assert_eq!(
        offsets.len(),
        1,
        "frames {seen:?} are not on one stride grid"
    );
}

/// Sequential sampling of files goes by plan: file order, every frame once (the ffmpeg CLI's
/// frames in file order with a buffer of one), 1 and 3 decoders emit the same bytes, and a
/// resume mid-epoch seeks to (file, timestamp) and continues exactly, decoding only what is
/// still to come instead of the prefix.
#[test]
fn sequential_files_decode_in_parallel_and_resume_by_seeking() {
    let dir = tempfile::tempdir().unwrap();
    let (videos, cache) = (dir.path().join("v"), dir.path().join("cache"));
    std::fs::create_dir_all(&videos).unwrap();
    // 200 frames (8 s at 25 fps, a keyframe every 12) and then 50 more in another container.
    let a = videos.join("a.mp4");
    let b = videos.join("b.mkv");
    for (path, duration, codec) in [
        (&a, "8", ["-c:v", "libx264", "-g", "12", "-bf", "2"]),
        (&b, "2", ["-c:v", "mpeg4", "-g", "12", "-bf", "1"]),
    ] {
        let src = format!("testsrc2=size=96x64:rate=25:duration={duration}");
        let mut args = vec!["-f", "lavfi", "-i", &src, "-pix_fmt", "yuv420p"];
        args.extend_from_slice(&codec);
        args.push(path.to_str().unwrap());
        ffmpeg(&args);
    }
    let opts = |decoders: usize, shuffle_buffer: usize| VideoConfig {
        decoders,
        shuffle_buffer,
        ..options(VideoSampling::Sequential, &cache)
    };
    let run = |decoders: usize, shuffle_buffer: usize, start: u64| {
        let mut src = open_at(&videos, opts(decoders, shuffle_buffer)).unwrap();
        let (frames, skips) = collect(&mut src, &pass(2, start));
        assert!(skips.is_empty(), "{skips:?}");
        (frames, src.stats().decoded.load(Ordering::Relaxed))
    };

    // A buffer of one: the files' frames in file order, as the ffmpeg CLI decodes them.
    let (plain, _) = run(3, 1, 0);
    let refs: Vec<Vec<u8>> = [&a, &b]
        .iter()
        .flat_map(|f| reference_frames(f, 96, 64))
        .collect();
    assert_eq!((plain.len(), refs.len()), (250, 250));
    for (i, (pos, w, h, data)) in plain.iter().enumerate() {
        assert_eq!((*pos, *w, *h), (i as u64, 96, 64));
        let d = mean_abs_diff(data, &refs[i]);
        assert!(d < 1.0, "frame {i} differs from the CLI's by {d}");
        for j in [i.wrapping_sub(1), i + 1] {
            if let Some(other) = refs.get(j) {
                assert!(mean_abs_diff(data, other) > d, "frame {i} looks like {j}");
            }
        }
    }

    // Shuffled through a buffer of 16: 1 and 3 decoders give the same bytes.
    let (one, decoded_full) = run(1, 16, 0);
    let (three, _) = run(3, 16, 0);
    assert_eq!(one.len(), 250);
    assert!(
        one == three,
        "1 and 3 decoders emit the same frames in order"
    );
    let order: Vec<usize> = one
        .iter()
        .map(|f| plain.iter().position(|p| p.3 == f.3).unwrap())
        .collect();
    assert_ne!(order, (0..250).collect::<Vec<_>>(), "not shuffled");

    // Resume at 170 (in a.mp4): the same tail byte for byte; the source seeks to the first
    // frame still to come, and decodes from its keyframe on, not the 170 frames before.
    let start = 170u64;
    let (resumed, decoded_resumed) = run(3, 16, start);
    assert!(
        resumed[..] == one[start as usize..],
        "the resume continues exactly"
    );
    let src = open_at(&videos, opts(3, 16)).unwrap();
    let first = *order[start as usize..].iter().min().unwrap();
    let (file, seconds) = src.resume_point(5, 2, start).unwrap();
    assert_eq!(file, a);
    assert!(
        (seconds - first as f64 / 25.0).abs() < 1e-6,
        "resume point {seconds}s, first frame still to come {first}"
    );
    // From the keyframe before that frame to the end: at most 12 more, plus decoder delay.
    let bound = (250 - first + 12 + 8) as u64;
    assert!(
        decoded_resumed <= bound && decoded_resumed + 100 <= decoded_full,
        "resume decoded {decoded_resumed} pictures (bound {bound}), the whole pass {decoded_full}"
    );
    eprintln!(
        "sequential resume at {start}/250 from {}s: decoded {decoded_resumed} pictures, the whole pass {decoded_full}",
        seconds
    );
}

/// A 4 s, 25 fps video whose frame N is solid gray, luma 16 + 2N (lossless H.264): a crop's
/// value names its frame. Returns the path and each frame's RGB value as the ffmpeg CLI
/// decodes it.
fn numbered_video(dir: &Path) -> (PathBuf, Vec<u8>) {
    let file = dir.join("numbered.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=black:s=64x48:r=25:d=4",
        "-vf",
        "geq=lum='16+2*N':cb=128:cr=128",
        "-c:v",
        "libx264",
        "-qp",
        "0",
        "-g",
        "12",
        "-bf",
        "2",
        "-pix_fmt",
        "yuv420p",
        file.to_str().unwrap(),
    ]);
    let values: Vec<u8> = reference_frames(&file, 64, 48)
        .iter()
        .map(|f| f[3 * (24 * 64 + 32)])
        .collect();
    assert_eq!(values.len(), 100);
    assert!(values.windows(2).all(|w| w[1] > w[0]), "{values:?}");
    (file, values)
}

/// The frame whose value is `v` (within one level), if exactly one is.
fn frame_of(values: &[u8], v: u8) -> Option<usize> {
    let hits: Vec<usize> = (0..values.len())
        .filter(|&i| (values[i] as i32 - v as i32).abs() <= 1)
        .collect();
    (hits.len() == 1).then(|| hits[0])
}

/// `source.temporal_pairs`: each sample's two global crops come from two frames 0.3–0.9 s
/// apart (8–22 frames at 25 fps) of the file, its local crops from one of the two; the same
/// bytes with 1 and 3 decoders, in random and sequential sampling; the drawn frames (global 0)
/// are those of the pass without pairs, whose two globals share one frame.
#[test]
fn temporal_pairs_take_the_globals_from_two_frames_apart() {
    use dino_stream::batch::Cursor;
    let dir = tempfile::tempdir().unwrap();
    let (file, values) = numbered_video(dir.path());
    let config = |sampling: &str, pairs: bool, decoders: usize| {
        let source = format!(
            "type = \"video\"\npath = \"{}\"\nsampling = \"{sampling}\"\nmax_side = 0\n\
             shuffle_buffer = 16\ndecoders = {decoders}\nindex_cache = \"{}\"\n\
             temporal_pairs = {pairs}\npair_seconds = [0.3, 0.9]",
            file.display(),
            dir.path().join("idx").display()
        );
        let sets = [
            "augment.jitter_p=0",
            "augment.grayscale_p=0",
            "augment.solarize_p=0",
            "augment.blur_p_global1=0",
            "augment.blur_p_global2=0",
            "augment.blur_p_local=0",
            "train.steps_per_epoch=12",
        ];
        let sub = dir.path().join(format!("{sampling}-{pairs}-{decoders}"));
        std::fs::create_dir_all(&sub).unwrap();
        common::tiny_config(&sub, &source, sets.iter().map(|s| s.to_string()).collect())
    };
    let start = Cursor {
        epoch: 0,
        position: 0,
    };
    // (global 0, global 1, locals) frame numbers of every sample of the first 12 batches.
    let frames = |batches: &[dino_stream::batch::Batch]| {
        let mut out = Vec::new();
        for b in batches {
            let (gb, lb) = (32 * 32 * 3, 16 * 16 * 3);
            let n = b.size;
            for i in 0..n {
                let view = |bytes: &[u8], k: usize, len: usize| {
                    let crop = &bytes[k * len..(k + 1) * len];
                    assert!(crop.iter().all(|&x| x == crop[0]), "a solid frame's crop");
                    frame_of(&values, crop[0]).expect("a crop names one frame")
                };
                let g0 = view(&b.global, i, gb);
                let g1 = view(&b.global, n + i, gb);
                let locals: Vec<usize> = (0..b.local_crops)
                    .map(|l| view(&b.local, l * n + i, lb))
                    .collect();
                out.push((g0, g1, locals));
            }
        }
        out
    };
    for sampling in ["random", "sequential"] {
        let one = common::pipeline_batches(&config(sampling, true, 1), start, 12);
        let three = common::pipeline_batches(&config(sampling, true, 3), start, 12);
        assert_eq!(one.len(), 12);
        assert!(
            one.iter()
                .zip(&three)
                .all(|(a, b)| a.global == b.global && a.local == b.local),
            "{sampling}: 1 and 3 decoders give the same batches"
        );
        let pairs = frames(&one);
        let (mut later, mut earlier) = (0, 0);
        for (g0, g1, locals) in &pairs {
            let d = g0.abs_diff(*g1);
            assert!(
                (8..=22).contains(&d),
                "{sampling}: frames {g0} and {g1} are {d} frames apart"
            );
            assert!(locals.iter().all(|l| l == g0 || l == g1), "{locals:?}");
            if g1 > g0 {
                later += 1;
            } else {
                earlier += 1;
            }
        }
        assert!(
            later > 10 && earlier > 10,
            "later {later}, earlier {earlier}"
        );
        let drawn: std::collections::HashSet<usize> = pairs.iter().map(|p| p.0).collect();
        assert_eq!(drawn.len(), 96, "{sampling}: every drawn frame once");
        // Without pairs: the same drawn frames in the same order, both globals from it.
        let off = frames(&common::pipeline_batches(
            &config(sampling, false, 3),
            start,
            12,
        ));
        assert_eq!(
            off.iter().map(|p| p.0).collect::<Vec<_>>(),
            pairs.iter().map(|p| p.0).collect::<Vec<_>>()
        );
        assert!(off
            .iter()
            .all(|(g0, g1, l)| g0 == g1 && l.iter().all(|x| x == g0)));
    }

    // What the partners cost in decoded pictures: the same pass with and without pairs.
    let decoded = |sampling: VideoSampling, pairs: bool| {
        let mut o = options(sampling, &dir.path().join("idx"));
        o.temporal_pairs = pairs;
        o.pair_seconds = [0.3, 0.9];
        o.shuffle_buffer = 16;
        let mut src = open_at(&file, o).unwrap();
        let (frames, _) = collect(&mut src, &pass(0, 0));
        assert_eq!(frames.len(), 100);
        src.stats().decoded.load(Ordering::Relaxed)
    };
    for sampling in [VideoSampling::Random, VideoSampling::Sequential] {
        eprintln!(
            "{sampling:?}, stride 1, 100 frames: {} pictures decoded without pairs, {} with",
            decoded(sampling, false),
            decoded(sampling, true)
        );
    }
}

/// `source.temporal_pairs` needs seekable files: a live stream is refused up front with the
/// key, as is a reversed `pair_seconds`; other source kinds have no such key at all.
#[test]
fn temporal_pairs_are_refused_for_live_streams_and_other_sources() {
    let dir = tempfile::tempdir().unwrap();
    for (source, key) in [
        (
            "type = \"video\"\npath = \"rtsp://127.0.0.1:1/x\"\nsampling = \"sequential\"\ntemporal_pairs = true",
            "source.temporal_pairs",
        ),
        (
            "type = \"video\"\npath = \"v.mp4\"\ntemporal_pairs = true\npair_seconds = [2.0, 1.0]",
            "source.pair_seconds",
        ),
        (
            "type = \"image_folder\"\npath = \"x\"\ntemporal_pairs = true",
            "temporal_pairs",
        ),
    ] {
        let path = common::tiny_pipeline(dir.path(), source, "");
        let e = dino_stream::config::load(&path, &Default::default()).expect_err("refused");
        assert!(e.to_string().contains(key), "{e}");
    }
}
