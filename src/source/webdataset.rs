//! WebDataset tar shards (local files) as an indexed source, read in place: nothing is unpacked.
//!
//! Opening scans every shard's tar headers (no image bytes are read; the tar crate seeks over
//! each member) and groups consecutive members by key, as webdataset does: the key is the
//! member's path up to the first dot of its basename, the rest is the extension (`a/b.c.jpg`
//! is key `a/b`, extension `c.jpg`). A sample's image is its first member whose extension is one
//! the image folder decodes (`jpg`, `jpeg`, `png`, `webp`, ...), its label the integer text of
//! `.cls`, or else `.json`'s `label_key`. The result is a table of (shard, byte offset, size)
//! per sample, so the source is an [`IndexedSource`] like the image folder: the epoch order is
//! the same seeded permutation, resume seeks straight to the cursor's sample (nothing before it
//! is read), `dist::Shard` splits each epoch between ranks, and `read` is one positioned read
//! (`pread`) of the image member's bytes, handed to the decode stage as encoded bytes (so
//! `decode.scaled`, `decode.max_pixels` and corrupt-image skipping apply unchanged).
//!
//! Why an index and not webdataset's streaming (shard order plus a shuffle buffer): the headers
//! carry every member's size, so the index costs one 512-byte header read per member, and it
//! buys what the other sources already promise (exact resume without decoding a prefix, a full
//! shuffle, disjoint rank slices with any world size). Shards are local files (no URLs, no
//! network), where a positioned read costs what opening an image file costs.
//!
//! Damage is contained: a member whose header fails its checksum is passed over by searching
//! forward for the next valid header; a member cut short by a truncated file, a key with no
//! image member, or an image over [`MAX_FILE_BYTES`] stays in the index as a sample whose read
//! fails, so it is skipped, counted (`dino_stream_stage_skipped_total{stage="source"}`) and
//! logged once with the shard and member named, like a corrupt image. A shard that cannot be
//! opened or holds no tar data is logged once with its path and left out.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::image_folder::{EXTENSIONS, MAX_FILE_BYTES};
use super::{braces, IndexedSource, Payload, SourceError};

/// Label members larger than this are not labels (a `.json` with a whole annotation is fine).
const MAX_LABEL_BYTES: u64 = 1 << 20;
const BLOCK: u64 = 512;

/// `urls = "a-{0..9}.tar"` or `urls = ["a.tar", "b-{0..3}.tar"]`: one string or a list.
pub fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match serde::Deserialize::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// What `[source] type = "webdataset"` asks for.
#[derive(Debug, Clone)]
pub struct WebDatasetOptions {
    /// Paths or brace patterns, expanded in order.
    pub urls: Vec<String>,
    pub limit: Option<u64>,
    /// The `.json` key holding the class.
    pub label_key: String,
}

/// One sample: its shard, its key, and its image member or why it has none.
struct Sample {
    shard: u32,
    /// `key.ext` of the image member (or the key alone when there is none): the log's name.
    name: Box<str>,
    image: Result<Member, Box<str>>,
}

#[derive(Clone, Copy)]
struct Member {
    offset: u64,
    size: u64,
}

pub struct WebDatasetSource {
    shards: Vec<PathBuf>,
    samples: Vec<Sample>,
    labels: Option<Vec<u32>>,
    classes: u32,
}

impl WebDatasetSource {
    /// Expands the patterns and scans every shard's headers, several shards at a time.
    pub fn open(opts: &WebDatasetOptions) -> Result<Self, SourceError> {
        let shown = opts.urls.join(", ");
        let open_err = |message: String| SourceError::Open {
            path: PathBuf::from(&shown),
            message,
        };
        let mut paths = Vec::new();
        for pattern in &opts.urls {
            let names = braces::expand(pattern).map_err(|e| open_err(e.to_string()))?;
            paths.extend(names.into_iter().map(PathBuf::from));
        }
        if paths.is_empty() {
            return Err(open_err("no shard paths given".into()));
        }
        let scans = scan_all(&paths, &opts.label_key);
        let mut shards = Vec::new();
        let mut samples = Vec::new();
        let mut labels = Vec::new();
        let mut unlabelled = 0u64;
        let mut first_unlabelled = None;
        let mut unreadable = Vec::new();
        for (path, scan) in paths.into_iter().zip(scans) {
            let scan = match scan {
                Ok(s) if !s.samples.is_empty() => s,
                Ok(_) => {
                    tracing::warn!("{}: skipped: no samples in this tar", path.display());
                    unreadable.push(path);
                    continue;
                }
                Err(e) => {
                    tracing::warn!("{}: skipped: {e}", path.display());
                    unreadable.push(path);
                    continue;
                }
            };
            let shard = shards.len() as u32;
            for s in scan.samples {
                if s.image.is_ok() {
                    match s.label {
                        Some(l) => labels.push(l),
                        None => {
                            unlabelled += 1;
                            first_unlabelled
                                .get_or_insert_with(|| format!("{}#{}", path.display(), s.name));
                            labels.push(0);
                        }
                    }
                } else {
                    labels.push(0);
                }
                samples.push(Sample {
                    shard,
                    name: s.name,
                    image: s.image,
                });
            }
            shards.push(path);
        }
        if samples.is_empty() {
            let first: Vec<String> = unreadable
                .iter()
                .take(3)
                .map(|p| p.display().to_string())
                .collect();
            return Err(open_err(format!(
                "no readable shard with samples among {} paths (first: {})",
                unreadable.len(),
                first.join(", ")
            )));
        }
        if let Some(limit) = opts.limit {
            samples.truncate(limit as usize);
            labels.truncate(limit as usize);
        }
        let labels = match unlabelled {
            0 => Some(labels),
            n => {
                tracing::warn!(
                    "{shown}: {n} samples have no .cls or .json \"{}\" label (first: {}); the \
                     source is unlabelled",
                    opts.label_key,
                    first_unlabelled.unwrap_or_default()
                );
                None
            }
        };
        let classes = labels
            .as_ref()
            .and_then(|l| l.iter().max())
            .map_or(0, |m| m + 1);
        Ok(WebDatasetSource {
            shards,
            samples,
            labels,
            classes,
        })
    }

    /// The shards read, in order (unreadable ones left out).
    pub fn shards(&self) -> &[PathBuf] {
        &self.shards
    }
}

impl IndexedSource for WebDatasetSource {
    fn len(&self) -> u64 {
        self.samples.len() as u64
    }

    fn read(&self, id: u64) -> Result<Payload, SourceError> {
        let s = &self.samples[id as usize];
        let corrupt = |message: String| SourceError::Corrupt {
            path: self.describe(id),
            message,
        };
        let m = s.image.as_ref().map_err(|why| corrupt(why.to_string()))?;
        let path = &self.shards[s.shard as usize];
        let mut bytes = vec![0u8; m.size as usize];
        File::open(path)
            .and_then(|f| f.read_exact_at(&mut bytes, m.offset))
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => corrupt(format!(
                    "the shard ends inside this member (bytes {}..{}); truncated since it was \
                     opened?",
                    m.offset,
                    m.offset + m.size
                )),
                _ => corrupt(format!("cannot read: {e}")),
            })?;
        Ok(Payload::Encoded(bytes))
    }

    fn label(&self, id: u64) -> Option<u32> {
        self.labels.as_ref().map(|l| l[id as usize])
    }

    fn num_classes(&self) -> Option<u32> {
        self.labels.as_ref().map(|_| self.classes)
    }

    fn describe(&self, id: u64) -> String {
        let s = &self.samples[id as usize];
        format!("{}#{}", self.shards[s.shard as usize].display(), s.name)
    }
}

/// A sample as the scan finds it.
struct Scanned {
    name: Box<str>,
    image: Result<Member, Box<str>>,
    label: Option<u32>,
}

#[derive(Default)]
struct ShardScan {
    samples: Vec<Scanned>,
}

/// Scans shards on up to one thread per core; results in path order.
fn scan_all(paths: &[PathBuf], label_key: &str) -> Vec<std::io::Result<ShardScan>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(paths.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<std::io::Result<ShardScan>>> =
        (0..paths.len()).map(|_| None).collect();
    let found = std::sync::Mutex::new(&mut results);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(i) else { break };
                let scan = scan_shard(path, label_key);
                found.lock().expect("no panics while held")[i] = Some(scan);
            });
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every shard scanned"))
        .collect()
}

/// Members of one key, gathered until the key changes.
struct Group {
    key: String,
    /// (extension rank in `EXTENSIONS`, `key.ext`, member).
    image: Option<(usize, String, Member)>,
    cls: Option<Result<u32, String>>,
    json: Option<Result<u32, String>>,
    others: Vec<String>,
}

impl Group {
    fn new(key: String) -> Self {
        Group {
            key,
            image: None,
            cls: None,
            json: None,
            others: Vec::new(),
        }
    }

    fn finish(self, file_len: u64) -> Scanned {
        let label = match (self.cls, self.json) {
            (Some(Ok(l)), _) | (_, Some(Ok(l))) => Some(l),
            _ => None,
        };
        let Some((_, name, m)) = self.image else {
            let why = format!(
                "no image member (.{}) for this key; found: {}",
                EXTENSIONS.join("/."),
                match self.others.is_empty() {
                    true => "nothing else".to_string(),
                    false => self.others.join(", "),
                }
            );
            return Scanned {
                name: self.key.into(),
                image: Err(why.into()),
                label,
            };
        };
        let image = if m.offset.saturating_add(m.size) > file_len {
            Err(format!(
                "truncated: the member needs bytes {}..{}, the shard has {file_len}",
                m.offset,
                m.offset + m.size
            )
            .into_boxed_str())
        } else if m.size > MAX_FILE_BYTES {
            Err(format!("{} bytes, over the {MAX_FILE_BYTES}-byte limit", m.size).into())
        } else {
            Ok(m)
        };
        Scanned {
            name: name.into(),
            image,
            label,
        }
    }
}

/// Webdataset's split of a member path into key and extension: the key runs to the first dot
/// of the basename. Paths without a dot in the basename have no extension and are ignored.
pub fn key_and_extension(path: &str) -> Option<(&str, &str)> {
    let base_at = path.rfind('/').map_or(0, |i| i + 1);
    let dot = path[base_at..].find('.')? + base_at;
    Some((&path[..dot], &path[dot + 1..]))
}

fn parse_cls(bytes: &[u8]) -> Result<u32, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    text.trim()
        .parse::<u32>()
        .map_err(|_| format!("not a class number: {:?}", text.trim()))
}

fn parse_json_label(bytes: &[u8], key: &str) -> Result<u32, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("bad JSON: {e}"))?;
    match v.get(key) {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("\"{key}\" is not a class number: {n}")),
        Some(serde_json::Value::String(s)) => parse_cls(s.as_bytes()),
        Some(other) => Err(format!("\"{key}\" is not a class number: {other}")),
        None => Err(format!("no \"{key}\" key")),
    }
}

/// Scans one shard's headers into samples. Errors are for shards that cannot be read at all.
fn scan_shard(path: &Path, label_key: &str) -> std::io::Result<ShardScan> {
    // The type is checked before opening: opening a FIFO would block the scan.
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let file_len = meta.len();
    let mut file = File::open(path)?;
    let mut scan = ShardScan::default();
    let mut group: Option<Group> = None;
    let mut corrupt: Vec<Scanned> = Vec::new();
    let mut any_header = false;
    let mut base = 0u64;
    loop {
        file.seek(SeekFrom::Start(base))?;
        let mut archive = tar::Archive::new(Window {
            file: &mut file,
            base,
        });
        // Where the next header may start: after the last member read whole.
        let mut after = base;
        let mut failed = None;
        let entries = archive.entries_with_seek()?;
        for entry in entries {
            let mut entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            any_header = true;
            let offset = base + entry.raw_file_position();
            let size = entry.size();
            after = offset + size.div_ceil(BLOCK) * BLOCK;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let Ok(name) = entry.path().map(|p| p.to_string_lossy().into_owned()) else {
                continue;
            };
            let Some((key, ext)) = key_and_extension(&name) else {
                continue;
            };
            let basename = &key[key.rfind('/').map_or(0, |i| i + 1)..];
            if basename.starts_with("__") && ext.ends_with("__") {
                continue; // webdataset's metadata members (`__index__` and the like)
            }
            let ext = ext.to_ascii_lowercase();
            if group.as_ref().is_none_or(|g| g.key != key) {
                if let Some(g) = group.take() {
                    scan.samples.push(g.finish(file_len));
                }
                group = Some(Group::new(key.to_string()));
            }
            let g = group.as_mut().expect("set above");
            let member = Member { offset, size };
            if let Some(rank) = EXTENSIONS.iter().position(|e| *e == ext) {
                if g.image.as_ref().is_none_or(|(r, _, _)| rank < *r) {
                    g.image = Some((rank, format!("{key}.{ext}"), member));
                }
                continue;
            }
            let label_member = ext == "cls" || ext == "json";
            if label_member {
                let mut bytes = Vec::new();
                let read = match size <= MAX_LABEL_BYTES {
                    true => entry.read_to_end(&mut bytes).map(|_| ()),
                    false => Err(std::io::Error::other("over 1 MiB")),
                };
                let parsed = read
                    .map_err(|e| e.to_string())
                    .and_then(|_| match ext.as_str() {
                        "cls" => parse_cls(&bytes),
                        _ => parse_json_label(&bytes, label_key),
                    })
                    .map_err(|e| format!("{name}: {e}"));
                match ext.as_str() {
                    "cls" => g.cls = Some(parsed),
                    _ => g.json = Some(parsed),
                }
            }
            g.others.push(format!(".{ext}"));
        }
        let Some(e) = failed else { break };
        // A header that fails its checksum (or cannot be read whole): search for the next valid
        // one and carry on from there; the lost member is a sample that is skipped and counted.
        let at = after;
        let next = find_header(&mut file, at + BLOCK, file_len)?;
        if next.is_some() || any_header {
            corrupt.push(Scanned {
                name: format!("@{at}").into(),
                image: Err(match next {
                    Some(n) => {
                        format!("bad tar header at byte {at} ({e}); members up to byte {n} skipped")
                    }
                    None => {
                        format!("bad tar header at byte {at} ({e}); the rest of the shard skipped")
                    }
                }
                .into()),
                label: None,
            });
        }
        match next {
            Some(n) => base = n,
            None if any_header => break,
            None => return Err(std::io::Error::other(format!("not a tar file ({e})"))),
        }
    }
    if let Some(g) = group.take() {
        scan.samples.push(g.finish(file_len));
    }
    scan.samples.extend(corrupt);
    Ok(scan)
}

/// A file seen from byte `base` on: the tar crate takes the positions its seeks return as
/// positions in the archive, so an archive restarted past a damaged header must see them
/// relative to where it starts.
struct Window<'a> {
    file: &'a mut File,
    base: u64,
}

impl Read for Window<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
}

impl Seek for Window<'_> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let pos = match pos {
            SeekFrom::Start(p) => SeekFrom::Start(self.base + p),
            other => other,
        };
        Ok(self.file.seek(pos)?.saturating_sub(self.base))
    }
}

/// The first 512-byte block at or after `from` (a multiple of 512) that is a valid ustar/GNU
/// header: the magic and a matching checksum.
fn find_header(file: &mut File, from: u64, file_len: u64) -> std::io::Result<Option<u64>> {
    if from >= file_len {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(from))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut block = [0u8; BLOCK as usize];
    let mut at = from;
    while at + BLOCK <= file_len {
        reader.read_exact(&mut block)?;
        if is_header(&block) {
            return Ok(Some(at));
        }
        at += BLOCK;
    }
    Ok(None)
}

fn is_header(block: &[u8; BLOCK as usize]) -> bool {
    if &block[257..262] != b"ustar" {
        return false;
    }
    let stored = std::str::from_utf8(&block[148..156])
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| u32::from_str_radix(s, 8).ok());
    let sum: u32 = block[..148]
        .iter()
        .chain(&block[156..])
        .map(|&b| b as u32)
        .sum::<u32>()
        + 8 * 32;
    stored == Some(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_at_the_first_dot_of_the_basename() {
        assert_eq!(key_and_extension("a/b.c.jpg"), Some(("a/b", "c.jpg")));
        assert_eq!(
            key_and_extension("x.y/000001.jpg"),
            Some(("x.y/000001", "jpg"))
        );
        assert_eq!(key_and_extension("000001.cls"), Some(("000001", "cls")));
        assert_eq!(key_and_extension("dir.d/noext"), None);
    }

    #[test]
    fn labels_from_cls_and_json() {
        assert_eq!(parse_cls(b" 7\n"), Ok(7));
        assert!(parse_cls(b"-1").is_err());
        assert_eq!(parse_json_label(br#"{"label": 3}"#, "label"), Ok(3));
        assert_eq!(parse_json_label(br#"{"y": "5"}"#, "y"), Ok(5));
        assert!(parse_json_label(br#"{"label": 1.5}"#, "label").is_err());
        assert!(parse_json_label(br#"{"x": 1}"#, "label")
            .unwrap_err()
            .contains("no \"label\""));
    }

    /// A tar written here (the tar crate's builder) with one member's header damaged and the
    /// file cut inside the last member: the damaged member and the cut one are samples whose
    /// reads fail, the rest read back byte for byte.
    #[test]
    fn damaged_headers_and_truncation_are_contained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.tar");
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        };
        for i in 0..5u8 {
            add(&format!("k{i}.jpg"), &vec![i; 700]);
            add(&format!("k{i}.cls"), format!("{i}").as_bytes());
        }
        let mut bytes = b.into_inner().unwrap();
        // k1.jpg's header sits after k0.jpg (512 + 1024) and k0.cls (512 + 512).
        let k1 = 512 + 1024 + 512 + 512;
        assert_eq!(&bytes[k1..k1 + 6], b"k1.jpg");
        bytes[k1 + 150] ^= 0x55; // inside the checksum field
                                 // Drop the end-of-archive blocks, k4.cls (header and data) and k4.jpg's last 400 bytes.
        let k4_data = bytes.len() - 1024 - 1024 - 1024;
        bytes.truncate(k4_data + 300);
        std::fs::write(&path, &bytes).unwrap();

        let src = WebDatasetSource::open(&WebDatasetOptions {
            urls: vec![path.display().to_string()],
            limit: None,
            label_key: "label".into(),
        })
        .unwrap();
        let names: Vec<String> = (0..src.len()).map(|i| src.describe(i)).collect();
        let ok: Vec<bool> = (0..src.len()).map(|i| src.read(i).is_ok()).collect();
        // k0 whole; k1.jpg lost (k1.cls alone: no image); k2, k3 whole; k4 truncated; the bad
        // header itself.
        assert_eq!(ok, [true, false, true, true, false, false], "{names:?}");
        assert!(names[1].ends_with("#k1"), "{names:?}");
        assert!(names[5].contains("#@"), "{names:?}");
        let err = src.read(4).err().unwrap().to_string();
        assert!(
            err.contains("s.tar#k4.jpg") && err.contains("truncated"),
            "{err}"
        );
        let err = src.read(5).err().unwrap().to_string();
        assert!(err.contains("bad tar header at byte 2560"), "{err}");
        let Payload::Encoded(b) = src.read(2).unwrap() else {
            panic!()
        };
        assert_eq!(b, vec![2u8; 700]);
        // Every readable sample has its .cls, so the source is labelled.
        assert_eq!((src.label(0), src.label(3)), (Some(0), Some(3)));
        assert_eq!(src.num_classes(), Some(4));
    }
}
