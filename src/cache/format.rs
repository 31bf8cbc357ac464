//! Shard file layout (little-endian):
//!
//! ```text
//! header  : magic "DINOSHRD" | version u32 | record_count u32 | table_crc32 u32 | reserved u32
//! table   : record_count × { offset u64 | len u64 | width u32 | height u32 | label i32 | crc32 u32 | id u64 }
//! records : packed RGB8 pixels, each at its offset
//! ```
//! The table has its own checksum and every record has one, so `cache verify` finds any flipped
//! bit, and a reader can trust offsets before it maps pixels.

pub const MAGIC: &[u8; 8] = b"DINOSHRD";
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 24;
pub const ENTRY_LEN: usize = 40;

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
                "format version {version}, this build reads {FORMAT_VERSION}"
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
    }

    pub fn decode(b: &[u8]) -> Record {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        Record {
            offset: u64_at(0),
            len: u64_at(8),
            width: u32_at(16),
            height: u32_at(20),
            label: u32_at(24) as i32,
            crc: u32_at(28),
            id: u64_at(32),
        }
    }
}

/// Parses and checks a whole shard's header and table against the file length. Every size
/// comes from the file, so all arithmetic on it is checked: a record's pixel count must match
/// its length exactly, and its bytes must lie inside the file, before anything is allocated.
pub fn parse_table(bytes: &[u8]) -> Result<Vec<Record>, String> {
    let header = ShardHeader::decode(bytes)?;
    let table_end = (header.records as usize)
        .checked_mul(ENTRY_LEN)
        .and_then(|t| t.checked_add(HEADER_LEN))
        .ok_or("offset table size overflows")?;
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
    let records: Vec<Record> = table.chunks_exact(ENTRY_LEN).map(Record::decode).collect();
    for (i, r) in records.iter().enumerate() {
        let end = r.offset.checked_add(r.len);
        if r.offset < table_end as u64 || end.is_none_or(|e| e > bytes.len() as u64) {
            return Err(format!("record {i} lies outside the file"));
        }
        let rgb_len = (r.width as u64)
            .checked_mul(r.height as u64)
            .and_then(|px| px.checked_mul(3));
        if r.width == 0 || r.height == 0 || rgb_len != Some(r.len) {
            return Err(format!(
                "record {i}: {} bytes for {}x{} RGB",
                r.len, r.width, r.height
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
        };
        let data = vec![0u8; 16];
        let err = parse_table(&shard(&[rec], &data)).unwrap_err();
        assert!(err.contains("outside") || err.contains("RGB"), "{err}");
        let rec = Record { len: 12, ..rec };
        let err = parse_table(&shard(&[rec], &data[..12])).unwrap_err();
        assert!(err.contains("record 0"), "{err}");
        let ok = Record {
            width: 2,
            height: 2,
            ..rec
        };
        assert_eq!(parse_table(&shard(&[ok], &data[..12])).unwrap(), vec![ok]);
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
            },
            Record {
                offset: offset + 12,
                len: 6,
                width: 1,
                height: 2,
                label: -1,
                crc: 0,
                id: 5,
            },
        ];
        let good = shard(&recs, &[5u8; 18]);
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
            if let Ok(records) = parse_table(&bytes) {
                for r in records {
                    assert!(r.offset + r.len <= bytes.len() as u64);
                    assert_eq!(r.len, r.width as u64 * r.height as u64 * 3);
                }
            }
        }
    }
}
