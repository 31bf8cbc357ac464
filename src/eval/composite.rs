//! A labelled segmentation set that exists offline, built deterministically from real data:
//! Fashion-MNIST garments (IDX files) composited onto real photographs (any folder of images,
//! e.g. scikit-image's sample photos) at a random position and scale. The garment's pixels are
//! the ground-truth mask and its class the label.
//!
//! Layout written under `out`: `images/class_<label>/<i>.png` (an image folder, so a pipeline
//! can train DINO on it), `masks/<i>.png` (0 / 255), `index.csv` (`id,label,image,mask`).
//! Sample `i` is a pure function of (seed, i, the inputs): rebuilding gives the same files.

use std::path::{Path, PathBuf};

use image::{GrayImage, Luma, RgbImage};

use super::segment::SegmentError;
use crate::augment::{random_resized_crop_params, resized_crop};
use crate::decode::decode_image;
use crate::frame::Frame;
use crate::rng::Rng;
use crate::source::{IdxSource, IdxSplit, IndexedSource, Payload};

/// What to build.
pub struct CompositeSpec {
    pub fashion_mnist: PathBuf,
    pub split: IdxSplit,
    pub backgrounds: PathBuf,
    pub count: usize,
    pub size: u32,
    pub seed: u64,
    /// A garment's side as a share of the image side, drawn uniformly from [min, max].
    pub garment_scale: [f64; 2],
}

/// The default share of the image side a garment covers.
pub const GARMENT_SCALE: [f64; 2] = [0.35, 0.7];
/// A pixel belongs to the garment when its Fashion-MNIST intensity is above this.
const MASK_LEVEL: u8 = 25;

fn backgrounds(dir: &Path, max_pixels: u64) -> Result<Vec<(PathBuf, Frame)>, SegmentError> {
    let io = |e: std::io::Error| SegmentError::Io(dir.to_path_buf(), e.to_string());
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension()
                    .and_then(|e| e.to_str())
                    .map(|e| e.to_ascii_lowercase())
                    .as_deref(),
                Some("png" | "jpg" | "jpeg")
            )
        })
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let Ok(bytes) = std::fs::read(&p) else {
            continue;
        };
        match decode_image(&bytes, max_pixels) {
            // Tiny images and thin strips make poor backgrounds.
            Ok(f) if f.width >= 64 && f.height >= 64 => out.push((p, f)),
            _ => tracing::debug!(path = %p.display(), "not used as a background"),
        }
    }
    if out.is_empty() {
        return Err(SegmentError::Invalid(format!(
            "{}: no decodable PNG/JPEG photos of at least 64x64 pixels",
            dir.display()
        )));
    }
    Ok(out)
}

/// Builds the set; returns the number of samples written.
pub fn build(spec: &CompositeSpec, out: &Path) -> Result<usize, SegmentError> {
    let [lo, hi] = spec.garment_scale;
    if !(0.0 < lo && lo <= hi && hi <= 1.0) {
        return Err(SegmentError::Invalid(format!(
            "garment scale {lo},{hi}: need 0 < min <= max <= 1"
        )));
    }
    let garments = IdxSource::open(&spec.fashion_mnist, spec.split, None)
        .map_err(|e| SegmentError::Invalid(format!("{}: {e}", spec.fashion_mnist.display())))?;
    let bgs = backgrounds(&spec.backgrounds, 1 << 26)?;
    let mkdir = |p: &Path| {
        std::fs::create_dir_all(p).map_err(|e| SegmentError::Io(p.to_path_buf(), e.to_string()))
    };
    mkdir(&out.join("masks"))?;
    let mut index = String::from("id,label,image,mask\n");
    let size = spec.size;
    for i in 0..spec.count {
        let mut rng = Rng::keyed(&[spec.seed, i as u64, 0xC0_4905]);
        let (_, bg) = &bgs[rng.below(bgs.len() as u64) as usize];
        let rect = random_resized_crop_params(
            &mut rng,
            bg.width,
            bg.height,
            [0.3, 1.0],
            [0.75, 4.0 / 3.0],
        );
        let bg_view =
            resized_crop(bg, rect, size, size).map_err(|e| SegmentError::Invalid(e.to_string()))?;
        let gid = rng.below(garments.len());
        let (garment, label) = match (garments.read(gid), garments.label(gid)) {
            (Ok(Payload::Decoded(f)), Some(l)) => (f, l),
            _ => {
                return Err(SegmentError::Invalid(format!(
                    "Fashion-MNIST sample {gid} unreadable"
                )))
            }
        };
        let side = ((size as f64 * rng.uniform(lo, hi)) as u32).max(8);
        let g = resized_crop(
            &garment,
            crate::augment::CropRect {
                top: 0,
                left: 0,
                height: garment.height,
                width: garment.width,
            },
            side,
            side,
        )
        .map_err(|e| SegmentError::Invalid(e.to_string()))?;
        let left = rng.below((size - side + 1) as u64) as u32;
        let top = rng.below((size - side + 1) as u64) as u32;
        // A saturated tint per sample; the garment's intensity shades it.
        let hue = rng.uniform(0.0, 1.0);
        let tint = crate::viz::colormap::head_colour((hue * 1000.0) as usize);
        let mut img = RgbImage::from_raw(size, size, bg_view).expect("size² RGB");
        let mut mask = GrayImage::new(size, size);
        for y in 0..side {
            for x in 0..side {
                let v = g[((y * side + x) * 3) as usize];
                if v <= MASK_LEVEL {
                    continue;
                }
                // Opaque: every mask pixel shows the garment, shaded by its intensity, so the
                // mask is what a viewer sees (blending by intensity left dark garments
                // see-through while the mask still claimed them).
                let shade = 0.35 + 0.65 * (v as f64 / 255.0);
                let (px, py) = (left + x, top + y);
                mask.put_pixel(px, py, Luma([255]));
                let p = img.get_pixel_mut(px, py);
                for (channel, tone) in p.0.iter_mut().zip(tint) {
                    *channel = (tone as f64 * shade).round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        let class_dir = out.join("images").join(format!("class_{label}"));
        mkdir(&class_dir)?;
        let img_path = class_dir.join(format!("{i:05}.png"));
        let mask_path = out.join("masks").join(format!("{i:05}.png"));
        img.save(&img_path)
            .map_err(|e| SegmentError::Io(img_path.clone(), e.to_string()))?;
        mask.save(&mask_path)
            .map_err(|e| SegmentError::Io(mask_path.clone(), e.to_string()))?;
        index.push_str(&format!(
            "{i},{label},images/class_{label}/{i:05}.png,masks/{i:05}.png\n"
        ));
    }
    let idx_path = out.join("index.csv");
    std::fs::write(&idx_path, index).map_err(|e| SegmentError::Io(idx_path, e.to_string()))?;
    Ok(spec.count)
}
