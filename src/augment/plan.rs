//! A sample's crop plan: every view's parameters drawn on the full-size picture before it is
//! decoded, so the decoder can pick the reduction the crops allow (`decode::decode_reduced`).
//!
//! Views are drawn exactly as [`super::MultiCrop::apply`] draws them (one generator per view,
//! keyed by seed, epoch, sample id and view), so a plan holds the same boxes as today's crops
//! whatever scale the picture is then decoded at.

use super::view::{ViewKind, ViewParams};
use super::AugmentConfig;
use crate::rng::Rng;

/// The views of one sample, drawn on a `width × height` (upright, full-size) picture.
#[derive(Debug, Clone, PartialEq)]
pub struct CropPlan {
    pub width: u32,
    pub height: u32,
    /// Global views first, then the local ones, in rendering order.
    pub views: Vec<ViewParams>,
}

impl CropPlan {
    /// Draws every view of sample `sample_id` in `epoch`.
    pub fn draw(
        cfg: &AugmentConfig,
        seed: u64,
        width: u32,
        height: u32,
        epoch: u64,
        sample_id: u64,
    ) -> Self {
        let count = AugmentConfig::GLOBAL_CROPS + cfg.local_crops;
        let views = (0..count)
            .map(|v| view_params(cfg, seed, width, height, epoch, sample_id, v))
            .collect();
        CropPlan {
            width,
            height,
            views,
        }
    }

    /// The smallest scale of the picture at which every crop box is still at least as large as
    /// its output on both axes; 1 when some box is already smaller than its output (a reduction
    /// would upsample it further).
    pub fn min_scale(&self) -> f64 {
        self.views
            .iter()
            .flat_map(|v| [(v.rect.width, v.size), (v.rect.height, v.size)])
            .map(|(side, out)| min_scale_for(side, out))
            .fold(0.0, f64::max)
    }
}

/// The scale at which a side of `side` pixels still covers `out` output pixels (1 if it does
/// not even at full size).
pub fn min_scale_for(side: u32, out: u32) -> f64 {
    if side <= out {
        1.0
    } else {
        out as f64 / side as f64
    }
}

/// The parameters of view `view` (0, 1 global; 2.. local): a pure function of (seed, epoch,
/// sample id, view, picture size).
pub(super) fn view_params(
    cfg: &AugmentConfig,
    seed: u64,
    width: u32,
    height: u32,
    epoch: u64,
    sample_id: u64,
    view: usize,
) -> ViewParams {
    let mut rng = Rng::keyed(&[seed, epoch, sample_id, view as u64]);
    ViewParams::sample(&mut rng, cfg, ViewKind::of_index(view), width, height)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::MultiCrop;

    #[test]
    fn a_plan_holds_the_views_apply_draws() {
        let cfg = AugmentConfig::default();
        let mc = MultiCrop::new(&cfg, 7);
        for (w, h, id) in [(2000, 1500, 3), (500, 375, 11), (375, 500, 12)] {
            let plan = CropPlan::draw(&cfg, 7, w, h, 2, id);
            assert_eq!(plan.views.len(), 10);
            for (v, params) in plan.views.iter().enumerate() {
                assert_eq!(*params, mc.view_params(w, h, 2, id, v), "view {v}");
            }
        }
    }

    #[test]
    fn min_scale_keeps_every_box_at_least_its_output() {
        let cfg = AugmentConfig::default();
        for id in 0..200 {
            let plan = CropPlan::draw(&cfg, 1, 2000, 1500, 0, id);
            let s = plan.min_scale();
            assert!(s > 0.0 && s <= 1.0);
            let mut tight = false;
            for v in &plan.views {
                let (w, h) = (v.rect.width as f64 * s, v.rect.height as f64 * s);
                assert!(w >= v.size as f64 - 1e-9 && h >= v.size as f64 - 1e-9);
                tight |= (w - v.size as f64).abs() < 1e-9 || (h - v.size as f64).abs() < 1e-9;
            }
            assert!(tight || s == 1.0, "the binding box defines the scale");
        }
        // A box smaller than its output forbids any reduction.
        assert_eq!(min_scale_for(80, 96), 1.0);
        assert_eq!(min_scale_for(96, 96), 1.0);
        assert_eq!(min_scale_for(192, 96), 0.5);
    }
}
