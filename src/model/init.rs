//! Initialisers matching PyTorch/timm, so a fresh network has the same statistics as DINO's.

use tch::{Device, Kind, Tensor};

/// timm's `trunc_normal_(t, std, a=-2, b=2)`: inverse-CDF sampling of a normal truncated to
/// the *absolute* interval [a, b] (not in units of std — that is timm's convention).
pub fn trunc_normal(dims: &[i64], std: f64, device: Device) -> Tensor {
    let (mean, a, b) = (0.0f64, -2.0f64, 2.0f64);
    let norm_cdf = |x: f64| (1.0 + libm_erf(x / std::f64::consts::SQRT_2)) / 2.0;
    let l = norm_cdf((a - mean) / std);
    let u = norm_cdf((b - mean) / std);
    let mut t = Tensor::empty(dims, (Kind::Float, device));
    let _ = t.uniform_(2.0 * l - 1.0, 2.0 * u - 1.0);
    let _ = t.erfinv_();
    let _ = t.g_mul_scalar_(std * std::f64::consts::SQRT_2);
    let _ = t.g_add_scalar_(mean);
    t.clamp(a, b)
}

/// `nn.Linear`'s default init (kaiming_uniform with a=√5 ⇒ U(±1/√fan_in)), used for DINO's
/// weight-normalised last layer, which is created after `_init_weights` runs.
pub fn linear_default(out_dim: i64, in_dim: i64, device: Device) -> Tensor {
    let bound = 1.0 / (in_dim as f64).sqrt();
    Tensor::empty([out_dim, in_dim], (Kind::Float, device)).uniform_(-bound, bound)
}

/// torchvision ResNet conv init: kaiming_normal_(mode="fan_out", nonlinearity="relu").
pub fn kaiming_normal_fan_out(dims: &[i64], device: Device) -> Tensor {
    let fan_out: i64 = dims[0] * dims.iter().skip(2).product::<i64>();
    let std = (2.0 / fan_out as f64).sqrt();
    Tensor::randn(dims, (Kind::Float, device)) * std
}

/// erf via the Numerical Recipes `erfcc` Chebyshev fit (relative error < 1.2e-7). Only used
/// for the two truncation bounds; at std 0.02 they sit 100σ out, where it returns exactly ±1.
fn libm_erf(x: f64) -> f64 {
    /// The fit's coefficients of t¹ … t⁹, evaluated by Horner's rule below (a loop rather than
    /// nine nested parentheses, which rustfmt takes half a minute to lay out).
    const COEFFS: [f64; 9] = [
        1.000_023_68,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_203_98,
        1.488_515_87,
        -0.822_152_23,
        0.170_872_77,
    ];
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let (last, rest) = COEFFS.split_last().expect("nine coefficients");
    let horner = rest.iter().rev().fold(*last, |acc, c| c + t * acc);
    let y = 1.0 - t * (-x * x - 1.265_512_23 + t * horner).exp();
    if x >= 0.0 {
        y
    } else {
        -y
    }
}
