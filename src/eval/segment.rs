//! Zero-shot segmentation (the DINO paper's Jaccard test): each head's CLS attention of the
//! last block, thresholded to keep 60% of its mass (as visualize_attention.py) and enlarged to
//! pixels, against ground-truth masks; reported per head, as the best head and the mean over
//! heads, next to a trivial baseline (a centred disc the size of the average mask).

use std::path::{Path, PathBuf};

use tch::Kind;

use crate::eval::loader::FeatureModel;
use crate::frame::Frame;
use crate::viz::attention::{mass_mask, prepare, Maps};

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("{0}: {1}")]
    Io(PathBuf, String),
    #[error("{0}")]
    Invalid(String),
}

/// One labelled image: RGB and its mask (true = object), same size.
pub struct Sample {
    pub image: Frame,
    pub mask: Vec<bool>,
}

/// Reads a set written by [`super::composite::build`] (`index.csv`, images, masks).
pub fn read_set(dir: &Path, limit: Option<usize>) -> Result<Vec<Sample>, SegmentError> {
    let index = dir.join("index.csv");
    let text = std::fs::read_to_string(&index)
        .map_err(|e| SegmentError::Io(index.clone(), e.to_string()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().skip(1).enumerate() {
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        let cols: Vec<&str> = line.split(',').collect();
        let [_, _, img, mask] = cols.as_slice() else {
            return Err(SegmentError::Invalid(format!(
                "{}: line {}: expected id,label,image,mask",
                index.display(),
                n + 2
            )));
        };
        let read = |rel: &str| {
            let p = dir.join(rel);
            image::open(&p).map_err(|e| SegmentError::Io(p, e.to_string()))
        };
        let rgb = read(img)?.to_rgb8();
        let m = read(mask)?.to_luma8();
        if rgb.dimensions() != m.dimensions() {
            return Err(SegmentError::Invalid(format!(
                "{}: image and mask sizes differ",
                dir.join(mask).display()
            )));
        }
        let (w, h) = rgb.dimensions();
        out.push(Sample {
            image: Frame::from_rgb(w, h, rgb.into_raw()),
            mask: m.into_raw().into_iter().map(|v| v > 127).collect(),
        });
    }
    if out.is_empty() {
        return Err(SegmentError::Invalid(format!(
            "{}: no samples",
            index.display()
        )));
    }
    Ok(out)
}

/// |a ∩ b| / |a ∪ b| (1 when both are empty).
pub fn jaccard(a: &[bool], b: &[bool]) -> f64 {
    let (mut inter, mut union) = (0usize, 0usize);
    for (&x, &y) in a.iter().zip(b) {
        inter += (x && y) as usize;
        union += (x || y) as usize;
    }
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// Mean Jaccard per head over a set.
#[derive(Debug, Clone)]
pub struct Scores {
    pub per_head: Vec<f64>,
}

impl Scores {
    pub fn best(&self) -> (usize, f64) {
        self.per_head
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, f64::NEG_INFINITY),
                |b, (i, v)| if v > b.1 { (i, v) } else { b },
            )
    }

    pub fn mean(&self) -> f64 {
        self.per_head.iter().sum::<f64>() / self.per_head.len().max(1) as f64
    }
}

/// The top-left `w × h` window of a `width`-wide mask (the crop `prepare` makes).
fn crop_mask(mask: &[bool], width: u32, w: u32, h: u32) -> Vec<bool> {
    (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| mask[(y * width + x) as usize])
        .collect()
}

/// Jaccard of every head's 60%-mass mask over the set, at the images' own size (cropped to
/// whole patches).
pub fn score(model: &FeatureModel, set: &[Sample], threshold: f64) -> Result<Scores, SegmentError> {
    let vit = model
        .vit()
        .map_err(|e| SegmentError::Invalid(e.to_string()))?;
    let patch = vit.dims.patch_size as u32;
    let mut sums: Vec<f64> = vec![0.0; vit.dims.heads as usize];
    for s in set {
        let shorter = s.image.width.min(s.image.height);
        let img =
            prepare(&s.image, shorter, patch).map_err(|e| SegmentError::Invalid(e.to_string()))?;
        let gt = crop_mask(&s.mask, s.image.width, img.width, img.height);
        let maps = Maps::compute(model, &img).map_err(|e| SegmentError::Invalid(e.to_string()))?;
        let masks = mass_mask(&maps.cls(), threshold).to_kind(Kind::Uint8);
        for (h, sum) in sums.iter_mut().enumerate() {
            let m: Vec<u8> = Vec::try_from(masks.get(h as i64)).unwrap_or_default();
            let p = patch as usize;
            let pixels: Vec<bool> = (0..img.height as usize)
                .flat_map(|y| (0..img.width as usize).map(move |x| (x, y)))
                .map(|(x, y)| m[(y / p) * maps.grid_w + x / p] != 0)
                .collect();
            *sum += jaccard(&pixels, &gt);
        }
    }
    Ok(Scores {
        per_head: sums.into_iter().map(|s| s / set.len() as f64).collect(),
    })
}

/// The trivial baseline: a disc at the image centre whose area is the set's mean mask area.
pub fn disc_baseline(set: &[Sample]) -> f64 {
    let mean_share = set
        .iter()
        .map(|s| s.mask.iter().filter(|&&m| m).count() as f64 / s.mask.len() as f64)
        .sum::<f64>()
        / set.len() as f64;
    set.iter()
        .map(|s| {
            let (w, h) = (s.image.width as f64, s.image.height as f64);
            let r2 = mean_share * w * h / std::f64::consts::PI;
            let disc: Vec<bool> = (0..s.image.height)
                .flat_map(|y| (0..s.image.width).map(move |x| (x, y)))
                .map(|(x, y)| {
                    let dx = x as f64 + 0.5 - w / 2.0;
                    let dy = y as f64 + 0.5 - h / 2.0;
                    dx * dx + dy * dy <= r2
                })
                .collect();
            jaccard(&disc, &s.mask)
        })
        .sum::<f64>()
        / set.len() as f64
}
