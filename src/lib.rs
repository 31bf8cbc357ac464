//! dino-stream: DINO self-supervised training as a streaming dataflow.

pub mod augment;
pub mod config;
pub mod decode;
pub mod frame;
pub mod rng;
pub mod batch;
pub mod model;
pub mod train;
