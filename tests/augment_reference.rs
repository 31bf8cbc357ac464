//! Reference tests: every augmentation op against torchvision on real photographs.
//!
//! `tests/reference/augment_ref.py` writes scikit-image's astronaut, chelsea and coffee as PNG,
//! then computes each case below with torchvision (PIL path for crop/resize as DINO does,
//! uint8 tensor kernels for the photometric ops). Python comes from `DINO_STREAM_PYTHON`, else
//! `$CARGO_MANIFEST_DIR/.venv/bin/python`; without it these tests FAIL (CI installs the venv).
//!
//! Tolerances are per case (max and mean absolute difference in levels). They are tight
//! enough that a wrong formula fails, and `tolerances_reject_wrong_formulas` proves it by
//! feeding deliberately wrong variants through the same comparison.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use dino_stream::augment::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, eval_view, gaussian_blur,
    grayscale, resized_crop, solarize, AugmentConfig, CropRect, GaussianBlur, JitterOp,
    JitterParams, MultiCrop, Resampler, ViewParams,
};
use dino_stream::decode::decode_image;
use dino_stream::frame::Frame;
use serde_json::{json, Value};

const IMAGES: [&str; 3] = ["astronaut", "chelsea", "coffee"];

struct Reference {
    _dir: tempfile::TempDir,
    images: HashMap<&'static str, Frame>,
    outputs: HashMap<String, Frame>,
    cases: Vec<Value>,
}

fn python() -> PathBuf {
    match std::env::var_os("DINO_STREAM_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    }
}

fn run_python(args: &[&Path]) {
    let py = python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/augment_ref.py");
    let out = Command::new(&py).arg(&script).args(args).output().unwrap_or_else(|e| {
        panic!(
            "reference Python {py:?} cannot run ({e}). These tests need a Python with torch, \
             torchvision and scikit-image: create .venv in the crate root or set DINO_STREAM_PYTHON."
        )
    });
    assert!(
        out.status.success(),
        "reference script failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn load_png(path: &Path) -> Frame {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    decode_image(&bytes, u64::MAX / 16).unwrap()
}

/// Runs Python twice (images, then every case) and loads everything, once per test binary.
fn reference() -> &'static Reference {
    static REF: OnceLock<Reference> = OnceLock::new();
    REF.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        run_python(&[Path::new("images"), dir.path()]);
        let images: HashMap<&'static str, Frame> = IMAGES
            .iter()
            .map(|&n| (n, load_png(&dir.path().join(format!("{n}.png")))))
            .collect();
        let cases = cases(&images);
        let cases_path = dir.path().join("cases.json");
        std::fs::write(&cases_path, serde_json::to_vec(&cases).unwrap()).unwrap();
        run_python(&[Path::new("run"), &cases_path, dir.path()]);
        let outputs = cases
            .iter()
            .map(|c| {
                let name = c["name"].as_str().unwrap().to_string();
                let f = load_png(&dir.path().join(format!("{name}.png")));
                (name, f)
            })
            .collect();
        Reference {
            _dir: dir,
            images,
            outputs,
            cases,
        }
    })
}

fn op_name(op: JitterOp) -> &'static str {
    match op {
        JitterOp::Brightness => "brightness",
        JitterOp::Contrast => "contrast",
        JitterOp::Saturation => "saturation",
        JitterOp::Hue => "hue",
    }
}

fn jitter_json(p: &JitterParams) -> Value {
    json!({
        "order": p.order.iter().map(|&o| op_name(o)).collect::<Vec<_>>(),
        "brightness": p.brightness, "contrast": p.contrast,
        "saturation": p.saturation, "hue": p.hue,
    })
}

fn rect_json(r: CropRect, size: u32) -> Value {
    json!({"top": r.top, "left": r.left, "height": r.height, "width": r.width, "size": size})
}

fn merge(mut a: Value, b: Value) -> Value {
    a.as_object_mut()
        .unwrap()
        .extend(b.as_object().unwrap().clone());
    a
}

/// Every case, with a name, an image and an op with explicit parameters.
fn cases(images: &HashMap<&'static str, Frame>) -> Vec<Value> {
    let mut v = Vec::new();
    let mut add = |name: String, image: &str, body: Value| {
        v.push(merge(json!({"name": name, "image": image}), body));
    };
    for img in IMAGES {
        for f in [0.6, 0.93, 1.4] {
            add(
                format!("brightness_{img}_{f}"),
                img,
                json!({"op": "brightness", "factor": f}),
            );
            add(
                format!("contrast_{img}_{f}"),
                img,
                json!({"op": "contrast", "factor": f}),
            );
        }
        for f in [0.0, 0.8, 1.2] {
            add(
                format!("saturation_{img}_{f}"),
                img,
                json!({"op": "saturation", "factor": f}),
            );
        }
        for f in [-0.1, -0.03, 0.07, 0.1, 0.5] {
            add(
                format!("hue_{img}_{f}"),
                img,
                json!({"op": "hue", "factor": f}),
            );
        }
        add(format!("grayscale_{img}"), img, json!({"op": "grayscale"}));
        add(
            format!("solarize_{img}"),
            img,
            json!({"op": "solarize", "threshold": 128}),
        );
        for s in [0.1, 0.5, 1.3, 2.0] {
            add(
                format!("blur_{img}_{s}"),
                img,
                json!({"op": "blur", "sigma": s}),
            );
        }
        add(
            format!("eval_{img}"),
            img,
            json!({"op": "eval", "size": 224}),
        );
    }
    // Crops: shrink (antialiased), near-identity, upscale, flipped, non-square boxes.
    let crops = [
        (
            CropRect {
                top: 0,
                left: 0,
                height: 512,
                width: 512,
            },
            224,
            false,
        ),
        (
            CropRect {
                top: 37,
                left: 101,
                height: 300,
                width: 260,
            },
            224,
            true,
        ),
        (
            CropRect {
                top: 200,
                left: 10,
                height: 60,
                width: 45,
            },
            224,
            false,
        ),
        (
            CropRect {
                top: 5,
                left: 300,
                height: 150,
                width: 200,
            },
            96,
            true,
        ),
        (
            CropRect {
                top: 100,
                left: 100,
                height: 96,
                width: 96,
            },
            96,
            false,
        ),
    ];
    for (i, (r, size, flip)) in crops.into_iter().enumerate() {
        let body = merge(
            json!({"op": "resized_crop", "flip": flip}),
            rect_json(r, size),
        );
        add(format!("crop_astronaut_{i}"), "astronaut", body);
    }
    // Jitter compositions in given orders.
    let jit = [
        JitterParams {
            order: [
                JitterOp::Hue,
                JitterOp::Contrast,
                JitterOp::Brightness,
                JitterOp::Saturation,
            ],
            brightness: Some(1.31),
            contrast: Some(0.72),
            saturation: Some(1.17),
            hue: Some(-0.08),
        },
        JitterParams {
            order: [
                JitterOp::Saturation,
                JitterOp::Brightness,
                JitterOp::Hue,
                JitterOp::Contrast,
            ],
            brightness: Some(0.66),
            contrast: Some(1.38),
            saturation: Some(0.81),
            hue: Some(0.04),
        },
    ];
    for (i, p) in jit.iter().enumerate() {
        add(
            format!("jitter_coffee_{i}"),
            "coffee",
            merge(json!({"op": "jitter"}), jitter_json(p)),
        );
    }
    // Whole views with the parameters MultiCrop really draws (2 global + 8 local per image).
    let mc = MultiCrop::new(&AugmentConfig::default(), 7);
    for img in IMAGES {
        let f = &images[img];
        for view in 0..10 {
            let p = mc.view_params(f.width, f.height, 1, 99, view);
            add(format!("view_{img}_{view}"), img, view_json(&p));
        }
    }
    v
}

fn view_json(p: &ViewParams) -> Value {
    let body = json!({
        "op": "view", "flip": p.flip, "grayscale": p.grayscale,
        "blur_sigma": p.blur_sigma, "solarize": p.solarize,
        "jitter": p.jitter.as_ref().map(jitter_json),
    });
    merge(body, rect_json(p.rect, p.size))
}

/// Max and mean absolute difference in levels.
fn diff(a: &[u8], b: &[u8]) -> (u8, f64) {
    assert_eq!(a.len(), b.len(), "output sizes differ");
    let max = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| x.abs_diff(y))
        .max()
        .unwrap_or(0);
    let sum: u64 = a.iter().zip(b).map(|(&x, &y)| x.abs_diff(y) as u64).sum();
    (max, sum as f64 / a.len().max(1) as f64)
}

/// Computes a case with the Rust ops.
fn compute(case: &Value, images: &HashMap<&'static str, Frame>) -> Vec<u8> {
    let img = &images[case["image"].as_str().unwrap()];
    let f = |k: &str| case[k].as_f64().unwrap();
    let u = |k: &str| case[k].as_u64().unwrap() as u32;
    let mut buf = img.data().to_vec();
    match case["op"].as_str().unwrap() {
        "brightness" => adjust_brightness(&mut buf, f("factor")),
        "contrast" => adjust_contrast(&mut buf, f("factor")),
        "saturation" => adjust_saturation(&mut buf, f("factor")),
        "hue" => adjust_hue(&mut buf, f("factor")),
        "grayscale" => grayscale(&mut buf),
        "solarize" => solarize(&mut buf, u("threshold") as u8),
        "blur" => gaussian_blur(img.data(), img.width, img.height, f("sigma"), &mut buf),
        "eval" => buf = eval_view(img, u("size")).unwrap(),
        "jitter" => parse_jitter(case).apply(&mut buf),
        "resized_crop" => {
            buf = resized_crop(img, parse_rect(case), u("size"), u("size")).unwrap();
            if case["flip"].as_bool().unwrap() {
                dino_stream::augment::hflip(&mut buf, u("size"));
            }
        }
        "view" => {
            let p = ViewParams {
                rect: parse_rect(case),
                size: u("size"),
                flip: case["flip"].as_bool().unwrap(),
                jitter: (!case["jitter"].is_null()).then(|| parse_jitter(&case["jitter"])),
                grayscale: case["grayscale"].as_bool().unwrap(),
                blur_sigma: case["blur_sigma"].as_f64(),
                solarize: case["solarize"].as_bool().unwrap(),
            };
            buf = vec![0; (p.size * p.size * 3) as usize];
            p.render(
                img,
                &mut Resampler::new(),
                &mut GaussianBlur::new(),
                &mut buf,
            )
            .unwrap();
        }
        op => panic!("unknown op {op}"),
    }
    buf
}

fn parse_rect(c: &Value) -> CropRect {
    let u = |k: &str| c[k].as_u64().unwrap() as u32;
    CropRect {
        top: u("top"),
        left: u("left"),
        height: u("height"),
        width: u("width"),
    }
}

fn parse_jitter(c: &Value) -> JitterParams {
    let op = |s: &str| match s {
        "brightness" => JitterOp::Brightness,
        "contrast" => JitterOp::Contrast,
        "saturation" => JitterOp::Saturation,
        _ => JitterOp::Hue,
    };
    let order: Vec<JitterOp> = c["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| op(o.as_str().unwrap()))
        .collect();
    JitterParams {
        order: order.try_into().unwrap(),
        brightness: c["brightness"].as_f64(),
        contrast: c["contrast"].as_f64(),
        saturation: c["saturation"].as_f64(),
        hue: c["hue"].as_f64(),
    }
}

/// Compares every case whose name starts with `prefix` against the reference.
fn check(prefix: &str, max_tol: u8, mean_tol: f64) {
    let r = reference();
    let mut n = 0;
    let mut report = Vec::new();
    for case in r
        .cases
        .iter()
        .filter(|c| c["name"].as_str().unwrap().starts_with(prefix))
    {
        let name = case["name"].as_str().unwrap();
        let ours = compute(case, &r.images);
        let (max, mean) = diff(&ours, r.outputs[name].data());
        if let Some(dir) = std::env::var_os("DINO_STREAM_REF_DUMP") {
            // Debug aid: keep our output and the reference side by side as raw RGB8.
            std::fs::write(Path::new(&dir).join(format!("{name}.ours.rgb")), &ours).unwrap();
            std::fs::write(
                Path::new(&dir).join(format!("{name}.ref.rgb")),
                r.outputs[name].data(),
            )
            .unwrap();
        }
        report.push(format!("{name}: max {max} mean {mean:.4}"));
        assert!(
            max <= max_tol && mean < mean_tol,
            "{name}: max diff {max} (tolerance {max_tol}), mean {mean:.4} (tolerance {mean_tol})\n{}",
            report.join("\n")
        );
        n += 1;
    }
    assert!(n > 0, "no cases start with {prefix}");
    eprintln!("{}", report.join("\n"));
}

// Tolerances. Photometric ops reproduce torchvision's float32 arithmetic, luma constants and
// truncating casts, so they agree to the bit up to float summation order (one level, rarely).

#[test]
fn brightness_matches_torchvision() {
    check("brightness_", 1, 0.01);
}

#[test]
fn contrast_matches_torchvision() {
    check("contrast_", 1, 0.01);
}

#[test]
fn saturation_matches_torchvision() {
    check("saturation_", 1, 0.01);
}

#[test]
fn hue_matches_torchvision() {
    check("hue_", 1, 0.01);
}

#[test]
fn grayscale_matches_torchvision() {
    check("grayscale_", 1, 0.01);
}

#[test]
fn solarize_matches_torchvision() {
    check("solarize_", 0, 1e-9);
}

/// Separable float32 passes vs torchvision's 2-D float32 convolution: rounding-level only.
#[test]
fn gaussian_blur_matches_torchvision() {
    check("blur_", 1, 0.01);
}

/// fast_image_resize's Catmull-Rom convolution vs PIL's bicubic resize (both a = -0.5,
/// antialiased on shrink, horizontal pass first, 8-bit intermediate). fast_image_resize
/// quantises coefficients to i16 like Pillow-SIMD where Pillow keeps 22 bits, so at some
/// scale factors ~20% of values round one level apart (two after both passes).
const RESIZE_TOL: (u8, f64) = (2, 0.3);

#[test]
fn resized_crop_matches_torchvision_pil() {
    check("crop_", RESIZE_TOL.0, RESIZE_TOL.1);
}

#[test]
fn eval_view_matches_resize_and_center_crop() {
    check("eval_", RESIZE_TOL.0, RESIZE_TOL.1);
}

#[test]
fn jitter_composition_matches_torchvision() {
    check("jitter_", 1, 0.01);
}

/// Whole views with the parameters MultiCrop draws: checks the order of ops and the plumbing
/// of every parameter. The resize's one- or two-level differences pass through contrast
/// (x1.4) and, on near-grey pixels, a hue rotation, hence the wider per-value bound.
#[test]
fn whole_views_match_torchvision() {
    check("view_", 4, 0.3);
}

/// The comparisons above would catch the classic mistakes: each wrong variant here must land
/// outside the tolerance its test uses.
#[test]
fn tolerances_reject_wrong_formulas() {
    let r = reference();
    let img = &r.images["chelsea"];
    let refr = |name: &str| r.outputs[name].data();
    let fails = |ours: &[u8], name: &str, max_tol: u8, mean_tol: f64| {
        let (max, mean) = diff(ours, refr(name));
        assert!(
            max > max_tol || mean >= mean_tol,
            "wrong variant passed for {name}: {max} {mean}"
        );
    };
    // Channels swapped (BGR) before grayscale.
    let mut bgr: Vec<u8> = img
        .data()
        .chunks(3)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    grayscale(&mut bgr);
    fails(&bgr, "grayscale_chelsea", 1, 0.01);
    // Rec. 709 luma instead of 601-2.
    let rec709: Vec<u8> = img
        .data()
        .chunks(3)
        .flat_map(|p| {
            let g = (0.2126 * p[0] as f32 + 0.7152 * p[1] as f32 + 0.0722 * p[2] as f32) as u8;
            [g, g, g]
        })
        .collect();
    fails(&rec709, "grayscale_chelsea", 1, 0.01);
    // Sigma off by 20%.
    let mut b = vec![0; img.data().len()];
    gaussian_blur(img.data(), img.width, img.height, 1.3 * 1.2, &mut b);
    fails(&b, "blur_chelsea_1.3", 1, 0.01);
    // Hue rotated the wrong way.
    let mut h = img.data().to_vec();
    adjust_hue(&mut h, -0.07);
    fails(&h, "hue_chelsea_0.07", 1, 0.01);
    // Brightness 2% off.
    let mut br = img.data().to_vec();
    adjust_brightness(&mut br, 1.4 * 1.02);
    fails(&br, "brightness_chelsea_1.4", 1, 0.01);
    // Contrast around the RGB mean instead of the luma mean.
    let mut c = img.data().to_vec();
    let mean = c.iter().map(|&x| x as f64).sum::<f64>() / c.len() as f64;
    c.iter_mut()
        .for_each(|x| *x = (0.6 * *x as f64 + 0.4 * mean).clamp(0.0, 255.0) as u8);
    fails(&c, "contrast_chelsea_0.6", 1, 0.01);
}

#[test]
fn resize_tolerance_rejects_bilinear() {
    use fast_image_resize::images::{CroppedImage, Image, ImageRef};
    use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
    let r = reference();
    let img = &r.images["astronaut"];
    let src = ImageRef::new(img.width, img.height, img.data(), PixelType::U8x3).unwrap();
    let crop = CroppedImage::new(&src, 101, 37, 260, 300).unwrap();
    let mut out = Image::new(224, 224, PixelType::U8x3);
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new().resize(&crop, &mut out, &opts).unwrap();
    let mut buf = out.into_vec();
    dino_stream::augment::hflip(&mut buf, 224);
    let (max, mean) = diff(&buf, r.outputs["crop_astronaut_1"].data());
    assert!(
        max > 1 || mean >= 0.1,
        "bilinear passed as bicubic: {max} {mean}"
    );
}
