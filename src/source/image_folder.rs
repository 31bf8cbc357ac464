//! A folder of images (JPEG, PNG, WebP, BMP, TIFF); `root/class/*.jpg` gives labels (ImageNet
//! layout). Symbolic links to files and to class folders are followed (a link loop is listed
//! once); other files are counted and reported once, so a folder of unsupported images never
//! looks empty without a reason.
//!
//! Only regular files up to [`MAX_FILE_BYTES`] are read: a `.jpg` symlink to /dev/zero would
//! otherwise be read until memory runs out, and a FIFO would block the source thread forever.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{IndexedSource, Payload, SourceError};

/// Extensions decoded (compared case-insensitively); the image crate decodes each.
pub(super) const EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"];

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
        let mut other: BTreeMap<String, u64> = BTreeMap::new();
        let mut visited = HashSet::new();
        walk(root, &mut files, &mut other, &mut visited).map_err(|source| SourceError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        files.sort();
        let others = || {
            other
                .iter()
                .map(|(ext, n)| match ext.starts_with('(') {
                    true => format!("{n} {ext}"),
                    false => format!("{n} .{ext}"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        if files.is_empty() {
            let found = if other.is_empty() {
                String::new()
            } else {
                format!(" (found only {})", others())
            };
            return Err(SourceError::Open {
                path: root.to_path_buf(),
                message: format!(
                    "no image files found (looked for .{}){found}",
                    EXTENSIONS.join("/.")
                ),
            });
        }
        if !other.is_empty() {
            tracing::warn!(
                "{}: skipped files that are not images of a supported kind: {}",
                root.display(),
                others()
            );
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

/// Lists image files under `dir`, following symbolic links; `visited` holds the canonical
/// directories already listed, so a link loop ends. Other files are counted by extension.
fn walk(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    other: &mut BTreeMap<String, u64>,
    visited: &mut HashSet<PathBuf>,
) -> std::io::Result<()> {
    if !visited.insert(std::fs::canonicalize(dir)?) {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let mut ty = entry.file_type()?;
        if ty.is_symlink() {
            match std::fs::metadata(&path) {
                Ok(m) => ty = m.file_type(),
                Err(_) => {
                    *other.entry("(broken link)".into()).or_default() += 1;
                    continue;
                }
            }
        }
        if ty.is_dir() {
            walk(&path, out, other, visited)?;
            continue;
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext {
            Some(e) if EXTENSIONS.contains(&e.as_str()) => out.push(path),
            Some(e) => *other.entry(e).or_default() += 1,
            None => *other.entry("(no extension)".into()).or_default() += 1,
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

    fn class_name(&self, label: u32) -> String {
        self.classes[label as usize].clone()
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
