//! The DINO training step: student/teacher networks, loss, optimiser, EMA and schedules.
//! Owned by the trainer thread; every tensor lives here.

use tch::{Device, Tensor};

use crate::augment::AugmentConfig;
use crate::batch::Batch;
use crate::model::ModelConfig;
use crate::train::config::{Plan, TrainConfig};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("non-finite loss {loss} at step {step}")]
    NonFinite { loss: f64, step: u64 },
    #[error("checkpoint state: {0}")]
    State(String),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// What one step reports (scalars, already on the host).
#[derive(Debug, Clone, Default)]
pub struct StepStats {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub weight_decay: f64,
    pub teacher_momentum: f64,
    pub teacher_temp: f64,
    /// Collapse monitors, computed every `train.monitor_every` steps.
    pub monitors: Option<Monitors>,
}

#[derive(Debug, Clone, Default)]
pub struct Monitors {
    /// Mean per-sample entropy of the teacher's output distribution (nats).
    pub teacher_entropy: f64,
    /// Entropy of the batch-mean teacher distribution (nats).
    pub teacher_mean_entropy: f64,
    /// Mean KL(teacher ‖ student) over the loss pairs.
    pub kl_teacher_student: f64,
    pub center_norm: f64,
    /// Share of output dimensions that carry mass in the batch-mean teacher distribution.
    pub active_dims: f64,
}

pub struct Engine {
    _device: Device,
}

impl Engine {
    pub fn new(
        model: &ModelConfig,
        train: &TrainConfig,
        augment: &AugmentConfig,
        plan: Plan,
        device: Device,
    ) -> Result<Self, EngineError> {
        let _ = (model, train, augment, plan);
        todo!("engine")
    }

    /// Runs one optimisation step on a batch; errors on a non-finite loss before any state moves.
    pub fn step(&mut self, batch: &Batch) -> Result<StepStats, EngineError> {
        let _ = batch;
        todo!()
    }

    /// Steps done so far (the index of the next step).
    pub fn global_step(&self) -> u64 {
        todo!()
    }

    /// Every tensor of the training state, by name: `student.*`, `teacher.*`, `optim.*`,
    /// `loss.center`. Enough, with `global_step`, to resume bit for bit.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        todo!()
    }

    /// Restores what `state` returned, and the step counter.
    pub fn load_state(
        &mut self,
        tensors: Vec<(String, Tensor)>,
        step: u64,
    ) -> Result<(), EngineError> {
        let _ = (tensors, step);
        todo!()
    }

    /// Teacher backbone CLS features of u8 RGB images `[n, h, w, 3]` (normalised inside),
    /// as float32 on the CPU, `[n, embed_dim]`.
    pub fn teacher_features(&self, images_nhwc_u8: &Tensor) -> Tensor {
        let _ = images_nhwc_u8;
        todo!()
    }
}

/// Resolves `train.device` to a libtorch device.
pub fn select_device(choice: crate::train::config::DeviceChoice) -> Device {
    use crate::train::config::DeviceChoice;
    match choice {
        DeviceChoice::Cpu => Device::Cpu,
        DeviceChoice::Cuda => Device::Cuda(0),
        DeviceChoice::Auto => Device::cuda_if_available(),
    }
}
