//! Online k-NN: while training, the trainer thread classifies a bounded query subset of
//! `eval.knn.test` against a bounded bank from `eval.knn.train` with the teacher's features,
//! every `eval.knn.every_steps` steps, so the k-NN curve exists while a run goes.
//!
//! Why bounded and budgeted: the trainer is blocked while it extracts features, so the cost
//! is paid in training time. The subsets are decoded once, on a helper thread, into evaluation
//! views held in memory (bank + queries × side² × 3 bytes); afterwards an evaluation is one
//! forward pass over them. An evaluation is skipped when the time spent on k-NN so far exceeds
//! `BUDGET` of the training time so far, so the share stays at about 5% (plus at most one
//! evaluation) whatever the model, data or cadence.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use tch::Tensor;

use super::knn;
use super::KnnConfig;
use crate::augment::eval_view;
use crate::decode::decode_image;
use crate::source::{OpenedSource, Payload};

/// Largest share of training time spent on online k-NN.
pub const BUDGET: f64 = 0.05;

/// Evaluation views and labels of a subset.
struct Subset {
    pixels: Vec<u8>,
    labels: Vec<i64>,
}

struct Subsets {
    bank: Subset,
    queries: Subset,
    side: u32,
}

pub struct OnlineKnn {
    every: u64,
    k: usize,
    temperature: f64,
    data: Option<Subsets>,
    pending: Option<Receiver<Result<Subsets, String>>>,
    spent: Duration,
}

/// `n` ids spread evenly over `0..len` (class-sorted folders keep every class).
fn spread(len: u64, n: usize) -> Vec<u64> {
    let n = (n as u64).min(len);
    (0..n).map(|i| i * len / n.max(1)).collect()
}

fn load(
    source: &crate::source::SourceConfig,
    key: &str,
    n: usize,
    side: u32,
    max_pixels: u64,
) -> Result<Subset, String> {
    let src = match source.open().map_err(|e| format!("{key}: {e}"))? {
        OpenedSource::Indexed(s) => s,
        OpenedSource::Stream(_) => {
            return Err(format!("{key}: online k-NN needs a source of known length"))
        }
    };
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for id in spread(src.len(), n) {
        let frame = match src.read(id) {
            Ok(Payload::Decoded(f)) => Some(f),
            Ok(Payload::Encoded(b)) => decode_image(&b, max_pixels).ok(),
            Err(_) => None,
        };
        if let (Some(view), Some(label)) =
            (frame.and_then(|f| eval_view(&f, side).ok()), src.label(id))
        {
            pixels.extend_from_slice(&view);
            labels.push(label as i64);
        }
    }
    if labels.is_empty() {
        return Err(format!("{key}: no readable labelled samples"));
    }
    Ok(Subset { pixels, labels })
}

impl OnlineKnn {
    /// Starts preparing the subsets in the background; `None` when `every_steps` is 0.
    pub fn start(cfg: &KnnConfig, default_side: u32, max_pixels: u64) -> Option<OnlineKnn> {
        if cfg.every_steps == 0 {
            return None;
        }
        let side = cfg.image_size.unwrap_or(default_side);
        let (tx, rx) = std::sync::mpsc::channel();
        let cfg_c = cfg.clone();
        std::thread::Builder::new()
            .name("knn-subsets".into())
            .spawn(move || {
                let result = load(
                    &cfg_c.train,
                    "eval.knn.train",
                    cfg_c.online_bank,
                    side,
                    max_pixels,
                )
                .and_then(|bank| {
                    load(
                        &cfg_c.test,
                        "eval.knn.test",
                        cfg_c.online_queries,
                        side,
                        max_pixels,
                    )
                    .map(|queries| Subsets {
                        bank,
                        queries,
                        side,
                    })
                });
                let _ = tx.send(result);
            })
            .expect("spawn knn-subsets thread");
        Some(OnlineKnn {
            every: cfg.every_steps,
            k: cfg.k,
            temperature: cfg.temperature,
            data: None,
            pending: Some(rx),
            spent: Duration::ZERO,
        })
    }

    /// After step `step` (steps done), with `train_time` spent training so far: evaluates when
    /// it is due, the subsets are ready and the budget allows; returns the accuracy.
    pub fn maybe_run(
        &mut self,
        step: u64,
        train_time: Duration,
        embed: &dyn Fn(&Tensor) -> Tensor,
    ) -> Option<f64> {
        if step == 0 || !step.is_multiple_of(self.every) {
            return None;
        }
        if let Some(rx) = &self.pending {
            match rx.try_recv() {
                Ok(Ok(data)) => {
                    self.data = Some(data);
                    self.pending = None;
                }
                Ok(Err(e)) => {
                    tracing::warn!("online k-NN disabled: {e}");
                    self.pending = None;
                }
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => self.pending = None,
            }
        }
        let data = self.data.as_ref()?;
        if self.spent.as_secs_f64() > BUDGET * train_time.as_secs_f64() {
            return None;
        }
        let t = Instant::now();
        let feats = |s: &Subset| -> Tensor {
            let side = data.side as i64;
            let n = s.labels.len() as i64;
            let all = Tensor::from_slice(&s.pixels).view([n, side, side, 3]);
            let parts: Vec<Tensor> = (0..n)
                .step_by(256)
                .map(|i| embed(&all.narrow(0, i, 256.min(n - i))))
                .collect();
            Tensor::cat(&parts, 0)
        };
        let acc = knn::accuracy(
            &feats(&data.bank),
            &Tensor::from_slice(&data.bank.labels),
            &feats(&data.queries),
            &Tensor::from_slice(&data.queries.labels),
            self.k,
            self.temperature,
        );
        self.spent += t.elapsed();
        tracing::debug!(
            step,
            seconds = t.elapsed().as_secs_f64(),
            acc,
            "online k-NN"
        );
        Some(acc)
    }

    /// Time spent on online k-NN so far.
    pub fn spent(&self) -> Duration {
        self.spent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_covers_the_range_evenly() {
        assert_eq!(spread(10, 5), vec![0, 2, 4, 6, 8]);
        assert_eq!(spread(3, 5), vec![0, 1, 2]);
        assert!(spread(0, 5).is_empty());
    }
}
