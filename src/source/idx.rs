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
        let images = read_maybe_gz(&images_path, 3)?;
        let labels = read_maybe_gz(&labels_path, 1)?;
        let corrupt = |path: &Path, message: String| SourceError::Corrupt {
            path: path.display().to_string(),
            message,
        };

        let (dims, image_data) =
            parse_idx(&images, 0x08, 3).map_err(|m| corrupt(&images_path, m))?;
        let (ldims, label_data) =
            parse_idx(&labels, 0x08, 1).map_err(|m| corrupt(&labels_path, m))?;
        let (n, rows, cols) = (dims[0] as usize, dims[1], dims[2]);
        if n > 0 && (rows == 0 || cols == 0) {
            return Err(corrupt(
                &images_path,
                format!("{n} images of {rows}x{cols} pixels"),
            ));
        }
        if ldims[0] as usize != n {
            return Err(corrupt(
                &labels_path,
                format!("{} labels for {} images", ldims[0], n),
            ));
        }
        let count = limit.map_or(n, |l| n.min(usize::try_from(l).unwrap_or(usize::MAX)));
        // parse_idx checked n × rows × cols against the data, so these products fit.
        let px = rows as usize * cols as usize;
        Ok(IdxSource {
            images_path,
            images: image_data[..count * px].to_vec(),
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

/// The most IDX data held in memory (the whole set is loaded): far above the MNIST family
/// (47 MB), far below what a crafted header or a gzip bomb could ask for.
pub const MAX_IDX_BYTES: u64 = 4 << 30;

/// Reads a plain or gzipped IDX file. Gzip is decompressed only as far as the header says the
/// file goes (header + the product of its dims, checked), never more than [`MAX_IDX_BYTES`]:
/// a gzip bomb or a lying header gets an error, not an allocation.
fn read_maybe_gz(path: &Path, ndims: usize) -> Result<Vec<u8>, SourceError> {
    let corrupt = |message: String| SourceError::Corrupt {
        path: path.display().to_string(),
        message,
    };
    let io = |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut reader = std::io::BufReader::new(file);
    let mut magic = [0u8; 2];
    let got = reader.read(&mut magic).map_err(io)?;
    let reader = std::io::Cursor::new(magic[..got].to_vec()).chain(reader);
    if magic[..got] != [0x1f, 0x8b] {
        if size > MAX_IDX_BYTES {
            return Err(corrupt(format!(
                "{size} bytes, more than the {MAX_IDX_BYTES} an IDX source holds in memory"
            )));
        }
        let mut out = Vec::new();
        reader
            .take(MAX_IDX_BYTES)
            .read_to_end(&mut out)
            .map_err(io)?;
        return Ok(out);
    }
    let gzip = |e: std::io::Error| corrupt(format!("gzip: {e}"));
    let mut decoder = flate2::read::GzDecoder::new(reader);
    let mut out = vec![0u8; 4 + 4 * ndims];
    if let Err(e) = decoder.read_exact(&mut out) {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            corrupt("truncated header".into())
        } else {
            gzip(e)
        });
    }
    let total = idx_len(&out, ndims)
        .map_err(corrupt)?
        .filter(|&t| t <= MAX_IDX_BYTES)
        .ok_or_else(|| {
            corrupt(format!(
                "the header's dims ask for more than the {MAX_IDX_BYTES} bytes an IDX source holds in memory"
            ))
        })?;
    decoder
        .take(total - out.len() as u64)
        .read_to_end(&mut out)
        .map_err(gzip)?;
    Ok(out)
}

/// Total length (header + data) an IDX header announces, checked; `None` when it overflows.
fn idx_len(header: &[u8], ndims: usize) -> Result<Option<u64>, String> {
    if header.len() < 4 + 4 * ndims || header[0] != 0 || header[1] != 0 {
        return Err("not an IDX file (bad magic)".into());
    }
    let mut dims = (0..ndims).map(|i| {
        u32::from_be_bytes([
            header[4 + 4 * i],
            header[5 + 4 * i],
            header[6 + 4 * i],
            header[7 + 4 * i],
        ]) as u64
    });
    Ok(dims
        .try_fold(1u64, |acc, d| acc.checked_mul(d))
        .and_then(|n| n.checked_add(4 + 4 * ndims as u64)))
}

/// Parses an IDX header (magic `00 00 type ndims`, big-endian u32 dims) and checks the size.
/// Every size comes from the file, so all arithmetic on it is checked.
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
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
        .ok_or_else(|| format!("dims {dims:?} overflow"))?;
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
        let px = self.rows as usize * self.cols as usize;
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

    fn write_pair(dir: &Path, images: &[u8], labels: &[u8]) {
        std::fs::write(dir.join("train-images-idx3-ubyte"), images).unwrap();
        std::fs::write(dir.join("train-labels-idx1-ubyte"), labels).unwrap();
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, bytes).unwrap();
        e.finish().unwrap()
    }

    /// The 16-byte file of the audit: dims whose product overflows are an error, not a panic.
    #[test]
    fn overflowing_dims_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let labels = idx_bytes(8, &[1], &[0]);
        for dims in [[u32::MAX, u32::MAX, u32::MAX], [1, 65536, 65536], [1, 0, 5]] {
            write_pair(dir.path(), &idx_bytes(8, &dims, &[]), &labels);
            let err = IdxSource::open(dir.path(), IdxSplit::Train, None)
                .err()
                .unwrap();
            assert!(err.to_string().contains("train-images-idx3-ubyte"), "{err}");
        }
    }

    /// A gzip bomb behind a small header decompresses only as far as the header says.
    #[test]
    fn gzip_is_decompressed_only_as_far_as_the_header_says() {
        let dir = tempfile::tempdir().unwrap();
        let mut images = idx_bytes(8, &[2, 2, 2], &[9; 8]);
        images.resize(64 << 20, 0); // 64 MiB of trailing zeros, ~64 KiB compressed
        let packed = gz(&images);
        assert!(packed.len() < 1 << 20);
        std::fs::write(dir.path().join("train-images-idx3-ubyte.gz"), packed).unwrap();
        let read = read_maybe_gz(&dir.path().join("train-images-idx3-ubyte.gz"), 3).unwrap();
        assert_eq!(read.len(), 16 + 8);
        // A header that asks for more than the cap is refused before anything is inflated.
        let huge = gz(&idx_bytes(8, &[60000, 65535, 65535], &[0; 64]));
        std::fs::write(dir.path().join("train-images-idx3-ubyte.gz"), huge).unwrap();
        let err = read_maybe_gz(&dir.path().join("train-images-idx3-ubyte.gz"), 3)
            .err()
            .unwrap();
        assert!(err.to_string().contains("holds in memory"), "{err}");
    }

    /// Arbitrary and mutated IDX files, plain and gzipped: errors, never panics.
    #[test]
    fn mutated_idx_files_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let images = idx_bytes(8, &[3, 4, 5], &[7; 60]);
        let labels = idx_bytes(8, &[3], &[0, 1, 2]);
        let mut rng = crate::rng::Rng::keyed(&[13, 3]);
        for round in 0..1500u64 {
            let img = crate::testing::mutate(&images, &mut rng, round);
            let lab = crate::testing::mutate(&labels, &mut rng, round);
            let (img, lab) = if round % 3 == 0 {
                (gz(&img), gz(&lab))
            } else {
                (img, lab)
            };
            for name in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"] {
                let _ = std::fs::remove_file(dir.path().join(format!("{name}.gz")));
                let _ = std::fs::remove_file(dir.path().join(name));
            }
            let suffix = if round % 3 == 0 { ".gz" } else { "" };
            std::fs::write(
                dir.path().join(format!("train-images-idx3-ubyte{suffix}")),
                &img,
            )
            .unwrap();
            std::fs::write(
                dir.path().join(format!("train-labels-idx1-ubyte{suffix}")),
                &lab,
            )
            .unwrap();
            if let Ok(src) = IdxSource::open(dir.path(), IdxSplit::Train, None) {
                for id in 0..src.len() {
                    src.read(id).unwrap();
                    src.label(id);
                }
            }
        }
    }
}
