//! Vision Transformer backbone as in DINO's `vision_transformer.py`, with timm parameter names
//! (`cls_token`, `pos_embed`, `patch_embed.proj`, `blocks.{i}.…`, `norm`) so the teacher can
//! be exported to `timm.create_model("vit_*", num_classes=0)` without renaming.

use tch::{Device, Kind, Tensor};

use super::init;
use super::layers::{LayerNorm, Linear};
use super::params::Params;
use super::Pass;

/// LayerNorm epsilon used by DINO and timm ViTs.
pub const LN_EPS: f64 = 1e-6;

/// Sizes of a ViT.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VitDims {
    pub embed_dim: i64,
    pub depth: i64,
    pub heads: i64,
    pub patch_size: i64,
    pub mlp_ratio: f64,
    /// Side of the images the position embedding is built for (the global crop size).
    pub img_size: i64,
}

impl VitDims {
    pub fn grid(&self) -> i64 {
        self.img_size / self.patch_size
    }
}

struct Attention {
    qkv: Linear,
    proj: Linear,
    heads: i64,
}

impl Attention {
    /// The attention matrix `softmax(q·kᵀ/√d)`, `[B, heads, N, N]` (DINO's `attn`, returned by
    /// its `Block.forward(x, return_attention=True)`), for the attention maps.
    fn weights(&self, x: &Tensor) -> Tensor {
        let (b, n, c) = x.size3().expect("tokens [B, N, C]");
        let qkv = self
            .qkv
            .forward(x)
            .reshape([b, n, 3, self.heads, c / self.heads])
            .permute([2, 0, 3, 1, 4]);
        let (q, k) = (qkv.get(0), qkv.get(1));
        let scale = ((c / self.heads) as f64).powf(-0.5);
        (q.matmul(&k.transpose(-2, -1)) * scale).softmax(-1, Kind::Float)
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, n, c) = x.size3().expect("tokens [B, N, C]");
        let qkv = self
            .qkv
            .forward(x)
            .reshape([b, n, 3, self.heads, c / self.heads])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let out = if x.device() == Device::Cpu {
            // DINO's own formula. On the CPU it is faster than libtorch's fused kernel at the
            // token counts of DINO's crops (measured fwd+bwd, 2 threads: 3.3 vs 5.0 ms at 37
            // tokens, 1.3 vs 2.4 ms at 10, equal at 197), and the attention matrix is small.
            let scale = ((c / self.heads) as f64).powf(-0.5);
            (q.matmul(&k.transpose(-2, -1)) * scale)
                .softmax(-1, Kind::Float)
                .matmul(&v)
        } else {
            // Same maths; the fused kernel saves the attention matrix's memory on accelerators.
            Tensor::scaled_dot_product_attention::<Tensor>(
                &q, &k, &v, None, 0.0, false, None, false,
            )
        };
        self.proj.forward(&out.transpose(1, 2).reshape([b, n, c]))
    }
}

struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    drop_path: f64,
}

/// Stochastic depth per sample (timm/DINO `drop_path`): keep with prob 1-p, rescale by 1/(1-p).
/// The mask is `floor(keep + u)`, u ~ U[0, 1), as DINO draws it, with u from `pass.rng`.
fn drop_path(x: &Tensor, p: f64, pass: &mut Pass) -> Tensor {
    let rng = match (pass.rng.as_deref_mut(), pass.train) {
        (Some(rng), true) if p > 0.0 => rng,
        _ => return x.shallow_clone(),
    };
    let keep = 1.0 - p;
    let n = x.size()[0];
    let mask: Vec<f32> = (0..n)
        .map(|_| (keep + rng.next_f64()).floor() as f32)
        .collect();
    let mut shape = vec![n];
    shape.extend(std::iter::repeat_n(1, x.dim() - 1));
    let mask = Tensor::from_slice(&mask)
        .reshape(shape)
        .to_device(x.device())
        .to_kind(x.kind());
    x.divide_scalar(keep) * mask
}

impl Block {
    fn forward(&self, x: &Tensor, pass: &mut Pass) -> Tensor {
        let a = self.attn.forward(&self.norm1.forward(x));
        let x = x + drop_path(&a, self.drop_path, pass);
        let h = self
            .fc2
            .forward(&self.fc1.forward(&self.norm2.forward(&x)).gelu("none"));
        &x + drop_path(&h, self.drop_path, pass)
    }
}

/// A ViT returning the final-normed CLS token.
pub struct VisionTransformer {
    pub dims: VitDims,
    cls_token: Tensor,
    pos_embed: Tensor,
    patch_w: Tensor,
    patch_b: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
}

impl VisionTransformer {
    /// Registers the parameters under `prefix` (e.g. `"backbone."`). `drop_path` is the rate of
    /// the last block; block i gets `drop_path * i / (depth - 1)` (DINO's linspace).
    pub fn new(p: &mut Params, prefix: &str, dims: VitDims, drop_path: f64) -> Self {
        let dev = p.device();
        let d = dims.embed_dim;
        let np = dims.grid() * dims.grid();
        let cls_token = p.param(
            &format!("{prefix}cls_token"),
            init::trunc_normal(&[1, 1, d], 0.02, dev),
            true,
        );
        let pos_embed = p.param(
            &format!("{prefix}pos_embed"),
            init::trunc_normal(&[1, np + 1, d], 0.02, dev),
            true,
        );
        // The patch conv keeps PyTorch's default Conv2d init: DINO's `_init_weights` touches only
        // Linear and LayerNorm. (kaiming_uniform a=√5 ⇒ U(±1/√fan_in) for weight and bias.)
        let fan_in = 3 * dims.patch_size * dims.patch_size;
        let bound = 1.0 / (fan_in as f64).sqrt();
        let f = (Kind::Float, dev);
        let patch_w = p.param(
            &format!("{prefix}patch_embed.proj.weight"),
            Tensor::empty([d, 3, dims.patch_size, dims.patch_size], f).uniform_(-bound, bound),
            true,
        );
        let patch_b = p.param(
            &format!("{prefix}patch_embed.proj.bias"),
            Tensor::empty([d], f).uniform_(-bound, bound),
            true,
        );
        let hidden = (d as f64 * dims.mlp_ratio) as i64;
        let blocks = (0..dims.depth)
            .map(|i| {
                let b = format!("{prefix}blocks.{i}.");
                let dp = if dims.depth > 1 {
                    drop_path * i as f64 / (dims.depth - 1) as f64
                } else {
                    0.0
                };
                Block {
                    norm1: LayerNorm::new(p, &format!("{b}norm1"), d, LN_EPS),
                    attn: Attention {
                        qkv: Linear::new(p, &format!("{b}attn.qkv"), d, 3 * d, true),
                        proj: Linear::new(p, &format!("{b}attn.proj"), d, d, true),
                        heads: dims.heads,
                    },
                    norm2: LayerNorm::new(p, &format!("{b}norm2"), d, LN_EPS),
                    fc1: Linear::new(p, &format!("{b}mlp.fc1"), d, hidden, true),
                    fc2: Linear::new(p, &format!("{b}mlp.fc2"), hidden, d, true),
                    drop_path: dp,
                }
            })
            .collect();
        let norm = LayerNorm::new(p, &format!("{prefix}norm"), d, LN_EPS);
        VisionTransformer {
            dims,
            cls_token,
            pos_embed,
            patch_w,
            patch_b,
            blocks,
            norm,
        }
    }

    /// DINO's `interpolate_pos_encoding`: bicubic resampling of the patch position grid with
    /// the `+0.1` scale-factor trick, so crops of another size (locals) get a matching grid.
    pub fn interpolate_pos_encoding(&self, npatch: i64, h: i64, w: i64) -> Tensor {
        let n = self.pos_embed.size()[1] - 1;
        if npatch == n && h == w {
            return self.pos_embed.shallow_clone();
        }
        let dim = self.dims.embed_dim;
        let class_pos = self.pos_embed.narrow(1, 0, 1);
        let patch_pos = self.pos_embed.narrow(1, 1, n);
        let side = (n as f64).sqrt();
        let (h0, w0) = (
            (h / self.dims.patch_size) as f64 + 0.1,
            (w / self.dims.patch_size) as f64 + 0.1,
        );
        let (sh, sw) = (h0 / side, w0 / side);
        let side_i = side as i64;
        // PyTorch's output size for a scale factor: floor(in * scale), scales passed through.
        let out = [
            (side_i as f64 * sh).floor() as i64,
            (side_i as f64 * sw).floor() as i64,
        ];
        let grid = patch_pos
            .reshape([1, side_i, side_i, dim])
            .permute([0, 3, 1, 2]);
        let grid = grid.upsample_bicubic2d(out, false, Some(sh), Some(sw));
        assert_eq!(out, [h0 as i64, w0 as i64], "position grid size");
        let patch_pos = grid.permute([0, 2, 3, 1]).reshape([1, -1, dim]);
        Tensor::cat(&[class_pos, patch_pos], 1)
    }

    /// Normalised images `[B, 3, H, W]` → CLS features `[B, embed_dim]`.
    pub fn forward(&self, x: &Tensor, pass: &mut Pass) -> Tensor {
        let mut t = self.prepare_tokens(x);
        for blk in &self.blocks {
            t = blk.forward(&t, pass);
        }
        self.norm.forward(&t).select(1, 0)
    }

    /// DINO's `get_last_selfattention`: the last block's attention matrix
    /// `[B, heads, 1 + patches, 1 + patches]` (row 0 is the CLS token's attention), in eval mode.
    pub fn last_selfattention(&self, x: &Tensor) -> Tensor {
        let mut t = self.prepare_tokens(x);
        let (last, rest) = self.blocks.split_last().expect("a ViT has blocks");
        for blk in rest {
            t = blk.forward(&t, &mut Pass::eval());
        }
        last.attn.weights(&last.norm1.forward(&t))
    }

    /// DINO's `get_intermediate_layers`: the final-normed tokens `[B, 1 + patches, D]` after each
    /// of the last `n` blocks (oldest first), in eval mode; the linear protocol's input.
    pub fn intermediate_layers(&self, x: &Tensor, n: usize) -> Vec<Tensor> {
        let mut t = self.prepare_tokens(x);
        let depth = self.blocks.len();
        let mut out = Vec::with_capacity(n);
        for (i, blk) in self.blocks.iter().enumerate() {
            t = blk.forward(&t, &mut Pass::eval());
            if depth - i <= n {
                out.push(self.norm.forward(&t));
            }
        }
        out
    }

    /// DINO's `prepare_tokens`: patch embedding, CLS token, position embedding interpolated to
    /// the image's patch grid, `[B, 1 + patches, D]`.
    pub fn prepare_tokens(&self, x: &Tensor) -> Tensor {
        let (b, _, h, w) = x.size4().expect("images [B, 3, H, W]");
        let p = self.dims.patch_size;
        let tokens = x
            .conv2d(
                &self.patch_w,
                Some(&self.patch_b),
                [p, p],
                [0, 0],
                [1, 1],
                1,
            )
            .flatten(2, -1)
            .transpose(1, 2);
        let cls = self.cls_token.expand([b, -1, -1], false);
        let t = Tensor::cat(&[cls, tokens], 1);
        let npatch = t.size()[1] - 1;
        &t + self.interpolate_pos_encoding(npatch, h, w)
    }
}
