//! Per-step schedules, precomputed from the plan as DINO's `utils.cosine_scheduler` does.

use super::config::{Plan, TrainConfig};

/// DINO's `cosine_scheduler(base, final, epochs, niter_per_ep, warmup_epochs, start_warmup)`:
/// `np.linspace(start_warmup, base, warmup_iters)` (endpoint included) followed by
/// `final + ½(base − final)(1 + cos(π·i/n))` over the remaining `n` steps.
/// `warmup_epochs` may be fractional; warm-up steps are `round(warmup_epochs · steps_per_epoch)`.
pub fn cosine_scheduler(
    base: f64,
    final_value: f64,
    plan: Plan,
    warmup_epochs: f64,
    start_warmup: f64,
) -> Vec<f64> {
    let total = plan.total_steps() as usize;
    let warmup = ((warmup_epochs * plan.steps_per_epoch as f64).round() as usize).min(total);
    let mut out = Vec::with_capacity(total);
    for i in 0..warmup {
        out.push(if warmup == 1 {
            start_warmup
        } else {
            start_warmup + (base - start_warmup) * i as f64 / (warmup - 1) as f64
        });
    }
    let n = total - warmup;
    for i in 0..n {
        out.push(
            final_value
                + 0.5
                    * (base - final_value)
                    * (1.0 + (std::f64::consts::PI * i as f64 / n as f64).cos()),
        );
    }
    out
}

/// Teacher temperature per step: linear warm-up from `warmup_teacher_temp` to `teacher_temp`
/// over `warmup_teacher_temp_epochs` (linspace, endpoint included), then constant.
/// DINO indexes its linspace per *epoch*; we spread the same ramp over steps so the temperature
/// moves smoothly — at every epoch boundary the value equals DINO's up to the ramp's step.
pub fn teacher_temp_schedule(cfg: &TrainConfig, plan: Plan) -> Vec<f64> {
    let total = plan.total_steps() as usize;
    let warmup = ((cfg.warmup_teacher_temp_epochs * plan.steps_per_epoch as f64).round() as usize)
        .min(total);
    (0..total)
        .map(|i| {
            if i >= warmup {
                cfg.teacher_temp
            } else if warmup == 1 {
                cfg.warmup_teacher_temp
            } else {
                cfg.warmup_teacher_temp
                    + (cfg.teacher_temp - cfg.warmup_teacher_temp) * i as f64 / (warmup - 1) as f64
            }
        })
        .collect()
}

/// Every schedule value for one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepValues {
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub teacher_temp: f64,
    /// Whether the head's last layer is frozen at this step.
    pub freeze_last_layer: bool,
}

/// The run's schedules, one entry per step.
#[derive(Debug, Clone)]
pub struct Schedules {
    pub lr: Vec<f64>,
    pub weight_decay: Vec<f64>,
    pub momentum: Vec<f64>,
    pub teacher_temp: Vec<f64>,
    /// Steps at the start during which the last layer gets no update.
    pub freeze_steps: u64,
}

impl Schedules {
    /// lr: warm-up from 0 to `peak_lr()` then cosine to `min_lr`; wd: cosine `weight_decay` →
    /// `weight_decay_end`; teacher momentum: cosine `momentum_teacher` → 1 (as in DINO).
    pub fn new(cfg: &TrainConfig, plan: Plan) -> Self {
        Schedules {
            lr: cosine_scheduler(cfg.peak_lr(), cfg.min_lr, plan, cfg.warmup_epochs, 0.0),
            weight_decay: cosine_scheduler(cfg.weight_decay, cfg.weight_decay_end, plan, 0.0, 0.0),
            momentum: cosine_scheduler(cfg.momentum_teacher, 1.0, plan, 0.0, 0.0),
            teacher_temp: teacher_temp_schedule(cfg, plan),
            freeze_steps: (cfg.freeze_last_layer_epochs * plan.steps_per_epoch as f64).round()
                as u64,
        }
    }

    /// Values at `step`; past the plan's end the last value holds (endless streams).
    pub fn at(&self, step: u64) -> StepValues {
        let pick = |v: &Vec<f64>| v.get(step as usize).or(v.last()).copied().unwrap_or(0.0);
        StepValues {
            lr: pick(&self.lr),
            weight_decay: pick(&self.weight_decay),
            momentum: pick(&self.momentum),
            teacher_temp: pick(&self.teacher_temp),
            freeze_last_layer: step < self.freeze_steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_matches_dino_formula() {
        let plan = Plan {
            steps_per_epoch: 10,
            epochs: 5,
        };
        let s = cosine_scheduler(1.0, 0.1, plan, 1.0, 0.0);
        assert_eq!(s.len(), 50);
        assert_eq!(s[0], 0.0);
        assert!((s[9] - 1.0).abs() < 1e-15);
        assert!((s[10] - 1.0).abs() < 1e-15);
        let i = 20.0;
        let want = 0.1 + 0.45 * (1.0 + (std::f64::consts::PI * i / 40.0).cos());
        assert!((s[30] - want).abs() < 1e-15);
        assert!(s[49] > 0.1 && s[49] < 0.11);
    }

    #[test]
    fn teacher_temp_ramps_then_holds() {
        let cfg = TrainConfig {
            warmup_teacher_temp_epochs: 2.0,
            ..Default::default()
        };
        let t = teacher_temp_schedule(
            &cfg,
            Plan {
                steps_per_epoch: 3,
                epochs: 4,
            },
        );
        assert_eq!(t[0], 0.04);
        assert!((t[5] - 0.07).abs() < 1e-15);
        assert_eq!(t[11], 0.07);
    }
}
