//! A folder of JPEG/PNG files; `root/class/*.jpg` gives labels (ImageNet layout).

use std::path::{Path, PathBuf};

use super::{IndexedSource, Payload, SourceError};

const EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "JPG", "JPEG", "PNG"];

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

impl IndexedSource for ImageFolderSource {
    fn len(&self) -> u64 {
        self.files.len() as u64
    }

    fn read(&self, id: u64) -> Result<Payload, SourceError> {
        let path = &self.files[id as usize];
        std::fs::read(path)
            .map(Payload::Encoded)
            .map_err(|source| SourceError::Io {
                path: path.clone(),
                source,
            })
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
