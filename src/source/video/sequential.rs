//! A sequential pass over inputs that include live streams (files alone go by plan, `planned`,
//! and resume by seeking): inputs in order, each decoded front to back on the source thread,
//! every `stride`-th frame emitted. A packet the decoder refuses is skipped (counted) and
//! decoding goes on; a resolution change rebuilds the scaler (`FrameScaler`). Resuming decodes
//! the files before the cursor again. A URL is a live stream (`live`): read by its own
//! thread, reconnected when it drops, resumed "from now". Frames then go through a shuffle
//! buffer (`shuffle_buffer` frames, `shuffle_bytes` bytes; `shuffle`): with more than one frame
//! a position is the index of the emission, and a resumed pass reads and shuffles again, emitting
//! from the cursor on.

use std::sync::atomic::Ordering;

use ffmpeg::util::frame::video::Video;
use ffmpeg_next as ffmpeg;

use super::frames::{open_decoder, FrameScaler};
use super::inputs::{open_input, Input};
use super::live::LivePass;
use super::shuffle::ShuffleBuffer;
use crate::frame::Frame;
use crate::source::video_stats::{InputStats, VideoStats};
use crate::source::{Pass, PassEnd, VideoConfig};

pub struct SequentialPass<'a> {
    pub inputs: &'a [Input],
    pub cfg: &'a VideoConfig,
    pub stats: &'a VideoStats,
}

/// Where the pass's frames go: straight to `emit` with their frame positions (a buffer of one
/// frame) or through the shuffle buffer, numbered by emission.
struct Out<'e> {
    emit: &'e mut dyn FnMut(u64, Frame) -> bool,
    shuffle: ShuffleBuffer,
    /// The next emission's position (shuffled).
    next: u64,
    /// Positions below this were emitted before the resume: computed again, not emitted.
    start: u64,
}

impl Out<'_> {
    /// Takes the frame at `position` (its place in stream order); false: the consumer stopped.
    fn put(&mut self, position: u64, frame: Frame) -> bool {
        if self.shuffle.is_passthrough() {
            return position < self.start || (self.emit)(position, frame);
        }
        for f in self.shuffle.push(frame) {
            if !self.send(f) {
                return false;
            }
        }
        true
    }

    fn send(&mut self, frame: Frame) -> bool {
        let p = self.next;
        self.next += 1;
        p < self.start || (self.emit)(p, frame)
    }

    fn finish(&mut self) -> bool {
        for f in self.shuffle.drain() {
            if !self.send(f) {
                return false;
            }
        }
        true
    }
}

struct State {
    position: u64,
    /// Decoded frames so far in this file (for the stride).
    seen: u64,
}

impl SequentialPass<'_> {
    pub fn run(
        &self,
        pass: &Pass,
        emit: &mut dyn FnMut(u64, Frame) -> bool,
        skip: &mut dyn FnMut(&str, &str),
    ) -> PassEnd {
        let mut state = State {
            position: 0,
            seen: 0,
        };
        let mut scaler = FrameScaler::new(self.cfg.max_side, pass.max_pixels);
        let mut out = Out {
            emit,
            shuffle: ShuffleBuffer::new(
                self.cfg.shuffle_buffer,
                self.cfg.shuffle_bytes as usize,
                pass.seed,
                pass.epoch,
            ),
            next: 0,
            start: pass.start,
        };
        for input in self.inputs {
            if let Input::Url(url) = input {
                let live = LivePass {
                    url,
                    cfg: self.cfg,
                    counters: self.stats.input(url, true),
                    decoded: &self.stats.decoded,
                    corrupt_packets: &self.stats.corrupt_packets,
                };
                // A live stream has no position of its own to resume from: it starts "now",
                // at the pass's cursor.
                let from = Pass {
                    start: pass.start.max(state.position),
                    ..*pass
                };
                out.next = out.next.max(pass.start);
                let mut emit = |pos: u64, frame: Frame| out.put(pos, frame);
                if live.run(&from, &mut emit, skip) == PassEnd::Stopped {
                    return PassEnd::Stopped;
                }
                continue;
            }
            match self.decode_input(input, pass, &mut state, &mut scaler, &mut out, skip) {
                Ok(PassEnd::Stopped) => return PassEnd::Stopped,
                Ok(PassEnd::Finished) => {}
                Err(e) => skip(&input.describe(), &e),
            }
            if self.cfg.limit.is_some_and(|l| state.position >= l) {
                break;
            }
        }
        if !out.finish() {
            return PassEnd::Stopped;
        }
        PassEnd::Finished
    }

    fn decode_input(
        &self,
        input: &Input,
        pass: &Pass,
        state: &mut State,
        scaler: &mut FrameScaler,
        out: &mut Out,
        skip: &mut dyn FnMut(&str, &str),
    ) -> Result<PassEnd, String> {
        let mut ictx = open_input(input, &self.cfg.url_protocols).map_err(|e| e.to_string())?;
        let (index, mut decoder) =
            open_decoder(&ictx, self.cfg.threads).map_err(|e| e.to_string())?;
        let counters = self.stats.input(&input.describe(), false);
        state.seen = 0;
        let mut decoded = Video::empty();
        let what = input.describe();
        let mut drain = |decoder: &mut ffmpeg::decoder::Video, state: &mut State| -> PassEnd {
            while decoder.receive_frame(&mut decoded).is_ok() {
                self.stats.decoded.fetch_add(1, Ordering::Relaxed);
                InputStats::add(&counters.decoded);
                let take = state.seen.is_multiple_of(self.cfg.stride.max(1) as u64);
                state.seen += 1;
                if !take {
                    continue;
                }
                if self.cfg.limit.is_some_and(|l| state.position >= l) {
                    return PassEnd::Finished;
                }
                let pos = state.position;
                state.position += 1;
                if pos < pass.start && out.shuffle.is_passthrough() {
                    continue; // resuming: frames before the cursor were already trained on
                }
                match scaler.convert(&decoded) {
                    Ok(frame) => {
                        if !out.put(pos, frame) {
                            return PassEnd::Stopped;
                        }
                    }
                    Err(why) => skip(&what, &why),
                }
            }
            PassEnd::Finished
        };
        for (s, packet) in ictx.packets() {
            if s.index() != index {
                continue;
            }
            if decoder.send_packet(&packet).is_err() {
                self.stats.corrupt_packets.fetch_add(1, Ordering::Relaxed);
                InputStats::add(&counters.corrupt);
                continue;
            }
            if drain(&mut decoder, state) == PassEnd::Stopped {
                return Ok(PassEnd::Stopped);
            }
            if self.cfg.limit.is_some_and(|l| state.position >= l) {
                return Ok(PassEnd::Finished);
            }
        }
        let _ = decoder.send_eof();
        Ok(drain(&mut decoder, state))
    }
}
