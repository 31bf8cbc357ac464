//! The DINO loss (`DINOLoss` in facebookresearch/dino): cross-entropy between the centred,
//! sharpened teacher distribution of each global view and the student's distribution of every
//! other view, plus the centre's EMA update.

use tch::{Kind, Tensor};

/// Loss settings and the centre `c` (`[1, K]`), the only state of the loss.
pub struct DinoLoss {
    pub student_temp: f64,
    pub center_momentum: f64,
    /// When false the centre stays at its current value (collapse experiments).
    pub centering: bool,
    pub center: Tensor,
}

impl DinoLoss {
    pub fn new(
        out_dim: i64,
        student_temp: f64,
        center_momentum: f64,
        centering: bool,
        device: tch::Device,
    ) -> Self {
        DinoLoss {
            student_temp,
            center_momentum,
            centering,
            center: Tensor::zeros([1, out_dim], (Kind::Float, device)),
        }
    }

    /// `softmax((t − c) / τ_t)` without gradient, `[2B, K]`.
    pub fn teacher_probs(&self, teacher_logits: &Tensor, teacher_temp: f64) -> Tensor {
        tch::no_grad(|| {
            ((teacher_logits.to_kind(Kind::Float) - &self.center) / teacher_temp)
                .softmax(-1, Kind::Float)
        })
    }

    /// Mean over pairs (teacher global i, student view v ≠ i) of the batch-mean cross-entropy.
    /// `student_logits` is `[V·B, K]` view-major (the 2 globals first), `teacher_logits`
    /// `[2·B, K]`. Same value as DINO's double loop, computed as one batched product.
    pub fn loss(
        &self,
        student_logits: &Tensor,
        teacher_logits: &Tensor,
        teacher_temp: f64,
    ) -> Tensor {
        let q = self.teacher_probs(teacher_logits, teacher_temp);
        let (tb, k) = q.size2().expect("teacher [2B, K]");
        let b = tb / 2;
        let v = student_logits.size()[0] / b;
        let ls =
            (student_logits.to_kind(Kind::Float) / self.student_temp).log_softmax(-1, Kind::Float);
        // [B, 2, K] x [B, K, V] -> [B, 2, V]: Σ_k q_i·log s_v per sample.
        let q = q.reshape([2, b, k]).transpose(0, 1);
        let ls = ls.reshape([v, b, k]).permute([1, 2, 0]);
        let ce = -q.bmm(&ls).mean_dim([0i64].as_slice(), false, Kind::Float); // [2, V]
        let mask = Tensor::ones([2, v], (Kind::Float, ce.device()))
            - Tensor::eye_m(2, v, (Kind::Float, ce.device()));
        let terms = (2 * v - 2).max(1) as f64;
        (ce * mask).sum(Kind::Float) / terms
    }

    /// `c ← m·c + (1 − m)·mean(teacher logits over the 2B rows)` (DINO's `update_center`,
    /// single process). No-op when centering is off.
    pub fn update_center(&mut self, teacher_logits: &Tensor) {
        let sum = self.batch_sum(teacher_logits);
        self.apply_batch_sum(&sum, teacher_logits.size()[0] as usize);
    }

    /// The sum of the teacher logits over the batch rows, `[1, K]` float32 (all-reduced across
    /// ranks before `apply_batch_sum` under data parallelism).
    pub fn batch_sum(&self, teacher_logits: &Tensor) -> Tensor {
        tch::no_grad(|| {
            teacher_logits.to_kind(Kind::Float).sum_dim_intlist(
                [0i64].as_slice(),
                true,
                Kind::Float,
            )
        })
    }

    /// `c ← m·c + (1 − m)·sum/rows`. No-op when centering is off.
    pub fn apply_batch_sum(&mut self, sum: &Tensor, rows: usize) {
        if !self.centering {
            return;
        }
        tch::no_grad(|| {
            let batch_center = sum / rows as f64;
            let new =
                &self.center * self.center_momentum + batch_center * (1.0 - self.center_momentum);
            self.center.copy_(&new);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// B = 1, K = 2, two globals and one local, logits chosen by hand; reference computed by
    /// the explicit DINO double loop in f64 below.
    #[test]
    fn loss_matches_hand_computation() {
        let dev = tch::Device::Cpu;
        let mut l = DinoLoss::new(2, 0.5, 0.9, true, dev);
        l.center
            .copy_(&Tensor::from_slice(&[0.1f32, -0.1]).reshape([1, 2]));
        let s = [[1.0f64, 0.0], [0.0, 1.0], [0.5, 0.5]];
        let t = [[2.0f64, 0.0], [0.0, 1.0]];
        let tt = 0.25;
        let student = Tensor::from_slice(&s.concat().iter().map(|&x| x as f32).collect::<Vec<_>>())
            .reshape([3, 2]);
        let teacher = Tensor::from_slice(&t.concat().iter().map(|&x| x as f32).collect::<Vec<_>>())
            .reshape([2, 2]);
        let got = l.loss(&student, &teacher, tt).double_value(&[]);

        let softmax = |z: [f64; 2]| {
            let m = z[0].max(z[1]);
            let e = [(z[0] - m).exp(), (z[1] - m).exp()];
            [e[0] / (e[0] + e[1]), e[1] / (e[0] + e[1])]
        };
        let c = [0.1f32 as f64, -0.1f32 as f64];
        let mut total = 0.0;
        let mut n = 0;
        for (i, ti) in t.iter().enumerate() {
            let q = softmax([(ti[0] - c[0]) / tt, (ti[1] - c[1]) / tt]);
            for (v, sv) in s.iter().enumerate() {
                if v == i {
                    continue;
                }
                let p = softmax([sv[0] / 0.5, sv[1] / 0.5]);
                total += -(q[0] * p[0].ln() + q[1] * p[1].ln());
                n += 1;
            }
        }
        let want = total / n as f64;
        assert!((got - want).abs() < 1e-6, "got {got}, want {want}");

        l.update_center(&teacher);
        let c1: Vec<f32> = Vec::try_from(l.center.reshape([2])).unwrap();
        assert!((c1[0] as f64 - (0.9 * c[0] + 0.1 * 1.0)).abs() < 1e-6);
        assert!((c1[1] as f64 - (0.9 * c[1] + 0.1 * 0.5)).abs() < 1e-6);
    }
}
