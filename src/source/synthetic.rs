//! Generated images for tests and benchmarks: each class is a distinct pattern (stripes at a
//! class-specific angle and colour) with per-sample jitter, so features can separate classes.

use super::{IndexedSource, Payload, SourceError};
use crate::frame::Frame;
use crate::rng::Rng;

pub struct SyntheticSource {
    count: u64,
    width: u32,
    height: u32,
    classes: u32,
}

impl SyntheticSource {
    pub fn new(count: u64, width: u32, height: u32, classes: u32) -> Self {
        SyntheticSource {
            count,
            width,
            height,
            classes,
        }
    }

    /// The image of sample `id`: a pure function of id.
    pub fn render(&self, id: u64) -> Frame {
        let class = (id % self.classes as u64) as u32;
        let mut rng = Rng::keyed(&[0x5717_4E71, id]);
        let angle =
            std::f64::consts::PI * class as f64 / self.classes as f64 + rng.uniform(-0.15, 0.15);
        let period = 6.0 + 3.0 * (class % 3) as f64;
        let phase = rng.uniform(0.0, period);
        let hue = class as f64 / self.classes as f64;
        let base = [
            128.0 + 100.0 * (2.0 * std::f64::consts::PI * hue).cos(),
            128.0 + 100.0 * (2.0 * std::f64::consts::PI * (hue + 0.33)).cos(),
            128.0 + 100.0 * (2.0 * std::f64::consts::PI * (hue + 0.66)).cos(),
        ];
        let (c, s) = (angle.cos(), angle.sin());
        let mut data = Vec::with_capacity((self.width * self.height * 3) as usize);
        for y in 0..self.height {
            for x in 0..self.width {
                let t = (x as f64 * c + y as f64 * s + phase) / period;
                let wave = (2.0 * std::f64::consts::PI * t).sin();
                for b in base {
                    let v = b * (0.6 + 0.4 * wave) + rng.uniform(-8.0, 8.0);
                    data.push(v.clamp(0.0, 255.0) as u8);
                }
            }
        }
        Frame::from_rgb(self.width, self.height, data)
    }
}

impl IndexedSource for SyntheticSource {
    fn len(&self) -> u64 {
        self.count
    }

    fn read(&self, id: u64) -> Result<Payload, SourceError> {
        Ok(Payload::Decoded(self.render(id)))
    }

    fn label(&self, id: u64) -> Option<u32> {
        Some((id % self.classes as u64) as u32)
    }

    fn num_classes(&self) -> Option<u32> {
        Some(self.classes)
    }

    fn describe(&self, id: u64) -> String {
        format!("synthetic#{id}")
    }
}
