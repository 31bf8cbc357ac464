//! A random-sampling pass: the epoch plan (`plan`), its units decoded by the decoder actors
//! (`decoders`), and the frames emitted in plan order from a map holding at most the shuffle
//! buffer's worth of decoded frames.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::decoders::{run_units, DecodeContext, UnitJob};
use super::index::FileIndex;
use super::plan::{self, Sampling};
use crate::frame::Frame;
use crate::source::{Pass, PassEnd};

pub struct RandomPass<'a> {
    pub indexes: &'a [Arc<FileIndex>],
    pub files: &'a [std::path::PathBuf],
    pub sampling: &'a Sampling,
    pub decoders: usize,
    pub threads: u32,
    pub max_side: u32,
    pub decoded: Arc<AtomicU64>,
    pub corrupt_packets: &'a AtomicU64,
}

impl RandomPass<'_> {
    pub fn run(
        &self,
        pass: &Pass,
        emit: &mut dyn FnMut(u64, Frame) -> bool,
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
        let jobs: Vec<UnitJob> = plan
            .units
            .iter()
            .filter_map(|u| {
                let index = &self.indexes[u.file as usize];
                let wanted: Vec<(u64, i64)> = u
                    .frames
                    .iter()
                    .enumerate()
                    .map(|(j, &fr)| (u.feed_start + j as u64, index.pts[fr as usize]))
                    .filter(|(feed, _)| needed[*feed as usize])
                    .collect();
                for (feed, _) in &wanted {
                    owner[*feed as usize] = u.file;
                }
                (!wanted.is_empty()).then_some(UnitJob {
                    file: u.file,
                    gop: u.gop,
                    wanted,
                })
            })
            .collect();
        let ctx = DecodeContext {
            files: self.files.to_vec(),
            indexes: self.indexes.to_vec(),
            max_side: self.max_side,
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
                let Some(frame) = held.remove(&feed) else {
                    break; // its unit has not come yet
                };
                match frame {
                    Ok(frame) => {
                        if !emit(position, frame) {
                            stopped = true;
                            return false;
                        }
                    }
                    Err(why) => {
                        let file = &self.files[owner[feed as usize] as usize];
                        skip(&file.display().to_string(), &why);
                    }
                }
                position += 1;
            }
            true
        };
        run_units(&jobs, self.decoders, &ctx, &mut consume);
        if stopped {
            PassEnd::Stopped
        } else {
            PassEnd::Finished
        }
    }
}
