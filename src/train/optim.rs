//! Optimisers written with tensor ops so that their state is plain named tensors (checkpointable)
//! and the update is exactly PyTorch's: `torch.optim.AdamW` (single-tensor path),
//! `torch.optim.SGD(momentum=0.9)`, and DINO's `utils.LARS`. Plus DINO's per-tensor gradient
//! clipping.

use std::collections::HashMap;

use tch::{Kind, Tensor};

use super::config::OptimizerKind;
use crate::model::Params;

/// One optimised tensor and its state.
struct Slot {
    name: String,
    param: Tensor,
    /// In the regularised group (weight decay applies): not a bias and not 1-D (DINO's
    /// `get_params_groups`).
    decay: bool,
    /// Updates done on this tensor (torch keeps a per-parameter `step`; a tensor whose grad is
    /// cancelled — the frozen last layer — does not advance).
    step: Tensor,
    /// AdamW `exp_avg`; SGD `momentum_buffer`; LARS `mu`.
    m1: Tensor,
    /// AdamW `exp_avg_sq` (unused otherwise, kept empty).
    m2: Option<Tensor>,
}

/// The student's optimiser.
pub struct Optimizer {
    kind: OptimizerKind,
    slots: Vec<Slot>,
    pub betas: (f64, f64),
    pub eps: f64,
    /// SGD/LARS momentum.
    pub momentum: f64,
    /// LARS trust coefficient.
    pub eta: f64,
}

fn state_names(kind: OptimizerKind) -> (&'static str, Option<&'static str>) {
    match kind {
        OptimizerKind::Adamw => ("exp_avg", Some("exp_avg_sq")),
        OptimizerKind::Sgd => ("momentum_buffer", None),
        OptimizerKind::Lars => ("mu", None),
    }
}

impl Optimizer {
    /// Takes the trainable tensors of `params` in order.
    pub fn new(kind: OptimizerKind, params: &Params) -> Self {
        let slots = params
            .trainable()
            .map(|e| {
                let p = e.tensor.shallow_clone();
                let zeros = || Tensor::zeros_like(&p).detach();
                Slot {
                    name: e.name.clone(),
                    decay: !(e.name.ends_with(".bias") || p.dim() == 1),
                    step: Tensor::zeros([], (Kind::Float, p.device())),
                    m1: zeros(),
                    m2: (kind == OptimizerKind::Adamw).then(zeros),
                    param: p,
                }
            })
            .collect();
        Optimizer {
            kind,
            slots,
            betas: (0.9, 0.999),
            eps: 1e-8,
            momentum: 0.9,
            eta: 0.001,
        }
    }

    /// Names of the optimised tensors in the weight-decayed group.
    pub fn decayed(&self) -> Vec<&str> {
        self.slots
            .iter()
            .filter(|s| s.decay)
            .map(|s| s.name.as_str())
            .collect()
    }

    /// DINO's `clip_gradients`: for each tensor, `coef = clip / (‖g‖ + 1e-6)`, scale by it if
    /// < 1. On the CPU the coefficient is already computed when we look at it, so the test is
    /// DINO's `if clip_coef < 1` and a gradient that needs no clipping is not touched. On an
    /// accelerator reading it would stall the device queue, so there every gradient is scaled
    /// by `min(coef, 1)` instead (exactly 1 when not clipping: the same result).
    pub fn clip_gradients(&self, clip: f64) {
        if clip <= 0.0 {
            return;
        }
        tch::no_grad(|| {
            for s in &self.slots {
                let mut g = s.param.grad();
                if !g.defined() {
                    continue;
                }
                // `clip / t` in Python is `t.reciprocal() * clip`: the same rounding.
                let coef = (g.norm() + 1e-6).reciprocal() * clip;
                if g.device() == tch::Device::Cpu {
                    if coef.double_value(&[]) < 1.0 {
                        let _ = g.g_mul_(&coef);
                    }
                } else {
                    let _ = g.g_mul_(&coef.clamp_max(1.0));
                }
            }
        });
    }

    /// Gradients of the optimised tensors (undefined ones skipped), e.g. for loss unscaling.
    pub fn grads(&self) -> Vec<Tensor> {
        self.slots
            .iter()
            .map(|s| s.param.grad())
            .filter(|g| g.defined())
            .collect()
    }

    /// One update with `lr` for all groups and `weight_decay` for the regularised group.
    /// Tensors for which `skip(name)` holds are left untouched, state included (DINO sets their
    /// `.grad = None`, which makes torch optimisers skip them).
    pub fn step(&mut self, lr: f64, weight_decay: f64, skip: impl Fn(&str) -> bool) {
        let (b1, b2) = self.betas;
        let (eps, momentum, eta, kind) = (self.eps, self.momentum, self.eta, self.kind);
        tch::no_grad(|| {
            for s in self.slots.iter_mut() {
                let grad = s.param.grad();
                if !grad.defined() || skip(&s.name) {
                    continue;
                }
                let wd = if s.decay { weight_decay } else { 0.0 };
                let _ = s.step.g_add_scalar_(1.0);
                let step = s.step.double_value(&[]);
                let p = &mut s.param;
                match kind {
                    OptimizerKind::Adamw => {
                        // torch's `_single_tensor_adamw` with its roundings. In-place forms
                        // where tch has them save a temporary (a pass over memory) each; tch's
                        // `addcmul_` has no `value`, so `(c·g)·g` is formed first, as torch's
                        // kernel does.
                        if wd != 0.0 {
                            let _ = p.g_mul_scalar_(1.0 - lr * wd);
                        }
                        let _ = s.m1.lerp_(&grad, 1.0 - b1);
                        let m2 = s.m2.as_mut().expect("adamw state");
                        let _ = m2.g_mul_scalar_(b2);
                        let _ = m2.addcmul_(&(&grad * (1.0 - b2)), &grad);
                        let bc1 = 1.0 - b1.powf(step);
                        let bc2 = 1.0 - b2.powf(step);
                        let step_size = lr / bc1;
                        let mut denom = m2.sqrt();
                        let _ = denom.g_div_scalar_(bc2.sqrt());
                        let _ = denom.g_add_scalar_(eps);
                        // addcdiv_(m1, denom, value = -step_size): p + (-step_size)·(m1/denom).
                        let mut update = &s.m1 / &denom;
                        let _ = update.g_mul_scalar_(-step_size);
                        let _ = p.g_add_(&update);
                    }
                    OptimizerKind::Sgd => {
                        let d = if wd != 0.0 {
                            &grad + &*p * wd
                        } else {
                            grad.shallow_clone()
                        };
                        if step == 1.0 {
                            s.m1.copy_(&d);
                        } else {
                            let _ = s.m1.g_mul_scalar_(momentum);
                            let _ = s.m1.g_add_(&d);
                        }
                        let _ = p.g_add_(&(&s.m1 * (-lr)));
                    }
                    OptimizerKind::Lars => {
                        let mut d = grad.shallow_clone();
                        if p.dim() != 1 {
                            d = &d + &*p * wd;
                            let pn = p.norm();
                            let un = d.norm();
                            let one = Tensor::ones_like(&pn);
                            // torch.where(pn > 0, torch.where(un > 0, eta·pn/un, 1), 1); tch's
                            // `a.where_self(cond, b)` is `torch.where(cond, a, b)`.
                            let inner = ((&pn * eta) / &un).where_self(&un.gt(0.0), &one);
                            let q = inner.where_self(&pn.gt(0.0), &one);
                            d *= q;
                        }
                        let _ = s.m1.g_mul_scalar_(momentum);
                        let _ = s.m1.g_add_(&d);
                        let _ = p.g_add_(&(&s.m1 * (-lr)));
                    }
                }
            }
        });
    }

    /// State tensors: `{prefix}{param}.step` and the moment buffers (torch's names).
    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let (n1, n2) = state_names(self.kind);
        let mut out = Vec::new();
        for s in &self.slots {
            out.push((format!("{prefix}{}.step", s.name), s.step.copy()));
            out.push((format!("{prefix}{}.{n1}", s.name), s.m1.copy()));
            if let (Some(n2), Some(m2)) = (n2, &s.m2) {
                out.push((format!("{prefix}{}.{n2}", s.name), m2.copy()));
            }
        }
        out
    }

    pub fn load_state(
        &mut self,
        prefix: &str,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<(), String> {
        let (n1, n2) = state_names(self.kind);
        let get = |key: String, like: &Tensor| -> Result<Tensor, String> {
            let t = tensors
                .get(&key)
                .ok_or_else(|| format!("missing tensor {key}"))?;
            if t.size() != like.size() {
                return Err(format!(
                    "{key}: shape {:?}, expected {:?}",
                    t.size(),
                    like.size()
                ));
            }
            Ok(t.to_device(like.device()).to_kind(like.kind()))
        };
        for s in self.slots.iter_mut() {
            let step = get(format!("{prefix}{}.step", s.name), &s.step)?;
            let m1 = get(format!("{prefix}{}.{n1}", s.name), &s.m1)?;
            s.step.copy_(&step);
            s.m1.copy_(&m1);
            if let (Some(n2), Some(m2)) = (n2, s.m2.as_mut()) {
                let v = get(format!("{prefix}{}.{n2}", s.name), m2)?;
                m2.copy_(&v);
            }
        }
        Ok(())
    }
}
