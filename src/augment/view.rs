//! One view of the multi-crop: its random parameters, drawn apart from the pixel work.
//!
//! Sampling and applying are split so that a view's exact recipe can be logged, replayed and
//! checked op by op against torchvision (tests/augment_reference.rs does so).

use super::blur::GaussianBlur;
use super::color::{apply_ops, solarize, JitterParams, OpList, PixelOp};
use super::crop::{hflip, random_resized_crop_params, CropRect, Resampler};
use super::{AugmentConfig, AugmentError};
use crate::decode::Reduction;
use crate::frame::Frame;
use crate::rng::Rng;

/// Which of DINO's three view recipes a crop follows (they differ in size and probabilities).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewKind {
    Global1,
    Global2,
    Local,
}

impl ViewKind {
    /// The kind of view number `index` (0 and 1 global, the rest local).
    pub fn of_index(index: usize) -> Self {
        match index {
            0 => ViewKind::Global1,
            1 => ViewKind::Global2,
            _ => ViewKind::Local,
        }
    }
}

/// Everything random about one view, as drawn from its generator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewParams {
    pub rect: CropRect,
    /// Side of the square output.
    pub size: u32,
    pub flip: bool,
    pub jitter: Option<JitterParams>,
    pub grayscale: bool,
    pub blur_sigma: Option<f64>,
    pub solarize: bool,
}

impl ViewParams {
    /// Draws a view's parameters in DataAugmentationDINO's order: crop, flip, jitter (p),
    /// grayscale (p), blur (p per kind) and its sigma, solarize (global view 2 only).
    pub fn sample(
        rng: &mut Rng,
        cfg: &AugmentConfig,
        kind: ViewKind,
        width: u32,
        height: u32,
    ) -> Self {
        let (size, scale, blur_p) = match kind {
            ViewKind::Global1 => (cfg.global_size, cfg.global_scale, cfg.blur_p_global1),
            ViewKind::Global2 => (cfg.global_size, cfg.global_scale, cfg.blur_p_global2),
            ViewKind::Local => (cfg.local_size, cfg.local_scale, cfg.blur_p_local),
        };
        let rect = random_resized_crop_params(rng, width, height, scale, cfg.ratio);
        let flip = rng.chance(cfg.flip_p);
        let jitter = rng
            .chance(cfg.jitter_p)
            .then(|| JitterParams::sample(rng, cfg));
        let grayscale = rng.chance(cfg.grayscale_p);
        let blur_sigma = rng
            .chance(blur_p)
            .then(|| rng.uniform(cfg.blur_sigma[0], cfg.blur_sigma[1]));
        let solarize = kind == ViewKind::Global2 && rng.chance(cfg.solarize_p);
        ViewParams {
            rect,
            size,
            flip,
            jitter,
            grayscale,
            blur_sigma,
            solarize,
        }
    }

    /// Renders the view into `dst` (`size² × 3` bytes) with the caller's scratch.
    pub fn render(
        &self,
        frame: &Frame,
        resampler: &mut Resampler,
        blur: &mut GaussianBlur,
        dst: &mut [u8],
    ) -> Result<(), AugmentError> {
        let identity = Reduction::identity(frame.width, frame.height);
        self.render_reduced(frame, &identity, resampler, blur, dst)
    }

    /// [`ViewParams::render`] of a view drawn on the full-size picture, cut from a frame decoded
    /// at `reduction` of it; everything after the resize is the same.
    pub fn render_reduced(
        &self,
        frame: &Frame,
        reduction: &Reduction,
        resampler: &mut Resampler,
        blur: &mut GaussianBlur,
        dst: &mut [u8],
    ) -> Result<(), AugmentError> {
        resampler.resized_crop_reduced(frame, reduction, self.rect, self.size, self.size, dst)?;
        // Flipping after the resize equals resizing the flipped crop: the kernel is symmetric.
        if self.flip {
            hflip(dst, self.size);
        }
        // Jitter and grayscale run fused, in one or two passes over the pixels.
        let mut ops = OpList::default();
        if let Some(j) = &self.jitter {
            j.push_ops(&mut ops);
        }
        if self.grayscale {
            ops.push(PixelOp::Grayscale);
        }
        apply_ops(dst, ops.as_slice());
        if let Some(sigma) = self.blur_sigma {
            blur.apply(dst, self.size, self.size, sigma);
        }
        if self.solarize {
            solarize(dst, 128);
        }
        Ok(())
    }
}
