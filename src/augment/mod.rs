//! The DINO multi-crop: two global and N local views of one image, as packed RGB8.
//!
//! Randomness comes only from `Rng::keyed(&[seed, epoch, sample_id])`, so a sample's crops are
//! the same whatever the worker count or scheduling.

use serde::{Deserialize, Serialize};

mod blur;
mod color;
mod crop;
mod plan;
mod view;

pub use blur::{blur_kernel_size, gaussian_blur, gaussian_kernel1d, GaussianBlur};
pub use color::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, apply_ops, grayscale,
    solarize, JitterOp, JitterParams, OpList, PixelOp,
};

pub use crop::{
    center_offset, hflip, random_resized_crop_params, resize_shorter_size, resized_crop, CropRect,
    Resampler,
};
pub use plan::{min_scale_for, CropPlan};
pub use view::{ViewKind, ViewParams};

use crate::config::Problems;
use crate::decode::Reduction;
use crate::frame::Frame;

/// `[augment]`: the multi-crop recipe (paper defaults) and the worker pool that runs it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Augment worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Capacity of the channel from the augment pool to the batcher, in samples.
    pub channel_capacity: usize,
    /// Side of the square global crops, in pixels.
    pub global_size: u32,
    /// Area fraction range of the global RandomResizedCrop.
    pub global_scale: [f64; 2],
    /// Number of local crops (0 disables them; then the global scale default becomes 0.14..1).
    pub local_crops: usize,
    /// Side of the square local crops, in pixels.
    pub local_size: u32,
    /// Area fraction range of the local RandomResizedCrop.
    pub local_scale: [f64; 2],
    /// Aspect-ratio range (width / height) of RandomResizedCrop.
    pub ratio: [f64; 2],
    /// Probability of a horizontal flip.
    pub flip_p: f64,
    /// Probability that colour jitter is applied to a view.
    pub jitter_p: f64,
    /// Colour jitter: brightness factor drawn from [1 - b, 1 + b].
    pub brightness: f64,
    /// Colour jitter: contrast factor drawn from [1 - c, 1 + c].
    pub contrast: f64,
    /// Colour jitter: saturation factor drawn from [1 - s, 1 + s].
    pub saturation: f64,
    /// Colour jitter: hue shift drawn from [-h, h] (at most 0.5).
    pub hue: f64,
    /// Probability of converting a view to grayscale (kept as 3 channels).
    pub grayscale_p: f64,
    /// Gaussian blur sigma range.
    pub blur_sigma: [f64; 2],
    /// Blur probability on global view 1.
    pub blur_p_global1: f64,
    /// Blur probability on global view 2.
    pub blur_p_global2: f64,
    /// Blur probability on each local view.
    pub blur_p_local: f64,
    /// Solarize probability on global view 2.
    pub solarize_p: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            workers: 0,
            channel_capacity: 256,
            global_size: 224,
            global_scale: [0.4, 1.0],
            local_crops: 8,
            local_size: 96,
            local_scale: [0.05, 0.4],
            ratio: [3.0 / 4.0, 4.0 / 3.0],
            flip_p: 0.5,
            jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.2,
            hue: 0.1,
            grayscale_p: 0.2,
            blur_sigma: [0.1, 2.0],
            blur_p_global1: 1.0,
            blur_p_global2: 0.1,
            blur_p_local: 0.5,
            solarize_p: 0.2,
        }
    }
}

impl AugmentConfig {
    /// Number of global views; fixed at 2 by the DINO loss.
    pub const GLOBAL_CROPS: usize = 2;

    /// Bytes of one global crop.
    pub fn global_bytes(&self) -> usize {
        self.global_size as usize * self.global_size as usize * 3
    }

    /// Bytes of one local crop.
    pub fn local_bytes(&self) -> usize {
        self.local_size as usize * self.local_size as usize * 3
    }

    pub fn validate(&self, problems: &mut Problems) {
        problems.check(self.global_size >= 8, "augment.global_size", || {
            format!("must be >= 8, got {}", self.global_size)
        });
        problems.check(self.local_size >= 4, "augment.local_size", || {
            format!("must be >= 4, got {}", self.local_size)
        });
        problems.check(
            self.channel_capacity > 0,
            "augment.channel_capacity",
            || "must be > 0".into(),
        );
        problems.interval("augment.global_scale", self.global_scale, 1e-6, 1.0);
        problems.interval("augment.local_scale", self.local_scale, 1e-6, 1.0);
        problems.interval("augment.ratio", self.ratio, 1e-3, 1e3);
        problems.interval("augment.blur_sigma", self.blur_sigma, 1e-3, 100.0);
        for (key, p) in [
            ("augment.flip_p", self.flip_p),
            ("augment.jitter_p", self.jitter_p),
            ("augment.grayscale_p", self.grayscale_p),
            ("augment.blur_p_global1", self.blur_p_global1),
            ("augment.blur_p_global2", self.blur_p_global2),
            ("augment.blur_p_local", self.blur_p_local),
            ("augment.solarize_p", self.solarize_p),
        ] {
            problems.in_range(key, p, 0.0, 1.0);
        }
        problems.in_range("augment.brightness", self.brightness, 0.0, 10.0);
        problems.in_range("augment.contrast", self.contrast, 0.0, 10.0);
        problems.in_range("augment.saturation", self.saturation, 0.0, 10.0);
        problems.in_range("augment.hue", self.hue, 0.0, 0.5);
    }
}

/// Errors making crops; the sample is skipped and counted.
#[derive(Debug, thiserror::Error)]
pub enum AugmentError {
    #[error("image is empty ({0}x{1})")]
    Empty(u32, u32),
    #[error("resize failed: {0}")]
    Resize(String),
    #[error("frame is {got:?} but its reduction of a {full:?} picture makes {expected:?}")]
    Reduction {
        got: (u32, u32),
        expected: (u32, u32),
        full: (u32, u32),
    },
    #[error("{what} buffer is {got} bytes, expected {expected}")]
    BufferSize {
        what: &'static str,
        expected: usize,
        got: usize,
    },
}

/// Keys the draw of which picture of a temporal pair a local view is cut from.
const PAIR_SALT: u64 = 0x7E3A_9A12;

/// One worker's multi-crop engine: the recipe plus scratch buffers it reuses across images.
///
/// Each view draws from its own generator keyed by (seed, epoch, sample id, view index), so
/// one view's rejected crop tries never shift another view's randomness.
pub struct MultiCrop {
    cfg: AugmentConfig,
    seed: u64,
    resampler: Resampler,
    blur: GaussianBlur,
}

impl MultiCrop {
    pub fn new(cfg: &AugmentConfig, seed: u64) -> Self {
        MultiCrop {
            cfg: cfg.clone(),
            seed,
            resampler: Resampler::new(),
            blur: GaussianBlur::new(),
        }
    }

    pub fn config(&self) -> &AugmentConfig {
        &self.cfg
    }

    /// Writes the 2 global crops back to back into `global` (2 × global_bytes) and the local
    /// crops into `local` (local_crops × local_bytes), each packed RGB8 HWC.
    pub fn apply(
        &mut self,
        frame: &Frame,
        epoch: u64,
        sample_id: u64,
        global: &mut [u8],
        local: &mut [u8],
    ) -> Result<(), AugmentError> {
        let identity = Reduction::identity(frame.width, frame.height);
        self.apply_reduced(frame, &identity, None, epoch, sample_id, global, local)
    }

    /// [`MultiCrop::apply`] on a frame decoded at `reduction` of the picture, cutting the boxes
    /// of `plan` (drawn on the full-size picture before decoding; drawn here when `None` or
    /// drawn for another size, as when the decoder fell back to another path).
    #[allow(clippy::too_many_arguments)]
    pub fn apply_reduced(
        &mut self,
        frame: &Frame,
        reduction: &Reduction,
        plan: Option<&CropPlan>,
        epoch: u64,
        sample_id: u64,
        global: &mut [u8],
        local: &mut [u8],
    ) -> Result<(), AugmentError> {
        check_frame(frame)?;
        check_reduction(frame, reduction)?;
        let (gb, lb) = (self.cfg.global_bytes(), self.cfg.local_bytes());
        check_len("global", global.len(), AugmentConfig::GLOBAL_CROPS * gb)?;
        check_len("local", local.len(), self.cfg.local_crops * lb)?;
        let (width, height) = reduction.full;
        let drawn;
        let plan = match plan {
            Some(p) if (p.width, p.height) == reduction.full => p,
            _ => {
                drawn = self.plan(width, height, epoch, sample_id);
                &drawn
            }
        };
        let views = global
            .chunks_exact_mut(gb)
            .chain(local.chunks_exact_mut(lb.max(1)));
        for (params, dst) in plan.views.iter().zip(views) {
            params.render_reduced(frame, reduction, &mut self.resampler, &mut self.blur, dst)?;
        }
        Ok(())
    }

    /// Video temporal pairs: global view 0 from `first`, global view 1 from `second` (a frame
    /// of the same file `source.pair_seconds` away), each local view from one of the two, drawn
    /// from (seed, epoch, sample id, view). Each view's parameters are those
    /// [`MultiCrop::apply`] draws on its picture's size, so `apply_pair(f, f)` equals
    /// `apply(f)`.
    pub fn apply_pair(
        &mut self,
        first: &Frame,
        second: &Frame,
        epoch: u64,
        sample_id: u64,
        global: &mut [u8],
        local: &mut [u8],
    ) -> Result<(), AugmentError> {
        check_frame(first)?;
        check_frame(second)?;
        let (gb, lb) = (self.cfg.global_bytes(), self.cfg.local_bytes());
        check_len("global", global.len(), AugmentConfig::GLOBAL_CROPS * gb)?;
        check_len("local", local.len(), self.cfg.local_crops * lb)?;
        let frames = [first, second];
        let plans = frames.map(|f| self.plan(f.width, f.height, epoch, sample_id));
        let views = global
            .chunks_exact_mut(gb)
            .chain(local.chunks_exact_mut(lb.max(1)));
        for (v, dst) in views.enumerate() {
            let k = match v {
                0 | 1 => v,
                _ => crate::rng::Rng::keyed(&[self.seed, epoch, sample_id, v as u64, PAIR_SALT])
                    .below(2) as usize,
            };
            let identity = Reduction::identity(frames[k].width, frames[k].height);
            plans[k].views[v].render_reduced(
                frames[k],
                &identity,
                &mut self.resampler,
                &mut self.blur,
                dst,
            )?;
        }
        Ok(())
    }

    /// Every view of sample `sample_id` drawn on a `width × height` picture (what
    /// [`MultiCrop::apply`] cuts), before any pixel is decoded.
    pub fn plan(&self, width: u32, height: u32, epoch: u64, sample_id: u64) -> CropPlan {
        CropPlan::draw(&self.cfg, self.seed, width, height, epoch, sample_id)
    }

    /// The parameters of view `view` (0, 1 global; 2.. local) of a `width × height` image:
    /// a pure function of (seed, epoch, sample id, view), whatever ran before.
    pub fn view_params(
        &self,
        width: u32,
        height: u32,
        epoch: u64,
        sample_id: u64,
        view: usize,
    ) -> ViewParams {
        plan::view_params(&self.cfg, self.seed, width, height, epoch, sample_id, view)
    }
}

fn check_reduction(frame: &Frame, reduction: &Reduction) -> Result<(), AugmentError> {
    let expected = reduction.reduced_size();
    if (frame.width, frame.height) == expected {
        Ok(())
    } else {
        Err(AugmentError::Reduction {
            got: (frame.width, frame.height),
            expected,
            full: reduction.full,
        })
    }
}

fn check_frame(frame: &Frame) -> Result<(), AugmentError> {
    if frame.width == 0 || frame.height == 0 {
        return Err(AugmentError::Empty(frame.width, frame.height));
    }
    let expected = frame.width as usize * frame.height as usize * 3;
    check_len("frame", frame.data().len(), expected)
}

fn check_len(what: &'static str, got: usize, expected: usize) -> Result<(), AugmentError> {
    if got == expected {
        Ok(())
    } else {
        Err(AugmentError::BufferSize {
            what,
            expected,
            got,
        })
    }
}

/// The evaluation view: resize the shorter side to `size / 0.875` (bicubic, antialiased), then
/// centre-crop `size × size` (torchvision's Resize(256)+CenterCrop(224) scaled). Packed RGB8.
pub fn eval_view(frame: &Frame, size: u32) -> Result<Vec<u8>, AugmentError> {
    eval_view_reduced(frame, &Reduction::identity(frame.width, frame.height), size)
}

/// The shorter side the evaluation view resizes to.
fn eval_shorter(size: u32) -> u32 {
    (size as f64 / 0.875) as u32
}

/// The smallest scale of a `width × height` picture that still leaves the evaluation resize a
/// downscale (or none), so [`eval_view_reduced`] may read a frame decoded at it.
pub fn eval_min_scale(width: u32, height: u32, size: u32) -> f64 {
    min_scale_for(width.min(height), eval_shorter(size))
}

/// [`eval_view`] of the full-size picture, read from a frame decoded at `reduction` of it: the
/// resize and the window are computed on the full size and mapped into the frame.
pub fn eval_view_reduced(
    frame: &Frame,
    reduction: &Reduction,
    size: u32,
) -> Result<Vec<u8>, AugmentError> {
    check_frame(frame)?;
    check_reduction(frame, reduction)?;
    if size == 0 {
        return Err(AugmentError::Empty(0, 0));
    }
    let (width, height) = reduction.full;
    let (rw, rh) = resize_shorter_size(width, height, eval_shorter(size));
    // shorter = size / 0.875 >= size, so the centre window always fits: no padding case.
    let mut out = vec![0u8; size as usize * size as usize * 3];
    let (left, top) = (center_offset(rw, size), center_offset(rh, size));
    Resampler::new().resize_then_crop(frame, reduction, rw, rh, left, top, size, size, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
