//! The image type that flows through the pipeline: packed RGB8 pixels, owned or memory-mapped.

use std::ops::Range;
use std::sync::Arc;

/// Where a frame's bytes live. Shard-cache readers hand out slices of a memory map, so a
/// cached image reaches the augment workers without a copy.
#[derive(Clone)]
pub enum Pixels {
    /// Bytes decoded into memory we own.
    Owned(Vec<u8>),
    /// A byte range of a memory-mapped shard file.
    Mapped {
        map: Arc<memmap2::Mmap>,
        range: Range<usize>,
    },
}

impl Pixels {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Pixels::Owned(v) => v,
            Pixels::Mapped { map, range } => &map[range.clone()],
        }
    }
}

/// A packed RGB8 image (`height` rows of `width * 3` bytes, no padding).
#[derive(Clone)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub pixels: Pixels,
}

impl Frame {
    /// Wraps owned RGB8 bytes; panics if the length does not match the size (a programming
    /// error, not bad input: decoders produce exact buffers).
    pub fn from_rgb(width: u32, height: u32, data: Vec<u8>) -> Self {
        assert_eq!(
            data.len(),
            width as usize * height as usize * 3,
            "RGB8 buffer size"
        );
        Frame {
            width,
            height,
            pixels: Pixels::Owned(data),
        }
    }

    pub fn data(&self) -> &[u8] {
        self.pixels.as_slice()
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({}x{})", self.width, self.height)
    }
}
