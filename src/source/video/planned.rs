//! A pass over video files by plan (random sampling, and sequential sampling of files): the
//! epoch plan (`plan`), its units decoded by the decoder actors (`decoders`), and the frames
//! emitted in plan order from a map holding at most the shuffle buffer's worth of decoded
//! frames (plus one unit). A resumed pass decodes only what is still to come, by seeking.
//!
//! The decoders' keys are `2 x feed` for a drawn frame and `2 x feed + 1` for its temporal
//! pair's partner, which the same unit decodes (its run then starts at the earliest and ends at
//! the latest of the frames and partners it still needs).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::decoders::{run_units, DecodeContext, UnitJob};
use super::index::FileIndex;
use super::plan::{self, Order, Sampling};
use crate::frame::Frame;
use crate::source::{Pass, PassEnd};

pub struct PlannedPass<'a> {
    pub indexes: &'a [Arc<FileIndex>],
    pub files: &'a [std::path::PathBuf],
    pub sampling: &'a Sampling,
    pub decoders: usize,
    pub threads: u32,
    pub max_side: u32,
    /// The largest frame, in bytes, and the bytes of frames the decoders may hold ahead of the
    /// one being emitted (`source.shuffle_bytes`).
    pub frame_bytes: u64,
    pub ahead_bytes: u64,
    pub decoded: Arc<AtomicU64>,
    pub corrupt_packets: &'a AtomicU64,
}

impl PlannedPass<'_> {
    pub fn run(
        &self,
        pass: &Pass,
        emit: &mut dyn FnMut(u64, Frame, Option<Frame>) -> bool,
        skip: &mut dyn FnMut(&str, &str),
    ) -> PassEnd {
        let refs: Vec<&FileIndex> = self.indexes.iter().map(|i| i.as_ref()).collect();
        let plan = plan::plan(&refs, self.sampling, pass.seed, pass.epoch);
        let n = plan.order.len() as u64;
        if pass.start >= n {
            return PassEnd::Finished;
        }
        // Only frames at positions ≥ start are decoded: a resumed pass skips whole units
        // and, within a unit, stops after its last frame still to come.
        let feeds = plan
            .units
            .last()
            .map_or(0, |u| u.feed_start + u.frames.len() as u64);
        let mut needed = vec![false; feeds as usize];
        for &f in &plan.order[pass.start as usize..] {
            needed[f as usize] = true;
        }
        let mut owner = vec![0u32; feeds as usize];
        let pairs = self.sampling.pair_seconds.is_some();
        let jobs: Vec<UnitJob> = plan
            .units
            .iter()
            .filter_map(|u| {
                let index = &self.indexes[u.file as usize];
                // (key, frame index) of every picture still needed.
                let mut frames: Vec<(u64, u32)> = Vec::new();
                for (j, &fr) in u.frames.iter().enumerate() {
                    let feed = u.feed_start + j as u64;
                    if !needed[feed as usize] {
                        continue;
                    }
                    owner[feed as usize] = u.file;
                    frames.push((2 * feed, fr));
                    if pairs {
                        frames.push((2 * feed + 1, u.partners[j]));
                    }
                }
                frames.sort_by_key(|&(key, fr)| (fr, key));
                let &(_, earliest) = frames.first()?;
                Some(UnitJob {
                    file: u.file,
                    gop: index.gop_of(earliest),
                    wanted: frames
                        .iter()
                        .map(|&(key, fr)| (key, index.pts[fr as usize]))
                        .collect(),
                })
            })
            .collect();
        if pass.start > 0 && self.sampling.order == Order::Sequential {
            match plan::resume_point(&plan, pass.start) {
                Some((file, frame)) => tracing::info!(
                    "resuming sequential video at position {} of {n}: {} at {:.3}s (seeking there; nothing before it is decoded)",
                    pass.start,
                    self.files[file as usize].display(),
                    self.indexes[file as usize].seconds(frame)
                ),
                None => tracing::info!(
                    "resuming sequential video at position {}: nothing left of this pass",
                    pass.start
                ),
            }
        }
        let ctx = DecodeContext {
            files: self.files.to_vec(),
            indexes: self.indexes.to_vec(),
            max_side: self.max_side,
            frame_bytes: self.frame_bytes,
            max_pixels: pass.max_pixels,
            threads: self.threads,
            decoded: self.decoded.clone(),
        };
        let mut held: HashMap<u64, Result<Frame, String>> = HashMap::new();
        let mut position = pass.start;
        let mut stopped = false;
        let mut consume = |result: super::decoders::UnitResult| -> bool {
            if result.corrupt_packets > 0 {
                self.corrupt_packets
                    .fetch_add(result.corrupt_packets, Ordering::Relaxed);
            }
            held.extend(result.frames);
            while position < n {
                let feed = plan.order[position as usize];
                let Some(frame) = held.remove(&(2 * feed)) else {
                    break; // its unit has not come yet
                };
                let partner = if pairs {
                    held.remove(&(2 * feed + 1))
                        .map(|r| r.map_err(|why| format!("temporal pair: {why}")))
                } else {
                    None
                };
                match (frame, partner.transpose()) {
                    (Ok(frame), Ok(partner)) => {
                        if !emit(position, frame, partner) {
                            stopped = true;
                            return false;
                        }
                    }
                    (Err(why), _) | (_, Err(why)) => {
                        let file = &self.files[owner[feed as usize] as usize];
                        skip(&file.display().to_string(), &why);
                    }
                }
                position += 1;
            }
            true
        };
        run_units(&jobs, self.decoders, self.ahead_bytes, &ctx, &mut consume);
        if stopped {
            PassEnd::Stopped
        } else {
            PassEnd::Finished
        }
    }
}
