//! Shard file layout (little-endian):
//!
//! ```text
//! header  : magic "DINOSHRD" | version u32 | record_count u32 | table_crc32 u32 | reserved u32
//! table   : record_count × { offset u64 | len u64 | width u32 | height u32 | label i32 | crc32 u32 | id u64
//!                              | encoding u32 | reserved u32 }
//! records : each at its offset: packed RGB8 pixels (`raw`) or a JPEG file (`jpeg`)
//! ```
//! The table has its own checksum and every record has one (over the stored bytes), so `cache
//! verify` finds any flipped bit, and a reader can trust offsets before it reads a record.
//! Version 2 added the encoding (version 1 held raw records only); a reader refuses any other
//! version with a message that says to rebuild.

pub const MAGIC: &[u8; 8] = b"DINOSHRD";
pub const FORMAT_VERSION: u32 = 2;
pub const HEADER_LEN: usize = 24;
pub const ENTRY_LEN: usize = 48;

/// How one record's bytes hold its picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// Packed RGB8, `width × height × 3` bytes.
    Raw,
    /// A baseline JPEG file of `width × height` pixels.
    Jpeg,
}

impl RecordKind {
    fn code(self) -> u32 {
        match self {
            RecordKind::Raw => 0,
            RecordKind::Jpeg => 1,
        }
    }

    fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(RecordKind::Raw),
            1 => Some(RecordKind::Jpeg),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardHeader {
    pub version: u32,
    pub records: u32,
    pub table_crc: u32,
}

/// One image's entry in the offset table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub len: u64,
    pub width: u32,
    pub height: u32,
    /// Class label, or -1.
    pub label: i32,
    pub crc: u32,
    /// The sample's id in the source it was built from.
    pub id: u64,
    pub kind: RecordKind,
}

impl ShardHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.records.to_le_bytes());
        b[16..20].copy_from_slice(&self.table_crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < HEADER_LEN {
            return Err(format!("too short for a shard header ({} bytes)", b.len()));
        }
        if &b[..8] != MAGIC {
            return Err("bad magic (not a dino-stream shard)".into());
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            return Err(format!(
                "shard format version {version}, this build reads only version {FORMAT_VERSION}: \
                 rebuild the cache with this dino-stream (`dino-stream cache build`)"
            ));
        }
        Ok(ShardHeader {
            version,
            records: u32_at(12),
            table_crc: u32_at(16),
        })
    }
}

impl Record {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.width.to_le_bytes());
        out.extend_from_slice(&self.height.to_le_bytes());
        out.extend_from_slice(&self.label.to_le_bytes());
        out.extend_from_slice(&self.crc.to_le_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.kind.code().to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
    }

    /// Reads one table entry; `None` for an unknown encoding.
    pub fn decode(b: &[u8]) -> Option<Record> {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        Some(Record {
            offset: u64_at(0),
            len: u64_at(8),
            width: u32_at(16),
            height: u32_at(20),
            label: u32_at(24) as i32,
            crc: u32_at(28),
            id: u64_at(32),
            kind: RecordKind::from_code(u32_at(40))?,
        })
    }
}

/// The length of the header and table of a shard of `records` records (checked).
pub fn table_end(records: u32) -> Option<usize> {
    (records as usize)
        .checked_mul(ENTRY_LEN)
        .and_then(|t| t.checked_add(HEADER_LEN))
}

/// Parses and checks a whole shard's header and table against the file length. Every size
/// comes from the file, so all arithmetic on it is checked: a raw record's pixel count must
/// match its length exactly, and every record's bytes must lie inside the file, before anything
/// is allocated. `bytes` holds at least the header and the table; `file_len` is the file's.
pub fn parse_table(bytes: &[u8], file_len: u64) -> Result<Vec<Record>, String> {
    let header = ShardHeader::decode(bytes)?;
    let table_end = table_end(header.records).ok_or("offset table size overflows")?;
    if bytes.len() < table_end {
        return Err(format!(
            "truncated offset table ({} records)",
            header.records
        ));
    }
    let table = &bytes[HEADER_LEN..table_end];
    if crc32fast::hash(table) != header.table_crc {
        return Err("offset table checksum mismatch".into());
    }
    let mut records = Vec::with_capacity(header.records as usize);
    for (i, entry) in table.chunks_exact(ENTRY_LEN).enumerate() {
        records.push(Record::decode(entry).ok_or(format!("record {i}: unknown encoding"))?);
    }
    for (i, r) in records.iter().enumerate() {
        let end = r.offset.checked_add(r.len);
        if r.offset < table_end as u64 || end.is_none_or(|e| e > file_len) {
            return Err(format!("record {i} lies outside the file"));
        }
        let rgb_len = (r.width as u64)
            .checked_mul(r.height as u64)
            .and_then(|px| px.checked_mul(3));
        let len_ok = match r.kind {
            RecordKind::Raw => rgb_len == Some(r.len),
            // A JPEG's size says nothing exact about its pixels, but it is never empty.
            RecordKind::Jpeg => rgb_len.is_some() && r.len > 0,
        };
        if r.width == 0 || r.height == 0 || !len_ok {
            return Err(format!(
                "record {i}: {} bytes for {}x{} {:?}",
                r.len, r.width, r.height, r.kind
            ));
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(records: &[Record], data: &[u8]) -> Vec<u8> {
        let mut table = Vec::new();
        for r in records {
            r.encode(&mut table);
        }
        let header = ShardHeader {
            version: FORMAT_VERSION,
            records: records.len() as u32,
            table_crc: crc32fast::hash(&table),
        };
        let mut out = header.encode().to_vec();
        out.extend_from_slice(&table);
        out.extend_from_slice(data);
        out
    }

    /// The audit's shard: width × height × 3 wraps around to the record's length, which passed
    /// the check and then asked for a 146 GB frame. Overflow is an error now.
    #[test]
    fn a_record_whose_pixel_count_overflows_is_refused() {
        let offset = (HEADER_LEN + ENTRY_LEN) as u64;
        // 0x8000_0000 × 0xAAAA_AAAB × 3 = 2^64 + 2^31: wraps to 2^31 in u64 arithmetic.
        let wrapped = (0x8000_0000u64).wrapping_mul(0xAAAA_AAAB).wrapping_mul(3);
        let rec = Record {
            offset,
            len: wrapped,
            width: 0x8000_0000,
            height: 0xAAAA_AAAB,
            label: 0,
            crc: 0,
            id: 0,
            kind: RecordKind::Raw,
        };
        let data = vec![0u8; 16];
        let err =
            parse_table(&shard(&[rec], &data), (HEADER_LEN + ENTRY_LEN + 16) as u64).unwrap_err();
        assert!(err.contains("outside") || err.contains("RGB"), "{err}");
        let rec = Record { len: 12, ..rec };
        let err = parse_table(
            &shard(&[rec], &data[..12]),
            (HEADER_LEN + ENTRY_LEN + 12) as u64,
        )
        .unwrap_err();
        assert!(err.contains("record 0"), "{err}");
        let ok = Record {
            width: 2,
            height: 2,
            ..rec
        };
        assert_eq!(
            parse_table(
                &shard(&[ok], &data[..12]),
                (HEADER_LEN + ENTRY_LEN + 12) as u64
            )
            .unwrap(),
            vec![ok]
        );
    }

    /// Arbitrary and mutated shards: errors, never panics; accepted records lie in the file.
    #[test]
    fn mutated_shards_never_panic() {
        let offset = (HEADER_LEN + 2 * ENTRY_LEN) as u64;
        let recs = [
            Record {
                offset,
                len: 12,
                width: 2,
                height: 2,
                label: 1,
                crc: 0,
                id: 4,
                kind: RecordKind::Raw,
            },
            Record {
                offset: offset + 12,
                len: 6,
                width: 1,
                height: 2,
                label: -1,
                crc: 0,
                id: 5,
                kind: RecordKind::Jpeg,
            },
        ];
        let good = shard(&recs, &[5u8; 18]);
        assert_eq!(parse_table(&good, good.len() as u64).unwrap(), recs);
        let mut rng = crate::rng::Rng::keyed(&[13, 5]);
        for round in 0..20_000u64 {
            let bytes = crate::testing::mutate(&good, &mut rng, round);
            // Keep the table checksum right half the time so mutations reach the record checks.
            let bytes = if round % 2 == 0 && bytes.len() >= HEADER_LEN {
                let mut b = bytes;
                let n = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
                if let Some(table) =
                    b.get(HEADER_LEN..HEADER_LEN.saturating_add(n.saturating_mul(ENTRY_LEN)))
                {
                    let crc = crc32fast::hash(table);
                    b[16..20].copy_from_slice(&crc.to_le_bytes());
                }
                b
            } else {
                bytes
            };
            if let Ok(records) = parse_table(&bytes, bytes.len() as u64) {
                for r in records {
                    assert!(r.offset + r.len <= bytes.len() as u64);
                    if r.kind == RecordKind::Raw {
                        assert_eq!(r.len, r.width as u64 * r.height as u64 * 3);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;

    /// A shard of another format version is refused with a message that names both versions
    /// and says what to do, whichever side is older.
    #[test]
    fn an_older_or_newer_shard_is_refused_by_version() {
        for version in [1u32, FORMAT_VERSION + 1] {
            let header = ShardHeader {
                version,
                records: 0,
                table_crc: crc32fast::hash(&[]),
            };
            let err = parse_table(&header.encode(), HEADER_LEN as u64).unwrap_err();
            assert!(
                err.contains(&format!("version {version}"))
                    && err.contains(&format!("only version {FORMAT_VERSION}"))
                    && err.contains("rebuild"),
                "{err}"
            );
        }
    }
}
