//! Decoder actors for random sampling: N threads take keyframe-aligned units in plan order,
//! seek, decode the unit's drawn frames, and hand the results back; the caller receives them in
//! unit order whatever thread finished first, so the emitted stream does not depend on the
//! decoder count. A ticket per unit in flight bounds how far the decoders run ahead.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use ffmpeg::util::frame::video::Video;
use ffmpeg_next as ffmpeg;

use super::frames::{frame_pts, open_decoder, FrameScaler};
use super::index::FileIndex;
use super::inputs::{open_input, Input};
use crate::frame::Frame;

/// One unit to decode: `wanted` (the caller's key, presentation timestamp) sorted by
/// timestamp, decoded from the keyframe of GOP `gop` (that of the earliest wanted frame).
/// Several keys may want one frame (a temporal pair's partner that is also a drawn frame).
pub struct UnitJob {
    pub file: u32,
    pub gop: u32,
    pub wanted: Vec<(u64, i64)>,
}

pub struct UnitResult {
    /// One entry per wanted frame: the frame, or why it could not be had.
    pub frames: Vec<(u64, Result<Frame, String>)>,
    /// Packets the decoder refused (skipped; decoding went on).
    pub corrupt_packets: u64,
}

/// Units in flight (being decoded, or decoded and waiting for their turn): `2 x decoders + 2`
/// keeps every decoder busy, and fewer when that many of the largest unit would hold more than
/// `ahead_bytes` (0: no byte bound) of frames of at most `frame_bytes` each. A unit is one GOP's
/// drawn frames, so on long-GOP files at stride 1 the byte bound is what keeps the decoded
/// frames waiting inside the source within budget; at least one unit is always in flight.
pub fn lookahead_units(
    decoders: usize,
    largest: usize,
    frame_bytes: u64,
    ahead_bytes: u64,
) -> usize {
    let full = 2 * decoders.max(1) + 2;
    let unit = largest.max(1) as u64 * frame_bytes;
    if ahead_bytes == 0 || unit == 0 {
        return full;
    }
    ((ahead_bytes / unit) as usize).clamp(1, full)
}

/// What every decoder shares: the files, their indexes and the frame settings.
pub struct DecodeContext {
    pub files: Vec<PathBuf>,
    pub indexes: Vec<Arc<FileIndex>>,
    pub max_side: u32,
    /// The largest frame a decoder hands back, in bytes (for the look-ahead's byte bound).
    pub frame_bytes: u64,
    pub max_pixels: u64,
    pub threads: u32,
    /// Pictures out of the decoders (drawn or not): what a resume test counts.
    pub decoded: Arc<AtomicU64>,
}

struct OpenFile {
    ictx: ffmpeg::format::context::Input,
    stream: usize,
    decoder: ffmpeg::decoder::Video,
    /// A seek to a keyframe's presentation timestamp landed late once: this demuxer searches
    /// decoding timestamps, so seek by those from now on.
    by_dts: bool,
}

/// Where to start decoding a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seek {
    /// The keyframe of GOP n, by its presentation timestamp (containers with an index).
    Pts(u32),
    /// The keyframe of GOP n, by its decoding timestamp (MPEG-TS and other index-less ones).
    Dts(u32),
    /// The file's first byte.
    Start,
}

/// One decoder thread's state: a few open files and its scaler.
struct Actor<'a> {
    ctx: &'a DecodeContext,
    open: HashMap<u32, OpenFile>,
    scaler: FrameScaler,
    picture: Video,
}

/// Open files kept per decoder (units come from all over the corpus).
const OPEN_FILES: usize = 8;

impl<'a> Actor<'a> {
    fn new(ctx: &'a DecodeContext) -> Self {
        Actor {
            ctx,
            open: HashMap::new(),
            scaler: FrameScaler::new(ctx.max_side, ctx.max_pixels),
            picture: Video::empty(),
        }
    }

    fn decode(&mut self, job: &UnitJob) -> UnitResult {
        let mut got: HashMap<u64, Result<Frame, String>> = HashMap::new();
        let mut corrupt = 0u64;
        let index = self.ctx.indexes[job.file as usize].clone();
        let mut failure = None;
        // Seek to the unit's keyframe. If the demuxer lands after a drawn frame, try its
        // decoding timestamp, then the keyframe before, then the file's start: landing early
        // costs decoding time, never other pixels.
        let by_dts = self.open.get(&job.file).is_some_and(|f| f.by_dts);
        let mut tries = vec![Seek::Pts(job.gop), Seek::Dts(job.gop)];
        if by_dts {
            tries.remove(0);
        }
        tries.push(job.gop.checked_sub(1).map_or(Seek::Start, Seek::Dts));
        tries.push(Seek::Start);
        tries.dedup();
        for seek in tries {
            match self.decode_from(job, &index, seek, &mut got, &mut corrupt) {
                Ok(Landing::Early) => break,
                Ok(Landing::Late) => {
                    if let (Seek::Pts(_), Some(f)) = (seek, self.open.get_mut(&job.file)) {
                        f.by_dts = true;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    self.open.remove(&job.file);
                    break;
                }
            }
        }
        let frames = job
            .wanted
            .iter()
            .map(|&(key, pts)| {
                let r = got.remove(&key).unwrap_or_else(|| {
                    Err(failure.clone().unwrap_or_else(|| {
                        format!(
                            "frame at {:.3}s (pts {pts}) not decoded",
                            seconds(&index, pts)
                        )
                    }))
                });
                (key, r)
            })
            .collect();
        UnitResult {
            frames,
            corrupt_packets: corrupt,
        }
    }

    /// Decodes from where `seek` lands until every wanted frame not yet in `got` went past.
    fn decode_from(
        &mut self,
        job: &UnitJob,
        index: &FileIndex,
        seek: Seek,
        got: &mut HashMap<u64, Result<Frame, String>>,
        corrupt: &mut u64,
    ) -> Result<Landing, String> {
        let mut want: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
        for &(key, pts) in job.wanted.iter().filter(|(k, _)| !got.contains_key(k)) {
            want.entry(pts).or_default().push(key);
        }
        let (Some((&min, _)), Some((&max, _))) = (want.first_key_value(), want.last_key_value())
        else {
            return Ok(Landing::Early);
        };
        let decoded = self.ctx.decoded.clone();
        let f = open_file(&mut self.open, self.ctx, job.file)?;
        let (scaler, picture) = (&mut self.scaler, &mut self.picture);
        let r = unsafe {
            let ctx = f.ictx.as_mut_ptr();
            let backward = ffmpeg::ffi::AVSEEK_FLAG_BACKWARD;
            let stream = f.stream as i32;
            match seek {
                Seek::Pts(g) => ffmpeg::ffi::av_seek_frame(
                    ctx,
                    stream,
                    index.gops[g as usize].key_pts,
                    backward,
                ),
                Seek::Dts(g) => ffmpeg::ffi::av_seek_frame(
                    ctx,
                    stream,
                    index.gops[g as usize].key_dts,
                    backward,
                ),
                Seek::Start => {
                    ffmpeg::ffi::av_seek_frame(ctx, -1, 0, ffmpeg::ffi::AVSEEK_FLAG_BYTE)
                }
            }
        };
        if r < 0 {
            return Err(format!("cannot seek: {}", ffmpeg::Error::from(r)));
        }
        f.decoder.flush();
        let mut first = true;
        let mut drain = |decoder: &mut ffmpeg::decoder::Video| -> Option<Landing> {
            while decoder.receive_frame(picture).is_ok() {
                decoded.fetch_add(1, Ordering::Relaxed);
                let Some(pts) = frame_pts(picture) else {
                    continue;
                };
                if std::mem::take(&mut first) && pts > min {
                    return Some(Landing::Late);
                }
                if let Some(keys) = want.get(&pts) {
                    if let Some((&last, rest)) = keys.split_last() {
                        let frame = scaler.convert(picture);
                        for &k in rest {
                            got.entry(k).or_insert_with(|| frame.clone());
                        }
                        got.entry(last).or_insert(frame);
                    }
                }
                if pts >= max {
                    return Some(Landing::Early);
                }
            }
            None
        };
        let stream = f.stream;
        let mut packets = f
            .ictx
            .packets()
            .filter(|(s, _)| s.index() == stream)
            .map(|(_, packet)| packet);
        let mut held = None;
        let mut sent_any = false;
        while let Some(packet) = held.take().or_else(|| packets.next()) {
            // The next GOP's keyframe, after every wanted frame: the decoder still holds the
            // last few of them (B-frame reordering), and feeding it on would decode pictures
            // of the next GOP, its keyframe first, only to push them out (~6% more pictures
            // than frames at stride 1 on x264's defaults). Draining it instead gives them at
            // once, unless leading pictures follow (an open GOP: shown before the keyframe,
            // decoded after it, and counted in this GOP), which need the keyframe decoded.
            if let Some(key_pts) = packet
                .pts()
                .filter(|&k| sent_any && packet.is_key() && k > max)
            {
                let after = packets.next();
                let leading = after
                    .as_ref()
                    .and_then(|p| p.pts())
                    .is_some_and(|t| t < key_pts);
                if !leading {
                    break;
                }
                held = after;
            }
            if f.decoder.send_packet(&packet).is_err() {
                *corrupt += 1;
                continue;
            }
            sent_any = true;
            if let Some(landing) = drain(&mut f.decoder) {
                return Ok(landing);
            }
        }
        drop(packets);
        let _ = f.decoder.send_eof();
        let landing = drain(&mut f.decoder);
        // No picture at all: the seek went past the keyframe (to the end of the file).
        Ok(landing.unwrap_or(if first { Landing::Late } else { Landing::Early }))
    }
}

/// The open input of `file`, opened on first use (a few are kept: units come from all over).
fn open_file<'m>(
    open: &'m mut HashMap<u32, OpenFile>,
    ctx: &DecodeContext,
    file: u32,
) -> Result<&'m mut OpenFile, String> {
    if !open.contains_key(&file) {
        if open.len() >= OPEN_FILES {
            open.clear();
        }
        let input = Input::File(ctx.files[file as usize].clone());
        let ictx = open_input(&input, "file").map_err(|e| format!("cannot open: {e}"))?;
        let (stream, decoder) =
            open_decoder(&ictx, ctx.threads).map_err(|e| format!("no decoder: {e}"))?;
        open.insert(
            file,
            OpenFile {
                ictx,
                stream,
                decoder,
                by_dts: false,
            },
        );
    }
    Ok(open.get_mut(&file).expect("inserted above"))
}

/// Where a seek put the decoder relative to the first wanted frame.
enum Landing {
    /// At or before it: every wanted frame that exists was decoded.
    Early,
    /// After it: frames were missed.
    Late,
}

fn seconds(index: &FileIndex, pts: i64) -> f64 {
    let (num, den) = index.time_base;
    pts as f64 * num as f64 / den.max(1) as f64
}

/// Decodes `jobs` on `decoders` threads and calls `consume` with each result in job order,
/// stopping early when it returns false.
pub fn run_units(
    jobs: &[UnitJob],
    decoders: usize,
    ahead_bytes: u64,
    ctx: &DecodeContext,
    consume: &mut dyn FnMut(UnitResult) -> bool,
) {
    if jobs.is_empty() {
        return;
    }
    let decoders = decoders.clamp(1, jobs.len());
    let largest = jobs.iter().map(|j| j.wanted.len()).max().unwrap_or(1);
    let window = lookahead_units(decoders, largest, ctx.frame_bytes, ahead_bytes);
    let (ticket_tx, ticket_rx) = kanal::bounded::<()>(window);
    for _ in 0..window {
        let _ = ticket_tx.send(());
    }
    let (result_tx, result_rx) = kanal::bounded::<(usize, UnitResult)>(window);
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for i in 0..decoders {
            let (tickets, results, next) = (ticket_rx.clone(), result_tx.clone(), &next);
            std::thread::Builder::new()
                .name(format!("video-decode-{i}"))
                .spawn_scoped(s, move || {
                    let mut actor = Actor::new(ctx);
                    while tickets.recv().is_ok() {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(k) else { break };
                        if results.send((k, actor.decode(job))).is_err() {
                            break;
                        }
                    }
                })
                .expect("spawn a video decoder thread");
        }
        drop(result_tx);
        let mut pending = BTreeMap::new();
        let mut want = 0usize;
        while want < jobs.len() {
            if let Some(r) = pending.remove(&want) {
                want += 1;
                let _ = ticket_tx.try_send(());
                if !consume(r) {
                    break;
                }
                continue;
            }
            match result_rx.recv() {
                Ok((k, r)) => {
                    pending.insert(k, r);
                }
                Err(_) => break, // every decoder ended (a panic shows when the scope joins)
            }
        }
        let _ = ticket_tx.close();
        let _ = result_rx.close();
    });
}

#[cfg(test)]
mod lookahead_tests {
    use super::lookahead_units;

    #[test]
    fn the_look_ahead_shrinks_to_fit_its_bytes_and_keeps_one_unit() {
        let frame = 512 * 288 * 3;
        // Short GOPs: every decoder busy (2 x 2 + 2 units).
        assert_eq!(lookahead_units(2, 12, frame, 256 << 20), 6);
        // 250-frame GOPs at 512x288: ~110 MB a unit, two fit in 256 MiB.
        assert_eq!(lookahead_units(2, 250, frame, 256 << 20), 2);
        // A unit larger than the budget still decodes, alone.
        assert_eq!(lookahead_units(2, 250, 3840 * 2160 * 3, 256 << 20), 1);
        // No byte bound: the unit count alone.
        assert_eq!(lookahead_units(3, 250, frame, 0), 8);
    }
}
