//! The DINO training step: student/teacher networks, loss, optimiser, EMA and schedules.
//! Owned by the trainer thread; every tensor lives here.
//!
//! One step follows `train_one_epoch` of facebookresearch/dino: teacher on the 2 global crops
//! (no grad), student on all crops (one backbone pass per resolution), DINO loss, finite check,
//! backward, per-tensor clipping, last-layer freeze, optimiser step with the step's lr/wd, centre
//! update, teacher EMA. Stochastic-depth masks come from `Rng::keyed(&[seed, step, ..])` and
//! libtorch's global RNG is re-seeded from `(seed, step)` at every step, so the whole state after
//! step `s` is a function of the state before it and the batch: resuming from a checkpoint
//! reproduces an uninterrupted run bit for bit on the CPU.
//!
//! With several ranks (`attach_dist`) it follows the official code under DDP: every rank starts
//! from rank 0's weights, student gradients are averaged over ranks after backward (a few flat
//! buckets), the loss that is checked, logged and exported is the global batch's, the centre
//! comes from the all-reduced batch sum / (batch × world), the lr scales with the global batch,
//! and a checksum of the teacher is compared across ranks every `dist.check_every` steps.

use std::collections::HashMap;
use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use super::amp::{self, LossScaler, Mode};
use super::config::{Plan, TeacherUpdate, TrainConfig};
use super::loss::DinoLoss;
use super::monitor;
use super::optim::Optimizer;
use super::schedule::{Schedules, StepValues};
use crate::augment::AugmentConfig;
use crate::batch::Batch;
use crate::dist::{self, Dist, DistConfig, DistError, ReduceOp};
use crate::model::params::Role;
use crate::model::{DinoNet, ModelConfig, Pass};
use crate::rng::{derive_seed, Rng};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("non-finite loss {loss} at step {step}")]
    NonFinite { loss: f64, step: u64 },
    #[error("checkpoint state: {0}")]
    State(String),
    #[error("batch does not match the configuration: {0}")]
    Batch(String),
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Dist(#[from] DistError),
    #[error("the teacher differs between ranks after step {step} (checksums by rank: {sums:?}): the replicas diverged")]
    Diverged { step: u64, sums: Vec<[f64; 2]> },
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
    /// Collapse monitors, computed every `train.monitor_every` steps (from this rank's batch).
    pub monitors: Option<Monitors>,
    /// Some rank asked to stop (all ranks agree on it, so all stop after this step).
    pub stop: bool,
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
    /// Share of output dimensions that carry mass in the batch-mean teacher distribution
    /// (mean probability above 1/(10·K)).
    pub active_dims: f64,
}

pub use super::monitor::collapse_warning;

/// Seed key for initialisation (steps use `(seed, step)`).
const INIT_KEY: u64 = u64::MAX;
static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// Seed key of the stochastic-depth masks of a step: `Rng::keyed(&[seed, step, DROP_PATH_KEY])`.
const DROP_PATH_KEY: u64 = 0xD409_0A7B;

pub struct Engine {
    device: Device,
    mode: Mode,
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    plan: Plan,
    global_size: u32,
    local_size: u32,
    local_crops: usize,
    student: DinoNet,
    teacher: DinoNet,
    loss: DinoLoss,
    optim: Optimizer,
    scaler: Option<LossScaler>,
    schedules: Schedules,
    step: u64,
    mean: Tensor,
    std: Tensor,
    dist: Arc<Dist>,
    dist_cfg: DistConfig,
    sync_bn: bool,
}

impl Engine {
    pub fn new(
        model: &ModelConfig,
        train: &TrainConfig,
        augment: &AugmentConfig,
        plan: Plan,
        device: Device,
    ) -> Result<Self, EngineError> {
        if train.threads > 0 {
            tch::set_num_threads(train.threads as i32);
        }
        if train.precision == super::config::Precision::Bf16
            && device == Device::Cpu
            && !amp::cpu_bf16_units()
        {
            return Err(EngineError::Unsupported(
                "train.precision = \"bf16\" on the CPU needs bf16 matrix instructions \
                 (AVX512-BF16 or AMX), which this CPU lacks: use \"fp32\""
                    .into(),
            ));
        }
        let img = augment.global_size as i64;
        // Initialisation draws from libtorch's process-global RNG; seeding and drawing under one
        // lock makes it a function of the seed even when several engines start concurrently.
        let (student, mut teacher) = {
            let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            tch::manual_seed(derive_seed(&[train.seed, INIT_KEY]) as i64);
            let student = DinoNet::new(model, img, model.drop_path, device);
            (student, DinoNet::new(model, img, 0.0, device))
        };
        teacher
            .params
            .copy_from(&student.params)
            .map_err(EngineError::State)?;
        teacher.params.freeze();
        let mode = amp::resolve(train.precision, device);
        let optim = Optimizer::new(train.optimizer, &student.params);
        let mean = Tensor::from_slice(&train.normalize_mean.map(|x| x as f32))
            .reshape([1, 3, 1, 1])
            .to_device(device);
        let std = Tensor::from_slice(&train.normalize_std.map(|x| x as f32))
            .reshape([1, 3, 1, 1])
            .to_device(device);
        Ok(Engine {
            device,
            mode,
            cfg: train.clone(),
            model_cfg: model.clone(),
            plan,
            global_size: augment.global_size,
            local_size: augment.local_size,
            local_crops: augment.local_crops,
            loss: DinoLoss::new(
                model.out_dim,
                train.student_temp,
                train.center_momentum,
                train.centering,
                device,
            ),
            student,
            teacher,
            optim,
            scaler: (mode == Mode::Fp16).then(LossScaler::default),
            schedules: Schedules::new(train, plan),
            step: 0,
            mean,
            std,
            dist: Arc::new(Dist::single()),
            dist_cfg: DistConfig::default(),
            sync_bn: model.sync_bn,
        })
    }

    /// Joins a process group: every rank takes rank 0's student, teacher (with BatchNorm
    /// buffers) and centre, and the lr schedule scales with the global batch
    /// (`base_lr × batch_size × world / 256`). Call after any checkpoint restore.
    pub fn attach_dist(&mut self, dist: Arc<Dist>, cfg: &DistConfig) -> Result<(), EngineError> {
        if dist.is_distributed() {
            tch::no_grad(|| -> Result<(), DistError> {
                for (net, p) in [
                    ("student", &self.student.params),
                    ("teacher", &self.teacher.params),
                ] {
                    for e in p.entries() {
                        dist.broadcast(&e.tensor.detach(), 0, &format!("{net}.{}", e.name))?;
                    }
                }
                dist.broadcast(&self.loss.center, 0, "loss.center")
            })?;
            if self.sync_bn {
                // BatchNorm becomes SyncBatchNorm in both networks, as the official code's
                // convert_sync_batchnorm.
                self.student.params.sync_batchnorm(dist.clone());
                self.teacher.params.sync_batchnorm(dist.clone());
            }
        }
        let mut scaled = self.cfg.clone();
        scaled.base_lr *= dist.world() as f64;
        self.schedules = Schedules::new(&scaled, self.plan);
        self.dist = dist;
        self.dist_cfg = cfg.clone();
        Ok(())
    }

    /// Rank 0's BatchNorm running statistics to every rank after each step (DDP's
    /// `broadcast_buffers` does it before each forward: the same statistics reach the next
    /// step), for per-rank BatchNorm: without it the replicas' statistics drift apart, the
    /// checkpoint would hold rank 0's alone, and the teacher checksum stops the run. Networks without buffers (ViTs without `head_bn`) send nothing.
    fn broadcast_buffers(&self) -> Result<(), DistError> {
        tch::no_grad(|| {
            for (net, p) in [
                ("student", &self.student.params),
                ("teacher", &self.teacher.params),
            ] {
                for e in p.entries().iter().filter(|e| e.role == Role::Buffer) {
                    self.dist
                        .broadcast(&e.tensor, 0, &format!("{net}.{}", e.name))?;
                }
            }
            Ok(())
        })
    }

    /// u8 `[n, side, side, 3]` bytes → normalised float `[n, 3, side, side]` on the device,
    /// as torchvision's `ToTensor` + `Normalize` compute it.
    fn images(&self, bytes: &[u8], n: usize, side: u32) -> Tensor {
        let s = side as i64;
        let x = Tensor::from_slice(bytes)
            .reshape([n as i64, s, s, 3])
            .to_device(self.device);
        self.normalize(&x)
    }

    fn normalize(&self, nhwc_u8: &Tensor) -> Tensor {
        let x = nhwc_u8
            .permute([0, 3, 1, 2])
            .contiguous()
            .to_kind(Kind::Float)
            / 255.0;
        (x - &self.mean) / &self.std
    }

    fn check(&self, b: &Batch) -> Result<(), EngineError> {
        let g = b.global_size as usize;
        let l = b.local_size as usize;
        let problems = [
            (b.size == 0, "empty batch".to_string()),
            (
                b.global.len() != 2 * b.size * g * g * 3,
                format!(
                    "global buffer {} bytes for {} samples of {g}px",
                    b.global.len(),
                    b.size
                ),
            ),
            (
                b.local.len() != b.local_crops * b.size * l * l * 3,
                format!("local buffer {} bytes", b.local.len()),
            ),
            (
                b.local_crops != self.local_crops,
                format!(
                    "{} local crops, configured {}",
                    b.local_crops, self.local_crops
                ),
            ),
            (
                b.global_size != self.global_size,
                format!(
                    "global size {}, configured {}",
                    b.global_size, self.global_size
                ),
            ),
            (
                b.local_crops > 0 && b.local_size != self.local_size,
                format!(
                    "local size {}, configured {}",
                    b.local_size, self.local_size
                ),
            ),
        ];
        match problems.into_iter().find(|(bad, _)| *bad) {
            Some((_, msg)) => Err(EngineError::Batch(msg)),
            None => Ok(()),
        }
    }

    /// Runs one optimisation step on a batch; errors on a non-finite loss before any state moves.
    /// (BatchNorm running statistics — `head_bn` or ResNet only — are updated by the forward
    /// pass itself, as in PyTorch, before the loss is known.)
    pub fn step(&mut self, batch: &Batch) -> Result<StepStats, EngineError> {
        self.step_or_stop(batch, false)
    }

    /// `step`, with this rank's wish to stop after it; the returned `stop` is the agreement of
    /// all ranks (any rank's wish), so every rank stops after the same step.
    pub fn step_or_stop(&mut self, batch: &Batch, stop: bool) -> Result<StepStats, EngineError> {
        self.check(batch)?;
        let step = self.step;
        self.dist.set_step(step);
        let sv = self.schedules.at(step);
        tch::manual_seed(derive_seed(&[self.cfg.seed, step]) as i64);
        let mut drop_rng = Rng::keyed(&[self.cfg.seed, step, DROP_PATH_KEY]);

        let globals = self.images(&batch.global, 2 * batch.size, batch.global_size);
        let locals = (batch.local_crops > 0).then(|| {
            self.images(
                &batch.local,
                batch.local_crops * batch.size,
                batch.local_size,
            )
        });
        let (student_out, teacher_out) = amp::autocast(self.mode, self.device, || {
            let t = tch::no_grad(|| {
                self.teacher
                    .forward_groups(&[&globals], &mut Pass::train_no_drop())
            });
            let groups: Vec<&Tensor> = std::iter::once(&globals).chain(locals.as_ref()).collect();
            let mut pass = Pass {
                train: true,
                rng: Some(&mut drop_rng),
            };
            (self.student.forward_groups(&groups, &mut pass), t)
        });
        let teacher_out = teacher_out.to_kind(Kind::Float);
        let loss = self.loss.loss(&student_out, &teacher_out, sv.teacher_temp);
        let (loss_value, stop) = self.global_loss(&loss, stop)?;
        if !loss_value.is_finite() {
            return Err(EngineError::NonFinite {
                loss: loss_value,
                step,
            });
        }

        self.student.params.zero_grad();
        let found_inf = match &self.scaler {
            Some(scaler) => {
                (&loss * scaler.scale).backward();
                self.average_gradients()?;
                scaler.unscale(&self.optim.grads())
            }
            None => {
                loss.backward();
                self.average_gradients()?;
                false
            }
        };
        if !found_inf {
            self.optim.clip_gradients(self.cfg.clip_grad);
            let freeze = sv.freeze_last_layer;
            self.optim.step(sv.lr, sv.weight_decay, |name| {
                freeze && name.contains("last_layer")
            });
        }
        if let Some(scaler) = self.scaler.as_mut() {
            scaler.update(found_inf);
        }

        // Monitors see the teacher distribution the loss used (centre before its update) and
        // report the centre after it.
        let teacher_dist = step.is_multiple_of(self.cfg.monitor_every).then(|| {
            let q = self.loss.teacher_probs(&teacher_out, sv.teacher_temp);
            let log_q = tch::no_grad(|| {
                ((&teacher_out - &self.loss.center) / sv.teacher_temp).log_softmax(-1, Kind::Float)
            });
            (q, log_q)
        });
        self.update_center(&teacher_out)?;
        let monitors = teacher_dist
            .map(|(q, log_q)| monitor::compute(&q, &log_q, loss_value, &self.loss.center));
        self.update_teacher(step, sv);
        self.step += 1;
        if !self.sync_bn && self.dist.is_distributed() {
            self.broadcast_buffers()?;
        }
        self.check_replicas()?;
        Ok(StepStats {
            step,
            loss: loss_value,
            lr: sv.lr,
            weight_decay: sv.weight_decay,
            teacher_momentum: sv.momentum,
            teacher_temp: sv.teacher_temp,
            monitors,
            stop,
        })
    }

    /// The global batch's loss (mean of the ranks' means: ranks hold equal batches) and the
    /// ranks' agreement to stop, in one all-reduce of two numbers.
    fn global_loss(&self, loss: &Tensor, stop: bool) -> Result<(f64, bool), EngineError> {
        if !self.dist.is_distributed() {
            return Ok((loss.double_value(&[]), stop));
        }
        let t = Tensor::stack(
            &[
                loss.detach().to_kind(Kind::Double).to_device(Device::Cpu),
                Tensor::from(if stop { 1.0f64 } else { 0.0 }),
            ],
            0,
        );
        self.dist.all_reduce(&t, ReduceOp::Sum, "the loss")?;
        let v = Vec::<f64>::try_from(&t).map_err(EngineError::Torch)?;
        Ok((v[0] / self.dist.world() as f64, v[1] > 0.0))
    }

    /// DDP's gradient averaging: the student's gradients, all-reduced (mean) in flat buckets
    /// of at most `dist.bucket_mb`.
    fn average_gradients(&self) -> Result<(), EngineError> {
        let cap = (self.dist_cfg.bucket_mb * 1024.0 * 1024.0) as usize;
        dist::all_reduce_bucketed(
            &self.dist,
            &self.optim.grads(),
            ReduceOp::Avg,
            cap,
            "student gradients",
        )?;
        Ok(())
    }

    /// DINO's `update_center` under DDP: the batch sum of the teacher logits is all-reduced and
    /// divided by (rows × world).
    fn update_center(&mut self, teacher_out: &Tensor) -> Result<(), EngineError> {
        if !self.dist.is_distributed() {
            self.loss.update_center(teacher_out);
            return Ok(());
        }
        let sum = self.loss.batch_sum(teacher_out);
        self.dist
            .all_reduce(&sum, ReduceOp::Sum, "the centre's batch sum")?;
        let rows = teacher_out.size()[0] as usize * self.dist.world();
        self.loss.apply_batch_sum(&sum, rows);
        Ok(())
    }

    /// Every `dist.check_every` steps: the teacher's checksum must be the same on every rank.
    fn check_replicas(&self) -> Result<(), EngineError> {
        let every = self.dist_cfg.check_every;
        if !self.dist.is_distributed() || every == 0 || !self.step.is_multiple_of(every) {
            return Ok(());
        }
        let own = dist::checksum(
            self.teacher
                .params
                .entries()
                .iter()
                .map(|e| e.tensor.detach()),
        );
        let all = self.dist.all_gather(&own, "the teacher checksum")?;
        let sums: Vec<[f64; 2]> = Vec::<f64>::try_from(all.reshape([-1]))
            .map_err(EngineError::Torch)?
            .chunks(2)
            .map(|c| [c[0], c[1]])
            .collect();
        if sums.iter().any(|s| s != &sums[0]) {
            return Err(EngineError::Diverged {
                step: self.step,
                sums,
            });
        }
        Ok(())
    }

    /// Moves the teacher towards the student.
    ///
    /// - `ema` (the paper): after every step, `θ_t ← m·θ_t + (1 − m)·θ_s` with the step's `m`.
    /// - `epoch`: the teacher is held fixed through an epoch; after the epoch's last step it
    ///   makes one EMA move with the epoch's accumulated momentum `M = Π m_s` over the epoch's
    ///   steps, `θ_t ← M·θ_t + (1 − M)·θ_s(end of epoch)`. `M` is the weight the old teacher
    ///   would still carry after the epoch under per-step EMA, so both variants forget the past
    ///   at the same rate; with long epochs `M ≈ 0` and this becomes "copy the student". It is
    ///   stateless (no shadow weights), so checkpoints need nothing extra.
    ///
    /// Parameters only (BatchNorm statistics are not averaged), like DINO's `zip(parameters())`.
    fn update_teacher(&mut self, step: u64, sv: StepValues) {
        let m = match self.cfg.teacher_update {
            TeacherUpdate::Ema => sv.momentum,
            TeacherUpdate::Epoch => {
                let spe = self.plan.steps_per_epoch.max(1);
                if !(step + 1).is_multiple_of(spe) {
                    return;
                }
                let start = step + 1 - spe;
                (start..=step)
                    .map(|s| self.schedules.at(s).momentum)
                    .product()
            }
        };
        tch::no_grad(|| {
            for (q, k) in self
                .student
                .params
                .parameters()
                .zip(self.teacher.params.parameters())
            {
                let mut t = k.tensor.shallow_clone();
                let _ = t.g_mul_scalar_(m);
                let _ = t.g_add_(&(q.tensor.detach() * (1.0 - m)));
            }
        });
    }

    /// Continued pretraining: copies imported weights (official DINO `.pth`, timm ViT,
    /// `dino-stream export` output; see `crate::weights`) into the student, with the file's
    /// DINO head when every head tensor matches the configured head's shape, and the student
    /// into the teacher. The architecture in `[model]` must match the file's.
    pub fn init_from(&mut self, path: &std::path::Path) -> Result<String, EngineError> {
        use crate::weights;
        let state = |e: weights::WeightsError| EngineError::State(e.to_string());
        let tensors = weights::read_file(path).map_err(state)?;
        let imported = weights::select(path, tensors, weights::Which::Teacher).map_err(state)?;
        let head_fits = !imported.head.is_empty()
            && self
                .student
                .params
                .entries()
                .iter()
                .filter_map(|e| e.name.strip_prefix("head.").map(|n| (n, &e.tensor)))
                .all(|(n, t)| imported.head.get(n).is_some_and(|h| h.size() == t.size()));
        let n = weights::load_into(
            path,
            &mut self.student.params,
            "backbone.",
            &imported,
            head_fits.then_some("head."),
        )
        .map_err(state)?;
        self.teacher
            .params
            .copy_from(&self.student.params)
            .map_err(EngineError::State)?;
        Ok(format!(
            "{n} tensors from {} ({}{})",
            path.display(),
            imported.layout,
            if head_fits {
                ", with its DINO head"
            } else {
                "; head freshly initialised"
            }
        ))
    }

    /// Steps done so far (the index of the next step).
    pub fn global_step(&self) -> u64 {
        self.step
    }

    /// Every tensor of the training state, by name: `student.*`, `teacher.*`, `optim.*`,
    /// `loss.center` (and `amp.*` with fp16). Enough, with `global_step`, to resume bit for bit.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = self.student.params.snapshot("student.");
        out.extend(self.teacher.params.snapshot("teacher."));
        out.extend(self.optim.state("optim."));
        out.push(("loss.center".into(), self.loss.center.copy()));
        if let Some(s) = &self.scaler {
            out.extend(s.state());
        }
        out
    }

    /// Restores what `state` returned, and the step counter.
    pub fn load_state(
        &mut self,
        tensors: Vec<(String, Tensor)>,
        step: u64,
    ) -> Result<(), EngineError> {
        let map: HashMap<String, Tensor> = tensors.into_iter().collect();
        self.student
            .params
            .load("student.", &map)
            .map_err(EngineError::State)?;
        self.teacher
            .params
            .load("teacher.", &map)
            .map_err(EngineError::State)?;
        self.optim
            .load_state("optim.", &map)
            .map_err(EngineError::State)?;
        let c = map
            .get("loss.center")
            .ok_or_else(|| EngineError::State("missing tensor loss.center".into()))?;
        if c.size() != self.loss.center.size() {
            return Err(EngineError::State(format!(
                "loss.center: shape {:?}, expected {:?}",
                c.size(),
                self.loss.center.size()
            )));
        }
        tch::no_grad(|| {
            self.loss
                .center
                .copy_(&c.to_device(self.device).to_kind(Kind::Float))
        });
        if let Some(s) = self.scaler.as_mut() {
            if let (Some(scale), Some(tr)) = (map.get("amp.scale"), map.get("amp.growth_tracker")) {
                s.load(scale, tr);
            }
        }
        self.step = step;
        Ok(())
    }

    /// Teacher backbone CLS features of u8 RGB images `[n, h, w, 3]` (normalised inside),
    /// as float32 on the CPU, `[n, embed_dim]`. Always computed in fp32, whatever the training
    /// precision (as DINO's evaluation scripts do).
    pub fn teacher_features(&self, images_nhwc_u8: &Tensor) -> Tensor {
        let x = self.normalize(&images_nhwc_u8.to_device(self.device));
        tch::no_grad(|| self.teacher.backbone.forward(&x, &mut Pass::eval()))
            .to_kind(Kind::Float)
            .to_device(Device::Cpu)
            .contiguous()
    }

    /// The normalised input groups of a batch on the device: `[globals (2B), locals (L·B)]`
    /// (the second only with local crops), view-major as the loss expects.
    pub fn inputs(&self, batch: &Batch) -> Result<Vec<Tensor>, EngineError> {
        self.check(batch)?;
        let mut out = vec![self.images(&batch.global, 2 * batch.size, batch.global_size)];
        if batch.local_crops > 0 {
            out.push(self.images(
                &batch.local,
                batch.local_crops * batch.size,
                batch.local_size,
            ));
        }
        Ok(out)
    }

    /// The loss and its centre.
    pub fn loss_fn(&self) -> &DinoLoss {
        &self.loss
    }

    /// The student network (for tests and diagnostics).
    pub fn student(&self) -> &DinoNet {
        &self.student
    }

    pub fn teacher(&self) -> &DinoNet {
        &self.teacher
    }

    pub fn schedules(&self) -> &Schedules {
        &self.schedules
    }

    pub fn model_config(&self) -> &ModelConfig {
        &self.model_cfg
    }

    /// The precision the step runs in.
    pub fn precision(&self) -> Mode {
        self.mode
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;

/// Resolves `train.device` to a libtorch device.
pub fn select_device(choice: crate::train::config::DeviceChoice) -> Device {
    use crate::train::config::DeviceChoice;
    match choice {
        DeviceChoice::Cpu => Device::Cpu,
        DeviceChoice::Cuda => Device::Cuda(0),
        DeviceChoice::Auto => Device::cuda_if_available(),
    }
}
