//! Pictures: attention maps and PCA of patch features over images, and run reports.

pub mod attention;
pub mod colormap;
pub mod report;

use std::path::Path;

/// Writes an RGB image as PNG, naming the file in the error.
pub fn save_png(img: &image::RgbImage, path: &Path) -> Result<(), VizError> {
    img.save(path).map_err(|e| VizError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Nearest-neighbour enlargement by an integer factor (keeps patch boundaries sharp).
pub fn zoom(img: &image::RgbImage, factor: u32) -> image::RgbImage {
    if factor <= 1 {
        return img.clone();
    }
    image::imageops::resize(
        img,
        img.width() * factor,
        img.height() * factor,
        image::imageops::FilterType::Nearest,
    )
}

#[derive(Debug, thiserror::Error)]
pub enum VizError {
    #[error("{path}: {message}")]
    Write {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("{path}: {message}")]
    Read {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}
