//! Training: the recipe's configuration, the step engine, and the trainer actor.

pub mod config;
pub mod engine;

pub use config::{Plan, TrainConfig};
