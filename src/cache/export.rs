//! `cache export --webdataset DIR`: the cache as WebDataset tar shards, the format PyTorch users
//! already keep data in. Each record becomes one key (`{id:09}`, the sample's id in the source
//! the cache was built from) with `KEY.jpg` (a JPEG record, copied byte for byte) or `KEY.png`
//! (a raw record, lossless), and `KEY.cls` (the label as decimal text) when labelled. Members
//! are plain ustar entries (mtime 0, so the same cache exports to the same bytes); each tar is
//! written to a temporary name and renamed.

use std::io::Write;
use std::path::Path;

use super::format::RecordKind;
use super::reader::CacheSource;
use super::{sync_dir, CacheError};
use crate::source::IndexedSource;

#[derive(Debug, Clone, Default)]
pub struct ExportReport {
    pub records: u64,
    pub tars: usize,
    pub bytes: u64,
}

/// Writes `cache`'s records into `out/shard-NNNNNN.tar`, `per_tar` records per tar.
pub fn export_webdataset(
    cache: &Path,
    out: &Path,
    per_tar: u64,
    progress: &dyn Fn(u64),
) -> Result<ExportReport, CacheError> {
    let src = CacheSource::open(cache, None).map_err(|e| CacheError::Corrupt {
        path: cache.to_path_buf(),
        message: e.to_string(),
    })?;
    std::fs::create_dir_all(out).map_err(CacheError::io(out))?;
    let per_tar = per_tar.max(1);
    let mut report = ExportReport::default();
    let records: Vec<_> = src.records().map(|(_, r)| *r).collect();
    for (t, chunk) in records.chunks(per_tar as usize).enumerate() {
        let name = format!("shard-{t:06}.tar");
        let path = out.join(&name);
        let tmp = out.join(format!("{name}.tmp"));
        let file = std::fs::File::create(&tmp).map_err(CacheError::io(&tmp))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        for (i, rec) in chunk.iter().enumerate() {
            let id = t as u64 * per_tar + i as u64;
            let stored = src.stored_bytes(id).map_err(|e| CacheError::Corrupt {
                path: cache.to_path_buf(),
                message: e.to_string(),
            })?;
            if crc32fast::hash(&stored) != rec.crc {
                return Err(CacheError::Corrupt {
                    path: cache.to_path_buf(),
                    message: format!("{}: checksum mismatch", src.describe(id)),
                });
            }
            let key = format!("{:09}", rec.id);
            let (ext, body) = match rec.kind {
                RecordKind::Jpeg => ("jpg", stored),
                RecordKind::Raw => ("png", png(rec.width, rec.height, stored, &tmp)?),
            };
            member(&mut w, &format!("{key}.{ext}"), &body).map_err(CacheError::io(&tmp))?;
            if let Some(label) = src.label(id) {
                member(&mut w, &format!("{key}.cls"), label.to_string().as_bytes())
                    .map_err(CacheError::io(&tmp))?;
            }
            report.records += 1;
            progress(report.records);
        }
        // The end of an archive: two zero blocks.
        w.write_all(&[0u8; 1024]).map_err(CacheError::io(&tmp))?;
        let file = w.into_inner().map_err(|e| CacheError::Io {
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(CacheError::io(&tmp))?;
        report.bytes += file.metadata().map_err(CacheError::io(&tmp))?.len();
        std::fs::rename(&tmp, &path).map_err(CacheError::io(&path))?;
        report.tars += 1;
    }
    sync_dir(out)?;
    Ok(report)
}

fn png(width: u32, height: u32, rgb: Vec<u8>, path: &Path) -> Result<Vec<u8>, CacheError> {
    let img = image::RgbImage::from_raw(width, height, rgb).ok_or_else(|| CacheError::Corrupt {
        path: path.to_path_buf(),
        message: format!("raw record is not {width}x{height} RGB"),
    })?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| CacheError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(out.into_inner())
}

/// Writes one regular-file member: a ustar header block, the data, zero padding to 512 bytes.
fn member(w: &mut impl Write, name: &str, data: &[u8]) -> std::io::Result<()> {
    w.write_all(&ustar_header(name, data.len() as u64)?)?;
    w.write_all(data)?;
    let pad = (512 - data.len() % 512) % 512;
    w.write_all(&[0u8; 512][..pad])
}

fn ustar_header(name: &str, size: u64) -> std::io::Result<[u8; 512]> {
    if name.len() > 100 || size >= 1 << 33 {
        return Err(std::io::Error::other(format!(
            "tar member {name} ({size} bytes) does not fit a ustar header"
        )));
    }
    let mut h = [0u8; 512];
    let mut put = |at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, name.as_bytes());
    put(100, b"0000644\0"); // mode
    put(108, b"0000000\0"); // uid
    put(116, b"0000000\0"); // gid
    put(124, format!("{size:011o}\0").as_bytes());
    put(136, b"00000000000\0"); // mtime
    put(148, b"        "); // checksum, as spaces while summing
    put(156, b"0"); // regular file
    put(257, b"ustar\0");
    put(263, b"00");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header checksum is what tar computes: the byte sum with the field read as spaces.
    #[test]
    fn ustar_header_checksums_and_pads() {
        let h = ustar_header("000000001.jpg", 1234).unwrap();
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let mut blank = h;
        blank[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, blank.iter().map(|&b| b as u32).sum::<u32>());
        assert_eq!(&h[124..136], b"00000002322\0");
        let mut out = Vec::new();
        member(&mut out, "a.cls", b"7").unwrap();
        assert_eq!(out.len(), 1024);
        assert!(ustar_header(&"x".repeat(101), 1).is_err());
    }
}
