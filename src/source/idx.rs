//! IDX files of the MNIST family (MNIST, Fashion-MNIST, KMNIST), plain or gzipped.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{gray_to_rgb, IdxSplit, IndexedSource, Payload, SourceError};
use crate::frame::Frame;

pub struct IdxSource {
    images_path: PathBuf,
    images: Vec<u8>,
    labels: Vec<u8>,
    count: usize,
    rows: u32,
    cols: u32,
}

impl IdxSource {
    /// Reads `{prefix}-images-idx3-ubyte[.gz]` and `{prefix}-labels-idx1-ubyte[.gz]` from `dir`,
    /// where the prefix is `train` or `t10k`. The whole set is small enough to hold in memory.
    pub fn open(dir: &Path, split: IdxSplit, limit: Option<u64>) -> Result<Self, SourceError> {
        let prefix = match split {
            IdxSplit::Train => "train",
            IdxSplit::Test => "t10k",
        };
        let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        let images = read_maybe_gz(&images_path)?;
        let labels = read_maybe_gz(&labels_path)?;
        let corrupt = |path: &Path, message: String| SourceError::Corrupt {
            path: path.display().to_string(),
            message,
        };

        let (dims, image_data) =
            parse_idx(&images, 0x08, 3).map_err(|m| corrupt(&images_path, m))?;
        let (ldims, label_data) =
            parse_idx(&labels, 0x08, 1).map_err(|m| corrupt(&labels_path, m))?;
        let (n, rows, cols) = (dims[0] as usize, dims[1], dims[2]);
        if ldims[0] as usize != n {
            return Err(corrupt(
                &labels_path,
                format!("{} labels for {} images", ldims[0], n),
            ));
        }
        let count = limit.map_or(n, |l| n.min(l as usize));
        Ok(IdxSource {
            images_path,
            images: image_data[..count * (rows * cols) as usize].to_vec(),
            labels: label_data[..count].to_vec(),
            count,
            rows,
            cols,
        })
    }
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf, SourceError> {
    for name in [stem.to_string(), format!("{stem}.gz")] {
        let p = dir.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(SourceError::Open {
        path: dir.join(stem),
        message: "no such IDX file (.gz or plain)".into(),
    })
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, SourceError> {
    let raw = std::fs::read(path).map_err(|source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| SourceError::Corrupt {
                path: path.display().to_string(),
                message: format!("gzip: {e}"),
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX header (magic `00 00 type ndims`, big-endian u32 dims) and checks the size.
fn parse_idx(data: &[u8], dtype: u8, ndims: usize) -> Result<(Vec<u32>, &[u8]), String> {
    if data.len() < 4 || data[0] != 0 || data[1] != 0 {
        return Err("not an IDX file (bad magic)".into());
    }
    if data[2] != dtype || data[3] as usize != ndims {
        return Err(format!(
            "expected type {dtype:#x} with {ndims} dims, got type {:#x} with {} dims",
            data[2], data[3]
        ));
    }
    let header = 4 + 4 * ndims;
    if data.len() < header {
        return Err("truncated header".into());
    }
    let dims: Vec<u32> = (0..ndims)
        .map(|i| u32::from_be_bytes(data[4 + 4 * i..8 + 4 * i].try_into().unwrap()))
        .collect();
    let expected: usize = dims.iter().map(|&d| d as usize).product();
    let body = &data[header..];
    if body.len() < expected {
        return Err(format!(
            "truncated: {} bytes of data, header says {}",
            body.len(),
            expected
        ));
    }
    Ok((dims, &body[..expected]))
}

impl IndexedSource for IdxSource {
    fn len(&self) -> u64 {
        self.count as u64
    }

    fn read(&self, id: u64) -> Result<Payload, SourceError> {
        let px = (self.rows * self.cols) as usize;
        let gray = &self.images[id as usize * px..(id as usize + 1) * px];
        Ok(Payload::Decoded(Frame::from_rgb(
            self.cols,
            self.rows,
            gray_to_rgb(gray),
        )))
    }

    fn label(&self, id: u64) -> Option<u32> {
        Some(self.labels[id as usize] as u32)
    }

    fn num_classes(&self) -> Option<u32> {
        Some(
            self.labels
                .iter()
                .copied()
                .max()
                .map_or(0, |m| m as u32 + 1),
        )
    }

    fn describe(&self, id: u64) -> String {
        format!("{}#{id}", self.images_path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx_bytes(dtype: u8, dims: &[u32], body: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, dtype, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn reads_plain_and_gzipped_idx_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let pixels: Vec<u8> = (0..2 * 3 * 2).map(|i| i as u8 * 10).collect();
        std::fs::write(
            dir.path().join("t10k-images-idx3-ubyte"),
            idx_bytes(8, &[2, 3, 2], &pixels),
        )
        .unwrap();
        let labels = idx_bytes(8, &[2], &[7, 3]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &labels).unwrap();
        std::fs::write(
            dir.path().join("t10k-labels-idx1-ubyte.gz"),
            gz.finish().unwrap(),
        )
        .unwrap();

        let src = IdxSource::open(dir.path(), IdxSplit::Test, None).unwrap();
        assert_eq!(src.len(), 2);
        assert_eq!(src.label(1), Some(3));
        let Payload::Decoded(f) = src.read(1).unwrap() else {
            panic!("decoded expected")
        };
        assert_eq!((f.width, f.height), (2, 3));
        assert_eq!(&f.data()[..6], &[60, 60, 60, 70, 70, 70]);
    }

    #[test]
    fn truncated_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("train-images-idx3-ubyte"),
            idx_bytes(8, &[5, 28, 28], &[0; 100]),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("train-labels-idx1-ubyte"),
            idx_bytes(8, &[5], &[0; 5]),
        )
        .unwrap();
        let err = IdxSource::open(dir.path(), IdxSplit::Train, None)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("train-images-idx3-ubyte") && err.contains("truncated"),
            "{err}"
        );
    }
}
