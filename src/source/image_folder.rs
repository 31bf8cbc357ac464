//! A folder of JPEG/PNG files; `root/class/*.jpg` gives labels (ImageNet layout).
//!
//! Only regular files up to [`MAX_FILE_BYTES`] are read: a `.jpg` symlink to /dev/zero would
//! otherwise be read until memory runs out, and a FIFO would block the source thread forever.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{IndexedSource, Payload, SourceError};

const EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "JPG", "JPEG", "PNG"];

/// The largest image file read (a 64-Mpixel PNG, `decode.max_pixels`' default, stays below it).
pub const MAX_FILE_BYTES: u64 = 256 << 20;

pub struct ImageFolderSource {
    files: Vec<PathBuf>,
    labels: Option<Vec<u32>>,
    classes: Vec<String>,
}

impl ImageFolderSource {
    /// Lists images in sorted order. When every image sits in a first-level subdirectory, the
    /// sorted subdirectory names are the classes.
    pub fn open(root: &Path, limit: Option<u64>) -> Result<Self, SourceError> {
        if !root.is_dir() {
            return Err(SourceError::Open {
                path: root.to_path_buf(),
                message: "not a directory".into(),
            });
        }
        let mut files = Vec::new();
        walk(root, &mut files).map_err(|source| SourceError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        files.sort();
        if files.is_empty() {
            return Err(SourceError::Open {
                path: root.to_path_buf(),
                message: "no .jpg/.jpeg/.png files found".into(),
            });
        }
        if let Some(limit) = limit {
            files.truncate(limit as usize);
        }
        let class_of = |f: &PathBuf| -> Option<String> {
            let rel = f.strip_prefix(root).ok()?;
            let mut parts = rel.components();
            let first = parts.next()?;
            parts.next()?; // at least one more component: the file is inside a class directory
            Some(first.as_os_str().to_string_lossy().into_owned())
        };
        let names: Option<Vec<String>> = files.iter().map(class_of).collect();
        let (labels, classes) = match names {
            Some(names) => {
                let mut classes = names.clone();
                classes.sort();
                classes.dedup();
                let labels = names
                    .iter()
                    .map(|n| classes.binary_search(n).unwrap() as u32)
                    .collect();
                (Some(labels), classes)
            }
            None => (None, Vec::new()),
        };
        Ok(ImageFolderSource {
            files,
            labels,
            classes,
        })
    }

    pub fn class_names(&self) -> &[String] {
        &self.classes
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let ty = entry.file_type()?;
        if ty.is_dir() {
            walk(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads a regular file of at most `cap` bytes. The type is checked before opening (opening a
/// FIFO blocks), and the read stops at `cap + 1` bytes in case the file grew in between.
fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, SourceError> {
    let io = |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let refuse = |message: String| SourceError::Open {
        path: path.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(refuse("not a regular file".into()));
    }
    if meta.len() > cap {
        return Err(refuse(format!(
            "{} bytes, over the {cap}-byte limit",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .map_err(io)?
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > cap {
        return Err(refuse(format!("grew past the {cap}-byte limit while read")));
    }
    Ok(bytes)
}

impl IndexedSource for ImageFolderSource {
    fn len(&self) -> u64 {
        self.files.len() as u64
    }

    fn read(&self, id: u64) -> Result<Payload, SourceError> {
        let path = &self.files[id as usize];
        read_capped(path, MAX_FILE_BYTES).map(Payload::Encoded)
    }

    fn label(&self, id: u64) -> Option<u32> {
        self.labels.as_ref().map(|l| l[id as usize])
    }

    fn num_classes(&self) -> Option<u32> {
        self.labels.as_ref().map(|_| self.classes.len() as u32)
    }

    fn describe(&self, id: u64) -> String {
        self.files[id as usize].display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_under_the_cap_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("a.jpg");
        std::fs::write(&ok, [1u8; 100]).unwrap();
        assert_eq!(read_capped(&ok, 100).unwrap().len(), 100);
        let err = read_capped(&ok, 99).unwrap_err().to_string();
        assert!(err.contains("a.jpg") && err.contains("limit"), "{err}");

        let zero = dir.path().join("zero.jpg");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let err = read_capped(&zero, MAX_FILE_BYTES).unwrap_err().to_string();
        assert!(
            err.contains("zero.jpg") && err.contains("not a regular file"),
            "{err}"
        );

        let fifo = dir.path().join("fifo.jpg");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_capped(&fifo, MAX_FILE_BYTES).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
