//! Collapse monitors (DINO §5.3 / Fig. 7): the two collapse modes show in the teacher's output
//! entropy and in KL(teacher ‖ student).

use tch::{Kind, Tensor};

use super::engine::Monitors;

/// Computes the monitors from the teacher's probabilities `q` (`[2B, K]`, already centred and
/// sharpened), the loss value (mean cross-entropy over pairs) and the centre.
///
/// KL(teacher ‖ student) averaged over the loss pairs equals the loss minus the mean teacher
/// entropy, because every global view is the teacher of the same number of pairs.
pub fn compute(q: &Tensor, log_q: &Tensor, loss: f64, center: &Tensor) -> Monitors {
    tch::no_grad(|| {
        let k = q.size()[1];
        let ent = -(q * log_q)
            .sum_dim_intlist([-1i64].as_slice(), false, Kind::Float)
            .mean(Kind::Float);
        let mean = q.mean_dim([0i64].as_slice(), false, Kind::Float);
        let mean_ent = -(&mean * mean.clamp_min(1e-30).log()).sum(Kind::Float);
        let active = mean
            .gt(1.0 / (10.0 * k as f64))
            .to_kind(Kind::Float)
            .mean(Kind::Float);
        let teacher_entropy = ent.double_value(&[]);
        Monitors {
            teacher_entropy,
            teacher_mean_entropy: mean_ent.double_value(&[]),
            kl_teacher_student: loss - teacher_entropy,
            center_norm: center.norm().double_value(&[]),
            active_dims: active.double_value(&[]),
        }
    })
}

/// Bands, as fractions of ln K, that flag a collapse. Chosen from the two failure modes:
/// - one-hot: the batch-mean teacher distribution concentrates on a few dimensions — its entropy
///   falls below 20 % of ln K, i.e. fewer than K^0.2 effective dimensions (2.3 of 64, 9 of
///   65536) — or fewer than 1 % of dims carry mass. Per-sample sharpness alone is healthy
///   (DINO's teacher is sharp by design); what collapses is the spread across samples.
/// - uniform: the per-sample teacher entropy exceeds 95 % of ln K — the teacher says nothing.
/// - KL(teacher ‖ student) below 1e-3 nats: the student copies an uninformative teacher.
pub const ONE_HOT_FRACTION: f64 = 0.2;
pub const MIN_ACTIVE_DIMS: f64 = 0.01;
pub const UNIFORM_FRACTION: f64 = 0.95;
pub const MIN_KL: f64 = 1e-3;

/// A human-readable warning when the monitors sit in a collapse band, else `None`.
pub fn collapse_warning(m: &Monitors, out_dim: i64) -> Option<String> {
    let ln_k = (out_dim as f64).ln();
    let mut why = Vec::new();
    if m.teacher_mean_entropy < ONE_HOT_FRACTION * ln_k || m.active_dims < MIN_ACTIVE_DIMS {
        why.push(format!(
            "one-hot collapse: batch-mean teacher entropy {:.3} nats (ln K = {:.3}), {:.2}% of dims active",
            m.teacher_mean_entropy,
            ln_k,
            100.0 * m.active_dims
        ));
    }
    if m.teacher_entropy > UNIFORM_FRACTION * ln_k {
        why.push(format!(
            "uniform collapse: teacher entropy {:.3} nats of ln K = {:.3}",
            m.teacher_entropy, ln_k
        ));
    }
    if m.kl_teacher_student < MIN_KL {
        why.push(format!(
            "KL(teacher‖student) {:.2e} nats: outputs carry no information",
            m.kl_teacher_student
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands() {
        let k = 1000;
        let ln_k = (k as f64).ln();
        let healthy = Monitors {
            teacher_entropy: 2.0,
            teacher_mean_entropy: 6.0,
            kl_teacher_student: 0.5,
            center_norm: 1.0,
            active_dims: 0.6,
        };
        assert!(collapse_warning(&healthy, k).is_none());
        let one_hot = Monitors {
            teacher_entropy: 0.01,
            teacher_mean_entropy: 0.05,
            active_dims: 0.001,
            kl_teacher_student: 1e-4,
            ..healthy.clone()
        };
        assert!(collapse_warning(&one_hot, k).unwrap().contains("one-hot"));
        let uniform = Monitors {
            teacher_entropy: ln_k - 0.01,
            teacher_mean_entropy: ln_k,
            active_dims: 1.0,
            ..healthy.clone()
        };
        assert!(collapse_warning(&uniform, k).unwrap().contains("uniform"));
    }
}
