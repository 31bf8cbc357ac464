//! A collated batch of multi-crops, as the batcher hands it to the trainer.

/// Where the data stream stands: the epoch and the position within that epoch's sample order.
/// Resuming from a cursor replays the stream from exactly that sample.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Cursor {
    pub epoch: u64,
    pub position: u64,
}

/// `size` samples' crops in crop-major order, packed RGB8 HWC:
/// `global` is `[2][size][global_size][global_size][3]`, `local` is
/// `[local_crops][size][local_size][local_size][3]`. Crop-major order lets the trainer run one
/// backbone pass per resolution group on contiguous memory.
#[derive(Debug, Clone)]
pub struct Batch {
    pub size: usize,
    pub global_size: u32,
    pub local_size: u32,
    pub local_crops: usize,
    pub global: Vec<u8>,
    pub local: Vec<u8>,
    /// Labels when the source has them (eval and diagnostics only; DINO never reads them).
    pub labels: Vec<Option<u32>>,
    /// Epoch of every sample in the batch (a batch never spans two epochs).
    pub epoch: u64,
    /// Cursor of the first sample after this batch: where a resumed run starts.
    pub next: Cursor,
}

impl Batch {
    /// Uniformly random crops with the shapes `aug` gives, keyed by `key`: the input of engine
    /// tests, reference checks and `bench train`, which need batches without a data pipeline.
    pub fn random(aug: &crate::augment::AugmentConfig, size: usize, key: u64) -> Batch {
        let mut r = crate::rng::Rng::keyed(&[key]);
        let mut bytes = |n: usize| (0..n).map(|_| r.below(256) as u8).collect::<Vec<u8>>();
        Batch {
            size,
            global_size: aug.global_size,
            local_size: aug.local_size,
            local_crops: aug.local_crops,
            global: bytes(crate::augment::AugmentConfig::GLOBAL_CROPS * size * aug.global_bytes()),
            local: bytes(aug.local_crops * size * aug.local_bytes()),
            labels: vec![None; size],
            epoch: 0,
            next: Cursor::default(),
        }
    }
}
