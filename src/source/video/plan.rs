//! The order of an epoch over video files, a pure function of (seed, epoch) and the keyframe
//! indexes, computed on frame references before anything is decoded:
//!
//! 1. each file's frames inside the time window, thinned to every `stride`-th one from an
//!    offset drawn per (seed, epoch, file), so successive epochs see different frames
//!    (`Order::Sequential`: from the window's first frame, every epoch);
//! 2. with `limit`, that many of them drawn uniformly without replacement over the corpus
//!    (`Order::Sequential`: the first `limit`);
//! 3. the drawn frames grouped into *units*, one per keyframe (GOP): one seek and one decode
//!    run serve every drawn frame of the unit;
//! 4. units in a seeded random order (`Order::Sequential`: file order), their frames fed in
//!    that order through a shuffle buffer of `shuffle_buffer` frames, whose output is the
//!    epoch order.
//!
//! With temporal pairs (`pair_seconds`), each drawn frame also gets a *partner*: a frame of the
//! same file between `min` and `max` seconds later or earlier (the direction and the frame
//! drawn per feed index, so per (seed, epoch, position)), decoded by the same unit.
//!
//! Random and sequential sampling of files differ only in these three choices; decoding,
//! emitting and resuming are the same code (`planned`).
//!
//! Because the order is known up front, decoders can work on units in parallel and the source
//! still emits the same frames in the same order; a resumed pass (position p) decodes only the
//! units holding frames at positions ≥ p, and only those frames within each unit.

use crate::rng::Rng;

use super::index::FileIndex;

const SALT_STRIDE: u64 = 0x5717_DE00;
const SALT_LIMIT: u64 = 0x11A1_7000;
const SALT_UNITS: u64 = 0x0417_5000;
const SALT_BUFFER: u64 = 0xB0FF_E700;
const SALT_PAIR: u64 = 0x9A12_0000;

/// How drawn frames are ordered before the shuffle buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// `source.sampling = "random"`: stride offset drawn per epoch, `limit` drawn uniformly
    /// over the corpus, units shuffled.
    #[default]
    Random,
    /// `source.sampling = "sequential"` over files: every `stride`-th frame from each file's
    /// first, `limit` the first frames, units in file order.
    Sequential,
}

/// How frames are drawn: everything but the seed and the epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    pub order: Order,
    pub stride: u32,
    pub limit: Option<u64>,
    /// Seconds from each file's first frame: frames in `[start, end)` are drawn.
    pub start_seconds: Option<f64>,
    pub end_seconds: Option<f64>,
    pub shuffle_buffer: usize,
    /// Temporal pairs: `[min, max]` seconds between a frame and its partner.
    pub pair_seconds: Option<[f64; 2]>,
}

impl Default for Sampling {
    /// Random order, every frame, no shuffle buffer.
    fn default() -> Self {
        Sampling {
            order: Order::Random,
            stride: 1,
            limit: None,
            start_seconds: None,
            end_seconds: None,
            shuffle_buffer: 1,
            pair_seconds: None,
        }
    }
}

/// One keyframe's worth of drawn frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub file: u32,
    pub gop: u32,
    /// Frame indices (into `FileIndex::pts`) in presentation order.
    pub frames: Vec<u32>,
    /// Feed index of `frames[0]`: units' frames are numbered in unit order.
    pub feed_start: u64,
    /// Temporal pairs: each frame's partner (frame index in the same file); else empty.
    pub partners: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochPlan {
    pub units: Vec<Unit>,
    /// Position → feed index: the emitted order.
    pub order: Vec<u64>,
}

/// Frames per epoch (the same in every epoch).
pub fn epoch_len(files: &[&FileIndex], s: &Sampling) -> u64 {
    let total: u64 = files
        .iter()
        .map(|f| (window(f, s).len() / s.stride.max(1) as usize) as u64)
        .sum();
    s.limit.map_or(total, |l| l.min(total))
}

/// Frame indices of `f` inside the time window.
fn window(f: &FileIndex, s: &Sampling) -> std::ops::Range<usize> {
    let n = f.frames();
    let lo = s.start_seconds.map_or(0, |t| {
        (0..n).find(|&i| f.seconds(i as u32) >= t).unwrap_or(n)
    });
    let hi = s.end_seconds.map_or(n, |t| {
        (lo..n).find(|&i| f.seconds(i as u32) >= t).unwrap_or(n)
    });
    lo..hi
}

pub fn plan(files: &[&FileIndex], s: &Sampling, seed: u64, epoch: u64) -> EpochPlan {
    let stride = s.stride.max(1) as usize;
    // 1. (file, frame) candidates in corpus order.
    let mut drawn: Vec<(u32, u32)> = Vec::new();
    for (fi, f) in files.iter().enumerate() {
        let w = window(f, s);
        let count = w.len() / stride;
        if count == 0 {
            continue;
        }
        let offset = match s.order {
            Order::Random => {
                Rng::keyed(&[seed, epoch, fi as u64, SALT_STRIDE]).below(stride as u64)
            }
            Order::Sequential => 0,
        };
        drawn.extend(
            (0..count).map(|k| (fi as u32, (w.start + offset as usize + k * stride) as u32)),
        );
    }
    // 2. A uniform subset without replacement (Floyd's algorithm), kept in corpus order;
    //    sequential: the first frames.
    let limit = s.limit.filter(|&l| (l as usize) < drawn.len());
    if let (Some(limit), Order::Sequential) = (limit, s.order) {
        drawn.truncate(limit as usize);
    } else if let Some(limit) = limit {
        let n = drawn.len() as u64;
        let mut rng = Rng::keyed(&[seed, epoch, SALT_LIMIT]);
        let mut chosen = std::collections::HashSet::with_capacity(limit as usize);
        for j in (n - limit)..n {
            let t = rng.below(j + 1);
            if !chosen.insert(t) {
                chosen.insert(j);
            }
        }
        let mut keep: Vec<u64> = chosen.into_iter().collect();
        keep.sort_unstable();
        drawn = keep.into_iter().map(|i| drawn[i as usize]).collect();
    }
    // 3. Units: consecutive drawn frames of one file and one GOP.
    let mut units: Vec<Unit> = Vec::new();
    for (file, frame) in drawn {
        let gop = files[file as usize].gop_of(frame);
        match units.last_mut() {
            Some(u) if u.file == file && u.gop == gop => u.frames.push(frame),
            _ => units.push(Unit {
                file,
                gop,
                frames: vec![frame],
                feed_start: 0,
                partners: Vec::new(),
            }),
        }
    }
    // 4. Units shuffled (sequential: in file order), then their frames through the shuffle
    //    buffer.
    if s.order == Order::Random {
        Rng::keyed(&[seed, epoch, SALT_UNITS]).shuffle(&mut units);
    }
    let mut feed = 0u64;
    for u in &mut units {
        u.feed_start = feed;
        feed += u.frames.len() as u64;
        if let Some(range) = s.pair_seconds {
            let f = files[u.file as usize];
            u.partners = (u.feed_start..feed)
                .zip(&u.frames)
                .map(|(k, &i)| partner(f, i, range, &mut Rng::keyed(&[seed, epoch, k, SALT_PAIR])))
                .collect();
        }
    }
    EpochPlan {
        units,
        order: shuffle_buffer(feed, s.shuffle_buffer.max(1), seed, epoch),
    }
}

/// A frame of `f` between `min` and `max` seconds from frame `i`: later or earlier (drawn),
/// else the other way when the file ends first, the frame drawn uniformly among those in range.
/// A file too short for `min` gives its frame farthest from `i`.
pub fn partner(f: &FileIndex, i: u32, [min, max]: [f64; 2], rng: &mut Rng) -> u32 {
    let (num, den) = f.time_base;
    let at = f.pts[i as usize];
    // Seconds from frame i, monotonic in the frame index: binary searches over it.
    let first = |pred: &dyn Fn(f64) -> bool| {
        f.pts
            .partition_point(|&p| pred((p - at) as f64 * num as f64 / den.max(1) as f64))
    };
    let later = first(&|d| d < min)..first(&|d| d <= max);
    let earlier = first(&|d| d < -max)..first(&|d| d <= -min);
    let (a, b) = if rng.below(2) == 0 {
        (later, earlier)
    } else {
        (earlier, later)
    };
    let range = if a.is_empty() { b } else { a };
    if range.is_empty() {
        let last = f.frames() - 1;
        return if f.pts[last] - at >= at - f.pts[0] {
            last as u32
        } else {
            0
        };
    }
    (range.start + rng.below(range.len() as u64) as usize) as u32
}

/// Where a pass resumed at position `start` begins decoding: the first unit in plan order that
/// holds a frame emitted at a position ≥ `start`, and that frame, as (file, frame index). With
/// sequential sampling this is the resume point in (file, timestamp) terms.
pub fn resume_point(p: &EpochPlan, start: u64) -> Option<(u32, u32)> {
    let later: std::collections::HashSet<u64> =
        p.order.iter().skip(start as usize).copied().collect();
    p.units.iter().find_map(|u| {
        (0..u.frames.len())
            .find(|&j| later.contains(&(u.feed_start + j as u64)))
            .map(|j| (u.file, u.frames[j]))
    })
}

/// The output order of a shuffle buffer of `size` slots fed `0..n`: once full, each incoming
/// item replaces a uniformly drawn slot, whose item is emitted; the rest drains in random
/// order. At any point at most `size` fed items wait unemitted, which bounds the decoded
/// frames the source holds.
pub fn shuffle_buffer(n: u64, size: usize, seed: u64, epoch: u64) -> Vec<u64> {
    let mut rng = Rng::keyed(&[seed, epoch, SALT_BUFFER]);
    let mut buf: Vec<u64> = Vec::with_capacity(size.min(n as usize));
    let mut order = Vec::with_capacity(n as usize);
    for i in 0..n {
        if buf.len() < size {
            buf.push(i);
        } else {
            let j = rng.below(size as u64) as usize;
            order.push(std::mem::replace(&mut buf[j], i));
        }
    }
    rng.shuffle(&mut buf);
    order.extend(buf);
    order
}

#[cfg(test)]
mod tests {
    use super::super::index::{from_packets, FileKey};
    use super::*;

    fn file(frames: i64, gop: i64) -> FileIndex {
        let key = FileKey {
            path: "x".into(),
            size: 0,
            mtime_ns: 0,
        };
        let keys = (0..frames).step_by(gop as usize).map(|k| (k, k)).collect();
        from_packets(key, (1, 10), 8, 8, (0..frames).collect(), keys).unwrap()
    }

    fn sampling() -> Sampling {
        Sampling {
            shuffle_buffer: 16,
            ..Sampling::default()
        }
    }

    /// Every frame reference an epoch emits, as (file, frame).
    fn emitted(files: &[&FileIndex], s: &Sampling, seed: u64, epoch: u64) -> Vec<(u32, u32)> {
        let p = plan(files, s, seed, epoch);
        let mut by_feed = Vec::new();
        for u in &p.units {
            by_feed.extend(u.frames.iter().map(|&f| (u.file, f)));
        }
        p.order.iter().map(|&i| by_feed[i as usize]).collect()
    }

    #[test]
    fn an_epoch_is_every_frame_once_in_a_seeded_order() {
        let (a, b) = (file(100, 10), file(37, 8));
        let files = [&a, &b];
        let s = sampling();
        let e0 = emitted(&files, &s, 7, 0);
        assert_eq!(
            e0,
            emitted(&files, &s, 7, 0),
            "a pure function of (seed, epoch)"
        );
        assert_ne!(e0, emitted(&files, &s, 7, 1));
        assert_ne!(e0, emitted(&files, &s, 8, 0));
        let mut sorted = e0.clone();
        sorted.sort();
        let all: Vec<(u32, u32)> = (0..100)
            .map(|i| (0, i))
            .chain((0..37).map(|i| (1, i)))
            .collect();
        assert_eq!(sorted, all);
        assert_eq!(epoch_len(&files, &s), 137);
        // Mixed: the first 32 emitted frames come from several files and GOPs.
        let places: std::collections::HashSet<(u32, u32)> = e0[..32]
            .iter()
            .map(|&(f, i)| (f, files[f as usize].gop_of(i)))
            .collect();
        assert!(places.len() >= 4, "{places:?}");
    }

    #[test]
    fn stride_window_and_limit() {
        let a = file(100, 10); // 10 frames per second
        let files = [&a];
        let s = Sampling {
            stride: 3,
            start_seconds: Some(2.0),
            end_seconds: Some(8.0),
            ..sampling()
        };
        for epoch in 0..4 {
            let e = emitted(&files, &s, 1, epoch);
            assert_eq!(e.len(), 20);
            let mut f: Vec<u32> = e.iter().map(|x| x.1).collect();
            f.sort();
            assert!(f.iter().all(|&i| (20..80).contains(&i)), "{f:?}");
            assert!(f.windows(2).all(|w| w[1] - w[0] == 3), "{f:?}");
        }
        let offsets: std::collections::HashSet<u32> = (0..8)
            .map(|e| emitted(&files, &s, 1, e).iter().map(|x| x.1).min().unwrap())
            .collect();
        assert!(offsets.len() > 1, "the stride offset moves between epochs");
        let limited = Sampling {
            limit: Some(25),
            ..sampling()
        };
        let e = emitted(&files, &limited, 3, 0);
        assert_eq!(e.len(), 25);
        let distinct: std::collections::HashSet<_> = e.iter().collect();
        assert_eq!(distinct.len(), 25);
        assert_eq!(epoch_len(&files, &limited), 25);
    }

    #[test]
    fn the_shuffle_buffer_holds_at_most_its_size() {
        let order = shuffle_buffer(1000, 50, 1, 0);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        // Position p is emitted once 50 + p + 1 items were fed (while filling: never earlier).
        for (p, &i) in order.iter().enumerate() {
            assert!((i as usize) < 50 + p + 1, "position {p} emits feed {i}");
        }
    }

    #[test]
    fn sequential_order_is_file_order_from_frame_zero_through_the_buffer() {
        let (a, b) = (file(30, 10), file(20, 8));
        let files = [&a, &b];
        let s = Sampling {
            order: Order::Sequential,
            stride: 3,
            limit: Some(14),
            ..sampling()
        };
        let in_file_order: Vec<(u32, u32)> = (0..10)
            .map(|k| (0, 3 * k))
            .chain((0..4).map(|k| (1, 3 * k)))
            .collect();
        for epoch in 0..3 {
            let p = plan(&files, &s, 9, epoch);
            // Units in file order, fed in file order, every 3rd frame from frame 0, the first 14.
            let fed: Vec<(u32, u32)> = p
                .units
                .iter()
                .flat_map(|u| u.frames.iter().map(move |&f| (u.file, f)))
                .collect();
            assert_eq!(fed, in_file_order);
            let mut e = emitted(&files, &s, 9, epoch);
            assert_ne!(e, in_file_order, "the shuffle buffer mixes");
            e.sort();
            assert_eq!(e, in_file_order);
        }
        let one = Sampling {
            shuffle_buffer: 1,
            ..s.clone()
        };
        assert_eq!(emitted(&files, &one, 9, 0), in_file_order);
        assert_eq!(epoch_len(&files, &s), 14);
    }

    #[test]
    fn partners_lie_in_the_range_in_the_same_file_and_are_seeded() {
        let (a, b) = (file(100, 10), file(37, 8)); // 10 frames per second
        let files = [&a, &b];
        let s = Sampling {
            pair_seconds: Some([0.5, 1.2]),
            ..sampling()
        };
        let p = plan(&files, &s, 4, 1);
        assert_eq!(p, plan(&files, &s, 4, 1));
        let (mut later, mut earlier) = (0, 0);
        for u in &p.units {
            assert_eq!(u.partners.len(), u.frames.len());
            for (&i, &j) in u.frames.iter().zip(&u.partners) {
                let d = (j as i64 - i as i64).abs();
                assert!(
                    (5..=12).contains(&d),
                    "frames {i} and {j} of file {}",
                    u.file
                );
                if j > i {
                    later += 1;
                } else {
                    earlier += 1;
                }
            }
        }
        assert!(
            later > 30 && earlier > 30,
            "later {later}, earlier {earlier}"
        );
        // Without pairs, no partners and the same frames in the same order.
        let plain = plan(&files, &sampling(), 4, 1);
        assert!(plain.units.iter().all(|u| u.partners.is_empty()));
        assert_eq!(plain.order, p.order);
        // A file shorter than the range: the farthest frame.
        let short = file(4, 2);
        let mut rng = Rng::keyed(&[1]);
        assert_eq!(partner(&short, 0, [0.5, 1.0], &mut rng), 3);
        assert_eq!(partner(&short, 3, [0.5, 1.0], &mut rng), 0);
    }
}
