//! The shuffle buffer after sequential reading: frames go in in stream order, and once the
//! buffer holds `frames` frames or `bytes` bytes, each new frame pushes out one drawn uniformly
//! from the buffer (seeded by seed and epoch, so a pass is repeatable and a resume that reads
//! the pass again skips exactly the frames already emitted). Consecutive frames of a shot are
//! near-duplicates; the buffer spreads them over `frames` emissions.

use crate::frame::Frame;
use crate::rng::Rng;

pub struct ShuffleBuffer {
    held: Vec<Frame>,
    bytes: usize,
    max_frames: usize,
    max_bytes: usize,
    rng: Rng,
}

impl ShuffleBuffer {
    /// `max_bytes` 0: bounded in frames only.
    pub fn new(max_frames: usize, max_bytes: usize, seed: u64, epoch: u64) -> Self {
        ShuffleBuffer {
            held: Vec::new(),
            bytes: 0,
            max_frames: max_frames.max(1),
            max_bytes,
            rng: Rng::keyed(&[seed, epoch, 0x5E0_5B0F]),
        }
    }

    /// Whether frames pass straight through (a buffer of one frame).
    pub fn is_passthrough(&self) -> bool {
        self.max_frames == 1
    }

    fn full(&self) -> bool {
        self.held.len() >= self.max_frames || (self.max_bytes > 0 && self.bytes >= self.max_bytes)
    }

    /// Takes `frame`; returns the frames to emit now (none while the buffer fills).
    pub fn push(&mut self, frame: Frame) -> Vec<Frame> {
        self.bytes += frame.data().len();
        self.held.push(frame);
        let mut out = Vec::new();
        while self.full() {
            out.push(self.take());
        }
        out
    }

    fn take(&mut self) -> Frame {
        let i = self.rng.below(self.held.len() as u64) as usize;
        let f = self.held.swap_remove(i);
        self.bytes -= f.data().len();
        f
    }

    /// The frames left, in a drawn order (at the end of the pass).
    pub fn drain(&mut self) -> Vec<Frame> {
        let mut out = Vec::with_capacity(self.held.len());
        while !self.held.is_empty() {
            out.push(self.take());
        }
        out
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: u8) -> Frame {
        Frame::from_rgb(2, 2, vec![i; 12])
    }

    fn order(max_frames: usize, max_bytes: usize, seed: u64) -> Vec<u8> {
        let mut b = ShuffleBuffer::new(max_frames, max_bytes, seed, 0);
        let mut out = Vec::new();
        for i in 0..100u8 {
            for f in b.push(frame(i)) {
                out.push(f.data()[0]);
            }
            assert!(b.len() < max_frames);
            assert!(max_bytes == 0 || b.bytes() < max_bytes);
        }
        out.extend(b.drain().iter().map(|f| f.data()[0]));
        out
    }

    #[test]
    fn every_frame_comes_out_once_in_a_seeded_order_within_both_bounds() {
        let a = order(16, 0, 1);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<u8>>());
        assert_ne!(a, (0..100).collect::<Vec<u8>>());
        assert_eq!(a, order(16, 0, 1));
        assert_ne!(a, order(16, 0, 2));
        // 5 frames of 12 bytes reach 60 bytes: at most 4 held, whatever `max_frames` says.
        let b = order(1000, 60, 1);
        let mut sorted = b.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<u8>>());
        // A frame leaves at most 4 emissions after it entered.
        for (pos, &v) in b.iter().enumerate() {
            assert!(pos + 4 >= v as usize, "frame {v} out at {pos}");
        }
        // One frame: stream order.
        assert_eq!(order(1, 0, 1), (0..100).collect::<Vec<u8>>());
    }
}
