//! Bad-input tests for `decode_image`: every malformed or unusual file must become a correct
//! frame or an error, never a panic or an out-of-memory abort.

use super::*;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};

const LIMIT: u64 = 64 * 1024 * 1024;

/// A smooth, asymmetric test picture: red grows to the right, green downwards.
fn gradient(w: u32, h: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            v.extend_from_slice(&[(x * 255 / w.max(2)) as u8, (y * 255 / h.max(2)) as u8, 60]);
        }
    }
    v
}

fn png(w: u32, h: u32, data: &[u8], color: ExtendedColorType) -> Vec<u8> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(data, w, h, color)
        .unwrap();
    out
}

fn jpeg(w: u32, h: u32, data: &[u8], exif: Option<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = JpegEncoder::new_with_quality(&mut out, 95);
    if let Some(exif) = exif {
        enc.set_exif_metadata(exif).unwrap();
    }
    enc.write_image(data, w, h, ExtendedColorType::Rgb8)
        .unwrap();
    out
}

/// A minimal little-endian TIFF/EXIF block holding only the orientation tag.
fn exif_orientation(value: u16) -> Vec<u8> {
    let mut v = b"II*\0".to_vec();
    v.extend_from_slice(&8u32.to_le_bytes()); // first IFD offset
    v.extend_from_slice(&1u16.to_le_bytes()); // one entry
    v.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    v.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    v.extend_from_slice(&1u32.to_le_bytes()); // count
    v.extend_from_slice(&value.to_le_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    v
}

fn px(f: &Frame, x: u32, y: u32) -> [u8; 3] {
    let i = ((y * f.width + x) * 3) as usize;
    f.data()[i..i + 3].try_into().unwrap()
}

#[test]
fn empty_file_is_empty_error() {
    assert!(matches!(decode_image(&[], LIMIT), Err(DecodeError::Empty)));
}

#[test]
fn garbage_is_an_error() {
    assert!(matches!(
        decode_image(b"not an image at all", LIMIT),
        Err(DecodeError::Image(_))
    ));
}

#[test]
fn rgb_png_round_trips_exactly() {
    let data = gradient(31, 17);
    let f = decode_image(&png(31, 17, &data, ExtendedColorType::Rgb8), LIMIT).unwrap();
    assert_eq!((f.width, f.height), (31, 17));
    assert_eq!(f.data(), &data[..]);
}

#[test]
fn jpeg_decodes_close_to_source() {
    let data = gradient(64, 48);
    let f = decode_image(&jpeg(64, 48, &data, None), LIMIT).unwrap();
    assert_eq!((f.width, f.height), (64, 48));
    let mean_err: f64 = f
        .data()
        .iter()
        .zip(&data)
        .map(|(&a, &b)| (a as f64 - b as f64).abs())
        .sum::<f64>()
        / data.len() as f64;
    assert!(mean_err < 3.0, "mean abs error {mean_err}");
}

#[test]
fn grayscale_png_is_replicated_to_three_channels() {
    let grey: Vec<u8> = (0..20u8).map(|i| i * 12).collect();
    let f = decode_image(&png(5, 4, &grey, ExtendedColorType::L8), LIMIT).unwrap();
    for (i, &g) in grey.iter().enumerate() {
        assert_eq!(&f.data()[i * 3..i * 3 + 3], &[g, g, g]);
    }
}

#[test]
fn grayscale_jpeg_decodes() {
    let grey = vec![128u8; 16 * 16];
    let mut out = Vec::new();
    JpegEncoder::new(&mut out)
        .write_image(&grey, 16, 16, ExtendedColorType::L8)
        .unwrap();
    let f = decode_image(&out, LIMIT).unwrap();
    assert_eq!((f.width, f.height), (16, 16));
    assert!(f.data().iter().all(|&v| v.abs_diff(128) <= 2));
}

#[test]
fn alpha_is_dropped_not_composited() {
    let rgba: Vec<u8> = [10u8, 20, 30, 0, 200, 100, 50, 128].repeat(2);
    let f = decode_image(&png(2, 2, &rgba, ExtendedColorType::Rgba8), LIMIT).unwrap();
    assert_eq!(
        f.data(),
        &[10, 20, 30, 200, 100, 50, 10, 20, 30, 200, 100, 50]
    );
    let la = [7u8, 0, 9, 255];
    let f = decode_image(&png(2, 1, &la, ExtendedColorType::La8), LIMIT).unwrap();
    assert_eq!(f.data(), &[7, 7, 7, 9, 9, 9]);
}

#[test]
fn sixteen_bit_png_is_scaled_to_eight() {
    // PNG stores 16-bit samples big-endian; the encoder takes native-endian u16 bytes.
    let samples: [u16; 6] = [0, 65535, 32896, 257, 1000, 65000];
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_ne_bytes()).collect();
    let f = decode_image(&png(2, 1, &bytes, ExtendedColorType::Rgb16), LIMIT).unwrap();
    let expect: Vec<u8> = samples
        .iter()
        .map(|&s| ((s as f64) / 257.0).round() as u8)
        .collect();
    assert_eq!(f.data(), &expect[..]);
}

#[test]
fn cmyk_jpeg_is_converted_to_rgb() {
    // 8x8 CMYK JPEG written by PIL (Adobe inverted CMYK) of a solid red-ish colour
    // RGB (200, 40, 40); regenerate with `augment_ref.py cmyk` (tests/reference).
    let bytes = include_bytes!("../../tests/reference/cmyk_8x8.jpg");
    let f = decode_image(bytes, LIMIT).unwrap();
    assert_eq!((f.width, f.height), (8, 8));
    let [r, g, b] = px(&f, 4, 4);
    assert!(
        r.abs_diff(200) <= 12 && g.abs_diff(40) <= 12 && b.abs_diff(40) <= 12,
        "{r} {g} {b}"
    );
}

#[test]
fn truncated_and_corrupt_files_do_not_panic() {
    let data = gradient(64, 48);
    for file in [
        jpeg(64, 48, &data, None),
        png(64, 48, &data, ExtendedColorType::Rgb8),
    ] {
        for cut in [2, 10, 30, file.len() / 3, file.len() / 2, file.len() - 1] {
            if let Ok(f) = decode_image(&file[..cut], LIMIT) {
                assert_eq!(f.data().len(), (f.width * f.height * 3) as usize);
            }
        }
        let mut bad = file.clone();
        for i in (20..bad.len()).step_by(7) {
            bad[i] ^= 0x5A;
        }
        if let Ok(f) = decode_image(&bad, LIMIT) {
            assert_eq!(f.data().len(), (f.width * f.height * 3) as usize);
        }
    }
}

#[test]
fn truncated_png_is_an_error() {
    let data = gradient(64, 48);
    let file = png(64, 48, &data, ExtendedColorType::Rgb8);
    assert!(decode_image(&file[..file.len() / 2], LIMIT).is_err());
}

/// A PNG signature and IHDR chunk claiming `w × h` RGB8, with a valid CRC, followed by a
/// tiny IDAT and IEND: what a decompression bomb's header looks like.
fn png_header_claiming(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.finalize().to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit, RGB, deflate, no filter, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn decompression_bomb_is_refused_from_the_header() {
    let bomb = png_header_claiming(60_000, 60_000);
    match decode_image(&bomb, LIMIT) {
        Err(DecodeError::TooLarge {
            width: 60_000,
            height: 60_000,
            pixels,
            limit,
        }) => {
            assert_eq!(pixels, 3_600_000_000);
            assert_eq!(limit, LIMIT);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Even with the pixel limit lifted, the allocation guard refuses rather than aborting.
    assert!(decode_image(&bomb, u64::MAX / 16).is_err());
}

#[test]
fn pixel_limit_is_inclusive() {
    let data = gradient(10, 10);
    let file = png(10, 10, &data, ExtendedColorType::Rgb8);
    assert!(decode_image(&file, 100).is_ok());
    assert!(matches!(
        decode_image(&file, 99),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn exif_orientation_is_applied_to_jpeg() {
    // A 4x2 image, left half black and right half white; orientation 6 = rotate 90° clockwise.
    let mut data = Vec::new();
    for _y in 0..16 {
        for x in 0..32 {
            let v = if x < 16 { 0 } else { 255 };
            data.extend_from_slice(&[v, v, v]);
        }
    }
    let plain = decode_image(&jpeg(32, 16, &data, None), LIMIT).unwrap();
    assert_eq!((plain.width, plain.height), (32, 16));
    let rotated = decode_image(&jpeg(32, 16, &data, Some(exif_orientation(6))), LIMIT).unwrap();
    assert_eq!((rotated.width, rotated.height), (16, 32));
    // After a clockwise quarter turn the former left (black) half is on top.
    assert!(px(&rotated, 8, 4)[0] < 30, "top should be black");
    assert!(px(&rotated, 8, 28)[0] > 225, "bottom should be white");
}

#[test]
fn exif_orientation_is_applied_to_png() {
    let data = gradient(6, 3);
    let mut out = Vec::new();
    let mut enc = PngEncoder::new(&mut out);
    enc.set_exif_metadata(exif_orientation(3)).unwrap(); // rotate 180°
    enc.write_image(&data, 6, 3, ExtendedColorType::Rgb8)
        .unwrap();
    let f = decode_image(&out, LIMIT).unwrap();
    assert_eq!((f.width, f.height), (6, 3));
    assert_eq!(px(&f, 0, 0), data[(2 * 6 + 5) * 3..(2 * 6 + 5) * 3 + 3]);
}

/// A real JPEG whose frame header is patched to claim 60000×60000: refused from the header
/// (by libjpeg-turbo's header read when present, else by the image crate's guards), never
/// decoded into a 10 GB buffer.
#[test]
fn jpeg_decompression_bomb_is_refused_from_the_header() {
    let mut file = jpeg(16, 16, &gradient(16, 16), None);
    let sof = file.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    // SOF0: marker, length (2), precision (1), height (2), width (2).
    file[sof + 5..sof + 7].copy_from_slice(&60_000u16.to_be_bytes());
    file[sof + 7..sof + 9].copy_from_slice(&60_000u16.to_be_bytes());
    let result = decode_image(&file, LIMIT);
    assert!(result.is_err(), "a 60000x60000 header must be refused");
    if cfg!(turbojpeg) {
        assert!(
            matches!(
                result,
                Err(DecodeError::TooLarge {
                    width: 60_000,
                    height: 60_000,
                    ..
                })
            ),
            "{result:?}"
        );
    }
}

/// The fast JPEG path and the image crate agree on an ordinary JPEG (two IDCTs and chroma
/// upsamplers, so within a few levels), and EXIF orientation is the same on both.
#[cfg(turbojpeg)]
#[test]
fn turbojpeg_agrees_with_the_image_crate() {
    let data = gradient(64, 48);
    for exif in [None, Some(exif_orientation(6))] {
        let file = jpeg(64, 48, &data, exif);
        let fast = turbo::decode(&file, LIMIT)
            .unwrap()
            .expect("libjpeg-turbo decodes it");
        let img = image::load_from_memory(&file).unwrap();
        let mut img = img;
        if let Some(o) = turbo_test_orientation(&file) {
            img.apply_orientation(o);
        }
        let slow = img.into_rgb8();
        assert_eq!((fast.width, fast.height), slow.dimensions());
        let max = fast
            .data()
            .iter()
            .zip(slow.as_raw())
            .map(|(&a, &b)| a.abs_diff(b))
            .max()
            .unwrap();
        assert!(max <= 4, "max difference {max}");
    }
}

#[cfg(turbojpeg)]
fn turbo_test_orientation(file: &[u8]) -> Option<image::metadata::Orientation> {
    use image::ImageDecoder;
    let mut d = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(file)).ok()?;
    d.orientation().ok()
}

#[cfg(turbojpeg)]
#[test]
fn cmyk_and_truncated_jpegs_fall_back_to_the_image_crate() {
    let cmyk = include_bytes!("../../tests/reference/cmyk_8x8.jpg");
    assert!(turbo::decode(cmyk, LIMIT).unwrap().is_none());
    let file = jpeg(64, 48, &gradient(64, 48), None);
    assert!(turbo::decode(&file[..file.len() / 2], LIMIT)
        .unwrap()
        .is_none());
    assert!(turbo::decode(b"\x89PNG", LIMIT).unwrap().is_none());
}

/// Crop-aware decoding at 1/8 of a smooth picture whose size is not a multiple of 8, under
/// every EXIF orientation: each reduced pixel holds the full-size picture's value at the point
/// the [`Reduction`] maps it from. A mirrored axis needs the rounding offset: without it the
/// reduced pixels sit 5 full-size pixels (6+ levels of the gradient) away.
#[cfg(turbojpeg)]
#[test]
fn reduced_decode_maps_back_onto_the_full_picture_under_every_orientation() {
    let (w, h) = (203u32, 157u32);
    let data = gradient(w, h);
    for exif in 1..=8u16 {
        let file = jpeg(w, h, &data, Some(exif_orientation(exif)));
        let full = decode_image(&file, LIMIT).unwrap();
        let (small, reduction) = decode_reduced(&file, LIMIT, |fw, fh| {
            assert_eq!(
                (fw, fh),
                (full.width, full.height),
                "upright size, exif {exif}"
            );
            0.125
        })
        .unwrap();
        assert_eq!(reduction.scale, Scale { num: 1, den: 8 }, "exif {exif}");
        assert_eq!(reduction.full, (full.width, full.height));
        assert_eq!((small.width, small.height), reduction.reduced_size());
        // The worse of the red and green channels' mean errors (each grows along one axis).
        let error = |offset: [f64; 2]| {
            let (mut sum, mut n) = ([0.0f64; 2], 0.0);
            // Interior pixels only: the edge blocks hold the encoder's padding.
            for j in 1..small.height - 1 {
                for i in 1..small.width - 1 {
                    let x = (i as f64 + 0.5 - offset[0]) * 8.0;
                    let y = (j as f64 + 0.5 - offset[1]) * 8.0;
                    let (x, y) = (x as u32, y as u32);
                    if x >= full.width || y >= full.height {
                        continue;
                    }
                    let (a, b) = (px(&small, i, j), px(&full, x, y));
                    for c in 0..2 {
                        sum[c] += a[c].abs_diff(b[c]) as f64;
                    }
                    n += 1.0;
                }
            }
            sum[0].max(sum[1]) / n
        };
        let mapped = error(reduction.offset);
        assert!(
            mapped < 2.0,
            "exif {exif}: mean error {mapped:.2} with {reduction:?}"
        );
        if reduction.offset != [0.0, 0.0] {
            let unmapped = error([0.0, 0.0]);
            assert!(
                unmapped > 3.0,
                "exif {exif}: the offset matters ({unmapped:.2})"
            );
        }
    }
}

/// Crop-aware decoding never asks for a reduction the crops did not allow, and a file with no
/// reduced decode (PNG) comes back whole without drawing any crops.
#[test]
fn reduced_decode_respects_the_minimum_scale_and_skips_pngs() {
    let data = gradient(400, 300);
    let file = jpeg(400, 300, &data, None);
    for (min, expect) in [(0.2, 4u32), (0.3, 2), (0.5, 2), (0.6, 1), (1.0, 1)] {
        let (frame, r) = decode_reduced(&file, LIMIT, |_, _| min).unwrap();
        if cfg!(turbojpeg) {
            assert_eq!(r.scale.den / r.scale.num, expect, "min {min}");
        }
        assert!(r.scale.value() >= min, "min {min}: {r:?}");
        assert_eq!((frame.width, frame.height), r.reduced_size());
    }
    let (frame, r) = decode_reduced(&file, LIMIT, |_, _| 1.0).unwrap();
    assert_eq!(frame.data(), decode_image(&file, LIMIT).unwrap().data());
    assert!(r.is_identity());
    let png = png(40, 30, &gradient(40, 30), ExtendedColorType::Rgb8);
    let (frame, r) =
        decode_reduced(&png, LIMIT, |_, _| panic!("no crops are drawn for a PNG")).unwrap();
    assert!(r.is_identity() && r.full == (40, 30));
    assert_eq!(frame.data(), &gradient(40, 30)[..]);
}
