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

/// Parses and checks a whole shard's header and table against the file length.
pub fn parse_table(bytes: &[u8]) -> Result<Vec<Record>, String> {
    let header = ShardHeader::decode(bytes)?;
    let table_end = HEADER_LEN + header.records as usize * ENTRY_LEN;
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
        if r.len != r.width as u64 * r.height as u64 * 3 {
            return Err(format!(
                "record {i}: {} bytes for {}x{} RGB",
                r.len, r.width, r.height
            ));
        }
    }
    Ok(records)
}
