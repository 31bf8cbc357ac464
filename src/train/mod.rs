//! Training: the recipe's configuration, the step engine, and the trainer actor.

pub mod actor;
pub mod config;
pub mod engine;

pub use actor::{spawn_trainer, TrainError, TrainOutcome, TrainerArgs};
pub use config::{Plan, TrainConfig};
