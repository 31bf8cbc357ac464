//! Self-attention maps as in DINO's `visualize_attention.py`: the last block's attention from
//! the CLS token to every patch, per head, as a heat map over the image; the mask that keeps
//! the top patches holding `threshold` (0.6) of each head's attention mass; the attention of
//! chosen query patches; optionally the first three principal components of the patch
//! features as RGB. Any image and patch size: the position embedding is interpolated to the
//! image's patch grid by the ViT itself (as for DINO's local crops).

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use tch::{Kind, Tensor};

use super::colormap::{head_colour, viridis};
use super::{save_png, zoom, VizError};
use crate::augment::{resize_shorter_size, Resampler};
use crate::eval::loader::FeatureModel;
use crate::frame::Frame;

/// The image as the network sees it: shorter side resized to `shorter` (bicubic, antialiased,
/// like torchvision's `Resize(int)`), then cropped at the top left to whole patches (DINO's
/// `img[:, :w - w % p, :h - h % p]`).
pub fn prepare(frame: &Frame, shorter: u32, patch: u32) -> Result<Frame, VizError> {
    let (rw, rh) = resize_shorter_size(frame.width, frame.height, shorter);
    let (w, h) = (rw - rw % patch, rh - rh % patch);
    if w == 0 || h == 0 {
        return Err(VizError::Invalid(format!(
            "an image of {rw}x{rh} pixels holds no {patch}-pixel patch; give a larger --size"
        )));
    }
    let mut out = vec![0u8; (w * h * 3) as usize];
    Resampler::new()
        .resize_then_crop(
            frame,
            &crate::decode::Reduction::identity(frame.width, frame.height),
            rw,
            rh,
            0,
            0,
            w,
            h,
            &mut out,
        )
        .map_err(|e| VizError::Invalid(e.to_string()))?;
    Ok(Frame::from_rgb(w, h, out))
}

/// The last block's attention of one image.
pub struct Maps {
    /// `[heads, 1 + P, 1 + P]`, float32 on the CPU.
    pub attn: Tensor,
    pub heads: usize,
    pub grid_h: usize,
    pub grid_w: usize,
    pub patch: usize,
}

impl Maps {
    /// Runs the network on a prepared image.
    pub fn compute(model: &FeatureModel, image: &Frame) -> Result<Maps, VizError> {
        let vit = model.vit().map_err(|e| VizError::Invalid(e.to_string()))?;
        let patch = vit.dims.patch_size as usize;
        let x =
            Tensor::from_slice(image.data()).view([1, image.height as i64, image.width as i64, 3]);
        let attn = tch::no_grad(|| vit.last_selfattention(&model.normalize(&x)))
            .to_kind(Kind::Float)
            .to_device(tch::Device::Cpu)
            .get(0);
        Ok(Maps {
            heads: attn.size()[0] as usize,
            grid_h: image.height as usize / patch,
            grid_w: image.width as usize / patch,
            patch,
            attn,
        })
    }

    /// CLS → patch attention, `[heads, P]` (DINO's `attentions[0, :, 0, 1:]`).
    pub fn cls(&self) -> Tensor {
        self.attn.select(1, 0).narrow(1, 1, self.patches() as i64)
    }

    /// Attention of the patch at column `x`, row `y` to every patch, `[heads, P]`.
    pub fn query(&self, x: usize, y: usize) -> Tensor {
        let token = 1 + (y * self.grid_w + x) as i64;
        self.attn
            .select(1, token)
            .narrow(1, 1, self.patches() as i64)
    }

    pub fn patches(&self) -> usize {
        self.grid_h * self.grid_w
    }
}

/// DINO's thresholding: per head, keep the patches with the largest attention whose summed
/// share of the head's mass reaches `keep` (the patches whose cumulative share, sorted
/// ascending, exceeds `1 - keep`). `[heads, P]` → bool `[heads, P]`.
pub fn mass_mask(attn: &Tensor, keep: f64) -> Tensor {
    let (val, idx) = attn.sort(1, false);
    let val = &val / val.sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
    let cum = val.cumsum(1, Kind::Float);
    let sorted_mask = cum.gt(1.0 - keep);
    let back = idx.argsort(1, false);
    sorted_mask.gather(1, &back, false)
}

/// The first three principal components of patch features `[P, D]`, each scaled to 0..255
/// over the image, as RGB per patch.
pub fn pca_rgb(tokens: &Tensor) -> Vec<[u8; 3]> {
    let x = tokens.to_kind(Kind::Double);
    let centred = &x - x.mean_dim([0i64].as_slice(), true, Kind::Double);
    let (_, _, v) = centred.svd(true, true);
    let k = v.size()[1].min(3);
    let proj = centred.matmul(&v.narrow(1, 0, k));
    let lo = proj.amin([0i64].as_slice(), true);
    let hi = proj.amax([0i64].as_slice(), true);
    let scaled = ((proj - &lo) / (hi - &lo).clamp_min(1e-12) * 255.0).round();
    let p = scaled.size()[0] as usize;
    let values: Vec<f64> = Vec::try_from(scaled.flatten(0, -1)).unwrap_or_default();
    (0..p)
        .map(|i| {
            let mut c = [0u8; 3];
            for (j, v) in c.iter_mut().enumerate().take(k as usize) {
                *v = values[i * k as usize + j] as u8;
            }
            c
        })
        .collect()
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap_or_default()
}

/// A per-patch map as a viridis heat map the image's size (each patch a block of pixels),
/// scaled from the map's minimum to its maximum as `plt.imsave` does.
fn heat(values: &[f32], maps: &Maps) -> RgbImage {
    let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let span = (hi - lo).max(1e-12);
    let p = maps.patch;
    RgbImage::from_fn(
        (maps.grid_w * p) as u32,
        (maps.grid_h * p) as u32,
        |x, y| {
            let v = values[(y as usize / p) * maps.grid_w + x as usize / p];
            Rgb(viridis(((v - lo) / span) as f64))
        },
    )
}

fn blend(a: [u8; 3], b: [u8; 3], alpha: f64) -> [u8; 3] {
    let mut out = [0u8; 3];
    for c in 0..3 {
        out[c] = (a[c] as f64 * (1.0 - alpha) + b[c] as f64 * alpha).round() as u8;
    }
    out
}

fn rgb(image: &Frame) -> RgbImage {
    RgbImage::from_raw(image.width, image.height, image.data().to_vec())
        .expect("a frame is packed RGB")
}

/// The image with each masked patch tinted in its head's colour (DINO's `display_instances`).
fn mask_overlay(image: &Frame, masks: &[Vec<bool>], maps: &Maps) -> RgbImage {
    let mut img = rgb(image);
    let p = maps.patch;
    for (x, y, px) in img.enumerate_pixels_mut() {
        let idx = (y as usize / p) * maps.grid_w + x as usize / p;
        for (h, m) in masks.iter().enumerate() {
            if m[idx] {
                px.0 = blend(px.0, head_colour(h), 0.5);
            }
        }
    }
    img
}

/// What to draw.
#[derive(Debug, Clone)]
pub struct Options {
    /// Shorter side of the network input (default: the size the model was trained at).
    pub size: Option<u32>,
    /// Share of attention mass the masks keep.
    pub threshold: f64,
    /// Query patches `(column, row)` for per-patch maps.
    pub queries: Vec<(usize, usize)>,
    pub pca: bool,
    /// Nearest-neighbour enlargement of every picture (default: to at least 224 pixels).
    pub zoom: Option<u32>,
}

/// Draws every picture of one image into `out_dir` as `<stem>-*.png`; returns the files.
pub fn render(
    model: &FeatureModel,
    frame: &Frame,
    stem: &str,
    out_dir: &Path,
    opts: &Options,
) -> Result<Vec<PathBuf>, VizError> {
    let vit = model.vit().map_err(|e| VizError::Invalid(e.to_string()))?;
    let patch = vit.dims.patch_size as u32;
    let size = opts.size.unwrap_or(model.native_size() as u32);
    let image = prepare(frame, size, patch)?;
    let maps = Maps::compute(model, &image)?;
    for &(x, y) in &opts.queries {
        if x >= maps.grid_w || y >= maps.grid_h {
            return Err(VizError::Invalid(format!(
                "query patch {x},{y} is outside the {}x{} patch grid (columns x rows)",
                maps.grid_w, maps.grid_h
            )));
        }
    }
    let factor = opts
        .zoom
        .unwrap_or_else(|| 224u32.div_ceil(image.width.min(image.height)).max(1));
    let mut written = Vec::new();
    let mut save = |img: &RgbImage, name: String| -> Result<(), VizError> {
        let path = out_dir.join(format!("{stem}-{name}.png"));
        save_png(&zoom(img, factor), &path)?;
        written.push(path);
        Ok(())
    };
    save(&rgb(&image), "img".into())?;
    let cls = maps.cls();
    let masks_t = mass_mask(&cls, opts.threshold);
    let masks: Vec<Vec<bool>> = (0..maps.heads)
        .map(|h| {
            to_vec(&masks_t.get(h as i64).to_kind(Kind::Float))
                .into_iter()
                .map(|v| v > 0.5)
                .collect()
        })
        .collect();
    for h in 0..maps.heads {
        save(
            &heat(&to_vec(&cls.get(h as i64)), &maps),
            format!("attn-head{h}"),
        )?;
        save(
            &mask_overlay(&image, &masks[h..h + 1], &maps),
            format!("mask-head{h}"),
        )?;
    }
    let mean = to_vec(&cls.mean_dim([0i64].as_slice(), false, Kind::Float));
    save(&heat(&mean, &maps), "attn-mean".into())?;
    save(&mask_overlay(&image, &masks, &maps), "overlay".into())?;
    for &(x, y) in &opts.queries {
        let q = maps.query(x, y);
        for h in 0..maps.heads {
            let mut img = heat(&to_vec(&q.get(h as i64)), &maps);
            mark_patch(&mut img, x, y, maps.patch);
            save(&img, format!("query-{x}-{y}-head{h}"))?;
        }
    }
    if opts.pca {
        let x =
            Tensor::from_slice(image.data()).view([1, image.height as i64, image.width as i64, 3]);
        let tokens = tch::no_grad(|| {
            vit.intermediate_layers(&model.normalize(&x), 1)
                .pop()
                .expect("one layer")
        })
        .to_device(tch::Device::Cpu)
        .get(0);
        let colours = pca_rgb(&tokens.narrow(0, 1, maps.patches() as i64));
        let p = maps.patch;
        let img = RgbImage::from_fn(image.width, image.height, |x, y| {
            Rgb(colours[(y as usize / p) * maps.grid_w + x as usize / p])
        });
        save(&img, "pca".into())?;
    }
    Ok(written)
}

/// Outlines the query patch in white.
fn mark_patch(img: &mut RgbImage, x: usize, y: usize, p: usize) {
    for i in 0..p {
        for (px, py) in [
            (x * p + i, y * p),
            (x * p + i, y * p + p - 1),
            (x * p, y * p + i),
            (x * p + p - 1, y * p + i),
        ] {
            img.put_pixel(px as u32, py as u32, Rgb([255, 255, 255]));
        }
    }
}
