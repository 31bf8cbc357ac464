//! dino-stream: DINO self-supervised training as a streaming dataflow.
//!
//! The data side (sources, decode, augment, batcher) runs on OS threads joined by bounded
//! channels; the trainer is one thread that owns every tensor. See docs/ARCHITECTURE.md.

pub mod augment;
pub mod batch;
pub mod bench;
pub mod cache;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod commands_eval;
pub mod config;
pub mod decode;
pub mod dist;
pub mod eval;
pub mod exit;
pub mod failpoint;
pub mod frame;
pub mod main_dino;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod preflight;
pub mod progress;
pub mod recipe;
pub mod rng;
pub mod run;
pub mod rundir;
pub mod signals;
pub(crate) mod simd;
pub mod source;
#[cfg(test)]
pub(crate) mod testing;
pub mod train;
pub mod viz;
pub mod weights;
