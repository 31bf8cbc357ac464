//! Matplotlib's viridis (the default `plt.imsave` colormap of DINO's visualize_attention.py),
//! as the degree-6 polynomial fit by Matt Zucker (within 4 levels of 255 of matplotlib's table
//! at its ends and middle, `tests/eval_protocols.rs`), and a fixed palette for per-head masks.

const C: [[f64; 3]; 7] = [
    [
        0.277_727_327_223_417_7,
        0.005_407_344_544_966_578,
        0.334_099_805_335_306_1,
    ],
    [
        0.105_093_043_108_577_4,
        1.404_613_529_898_575,
        1.384_590_162_594_685,
    ],
    [
        -0.330_861_828_725_556_3,
        0.214_847_559_468_213,
        0.095_095_163_028_236_59,
    ],
    [
        -4.634_230_498_983_486,
        -5.799_100_973_351_585,
        -19.332_440_956_279_87,
    ],
    [
        6.228_269_936_347_081,
        14.179_933_366_805_09,
        56.690_552_600_681_05,
    ],
    [
        4.776_384_997_670_288,
        -13.745_145_377_746_01,
        -65.353_032_633_372_34,
    ],
    [
        -5.435_455_855_934_631,
        4.645_852_612_178_535,
        26.312_435_249_583_2,
    ],
];

/// Viridis colour of `t` in [0, 1] (clamped).
pub fn viridis(t: f64) -> [u8; 3] {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mut out = [0u8; 3];
    for (ch, o) in out.iter_mut().enumerate() {
        let v = C.iter().rev().fold(0.0, |acc, c| acc * t + c[ch]);
        *o = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    }
    out
}

/// A distinct saturated colour per head (golden-angle hues), for mask overlays.
pub fn head_colour(head: usize) -> [u8; 3] {
    let h = (head as f64 * 0.618_033_988_749_895).fract() * 6.0;
    let x = 1.0 - (h % 2.0 - 1.0).abs();
    let (r, g, b) = match h as u32 {
        0 => (1.0, x, 0.0),
        1 => (x, 1.0, 0.0),
        2 => (0.0, 1.0, x),
        3 => (0.0, x, 1.0),
        4 => (x, 0.0, 1.0),
        _ => (1.0, 0.0, x),
    };
    [(r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8]
}
