//! A sequential pass: inputs in order, each decoded front to back on the source thread, every
//! `stride`-th frame emitted. A packet the decoder refuses is skipped (counted) and decoding
//! goes on; a resolution change rebuilds the scaler (`FrameScaler`). Resuming decodes up to the
//! cursor again (only random sampling seeks).

use std::sync::atomic::{AtomicU64, Ordering};

use ffmpeg::util::frame::video::Video;
use ffmpeg_next as ffmpeg;

use super::frames::{open_decoder, FrameScaler};
use super::inputs::{open_input, Input};
use crate::frame::Frame;
use crate::source::{Pass, PassEnd};

pub struct SequentialPass<'a> {
    pub inputs: &'a [Input],
    pub stride: u32,
    pub limit: Option<u64>,
    pub threads: u32,
    pub max_side: u32,
    pub decoded: &'a AtomicU64,
    pub corrupt_packets: &'a AtomicU64,
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
        let mut scaler = FrameScaler::new(self.max_side, pass.max_pixels);
        for input in self.inputs {
            match self.decode_input(input, pass, &mut state, &mut scaler, emit, skip) {
                Ok(PassEnd::Stopped) => return PassEnd::Stopped,
                Ok(PassEnd::Finished) => {}
                Err(e) => skip(&input.describe(), &e),
            }
            if self.limit.is_some_and(|l| state.position >= l) {
                break;
            }
        }
        PassEnd::Finished
    }

    fn decode_input(
        &self,
        input: &Input,
        pass: &Pass,
        state: &mut State,
        scaler: &mut FrameScaler,
        emit: &mut dyn FnMut(u64, Frame) -> bool,
        skip: &mut dyn FnMut(&str, &str),
    ) -> Result<PassEnd, String> {
        let mut ictx = open_input(input).map_err(|e| e.to_string())?;
        let (index, mut decoder) = open_decoder(&ictx, self.threads).map_err(|e| e.to_string())?;
        state.seen = 0;
        let mut decoded = Video::empty();
        let what = input.describe();
        let mut drain = |decoder: &mut ffmpeg::decoder::Video, state: &mut State| -> PassEnd {
            while decoder.receive_frame(&mut decoded).is_ok() {
                self.decoded.fetch_add(1, Ordering::Relaxed);
                let take = state.seen.is_multiple_of(self.stride.max(1) as u64);
                state.seen += 1;
                if !take {
                    continue;
                }
                if self.limit.is_some_and(|l| state.position >= l) {
                    return PassEnd::Finished;
                }
                let pos = state.position;
                state.position += 1;
                if pos < pass.start {
                    continue; // resuming: frames before the cursor were already trained on
                }
                match scaler.convert(&decoded) {
                    Ok(frame) => {
                        if !emit(pos, frame) {
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
                self.corrupt_packets.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if drain(&mut decoder, state) == PassEnd::Stopped {
                return Ok(PassEnd::Stopped);
            }
            if self.limit.is_some_and(|l| state.position >= l) {
                return Ok(PassEnd::Finished);
            }
        }
        let _ = decoder.send_eof();
        Ok(drain(&mut decoder, state))
    }
}
