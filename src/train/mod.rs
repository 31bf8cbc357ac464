//! Training: the recipe's configuration, the step engine, and the trainer actor.

pub mod actor;
pub mod amp;
pub mod config;
pub mod engine;
pub mod export;
pub mod loss;
pub mod monitor;
pub mod optim;
pub mod schedule;

pub use actor::{spawn_trainer, TrainError, TrainOutcome, TrainerArgs, LOG_FILE};
pub use config::{Plan, TrainConfig};
