//! Weighted k-NN (Wu et al. 2018, as in DINO's eval_knn.py): cosine similarity between
//! L2-normalised features, the k nearest training samples vote for their class with weight
//! exp(sim / T), and the class with the largest summed weight wins.

use std::sync::Arc;

use tch::{Kind, Tensor};

use crate::augment::{eval_min_scale, eval_view, eval_view_reduced};
use crate::decode::{decode_image, decode_reduced, DecodeConfig, ScaledDecode};
use crate::source::{IndexedSource, OpenedSource, Payload};

#[derive(Debug, thiserror::Error)]
pub enum KnnError {
    #[error("{0}: k-NN needs a source with labels")]
    Unlabelled(String),
    #[error("k-NN needs a source of known length (not a stream)")]
    Stream,
    #[error("no usable samples in {0}")]
    Empty(String),
}

/// Features of every readable sample of a labelled source: (features `[n, d]` on the CPU,
/// labels `[n]`, samples skipped). `embed(images_nhwc_u8)` runs the network.
pub fn extract(
    source: OpenedSource,
    name: &str,
    image_size: u32,
    batch_size: usize,
    decode: &DecodeConfig,
    embed: &dyn Fn(&Tensor) -> Tensor,
) -> Result<(Tensor, Tensor, u64), KnnError> {
    let src: Arc<dyn IndexedSource> = match source {
        OpenedSource::Indexed(s) => s,
        OpenedSource::Stream(_) => return Err(KnnError::Stream),
    };
    if src.num_classes().is_none() {
        return Err(KnnError::Unlabelled(name.to_string()));
    }
    let side = image_size as i64;
    let view_bytes = (side * side * 3) as usize;
    let mut features = Vec::new();
    let mut labels: Vec<i64> = Vec::new();
    let mut skipped = 0u64;
    let mut pixels: Vec<u8> = Vec::with_capacity(batch_size * view_bytes);
    let flush = |pixels: &mut Vec<u8>, features: &mut Vec<Tensor>| {
        if pixels.is_empty() {
            return;
        }
        let n = (pixels.len() / view_bytes) as i64;
        let batch = Tensor::from_slice(pixels.as_slice()).view([n, side, side, 3]);
        features.push(
            embed(&batch)
                .to_kind(Kind::Float)
                .to_device(tch::Device::Cpu),
        );
        pixels.clear();
    };
    for id in 0..src.len() {
        let view = match src.read(id) {
            Ok(Payload::Decoded(f)) => eval_view(&f, image_size).ok(),
            Ok(Payload::Encoded(bytes)) => encoded_view(&bytes, image_size, decode),
            Err(_) => None,
        };
        let (Some(view), Some(label)) = (view, src.label(id)) else {
            skipped += 1;
            continue;
        };
        pixels.extend_from_slice(&view);
        labels.push(label as i64);
        if pixels.len() == batch_size * view_bytes {
            flush(&mut pixels, &mut features);
        }
    }
    flush(&mut pixels, &mut features);
    if features.is_empty() {
        return Err(KnnError::Empty(name.to_string()));
    }
    Ok((
        Tensor::cat(&features, 0),
        Tensor::from_slice(&labels),
        skipped,
    ))
}

/// The evaluation view of an encoded picture; with `decode.scaled = "auto"` decoded at the
/// reduction that still leaves its resize a downscale (the same rule as the training crops).
fn encoded_view(bytes: &[u8], size: u32, decode: &DecodeConfig) -> Option<Vec<u8>> {
    match decode.scaled {
        ScaledDecode::Off => eval_view(&decode_image(bytes, decode.max_pixels).ok()?, size).ok(),
        ScaledDecode::Auto => {
            let (frame, reduction) =
                decode_reduced(bytes, decode.max_pixels, |w, h| eval_min_scale(w, h, size)).ok()?;
            eval_view_reduced(&frame, &reduction, size).ok()
        }
    }
}

/// Top-1 accuracy of weighted k-NN classification of `test` against the `train` bank.
pub fn accuracy(
    train_features: &Tensor,
    train_labels: &Tensor,
    test_features: &Tensor,
    test_labels: &Tensor,
    k: usize,
    temperature: f64,
) -> f64 {
    let _guard = tch::no_grad_guard();
    let train = normalize(train_features);
    let test = normalize(test_features);
    let classes = train_labels
        .max()
        .int64_value(&[])
        .max(test_labels.max().int64_value(&[]))
        + 1;
    let k = (k as i64).min(train.size()[0]);
    let n_test = test.size()[0];
    let mut correct = 0i64;
    let chunk = 512;
    let mut start = 0;
    while start < n_test {
        let len = chunk.min(n_test - start);
        let q = test.narrow(0, start, len);
        let sim = q.matmul(&train.tr());
        let (top_sim, top_idx) = sim.topk(k, 1, true, true);
        let neighbour_labels = train_labels
            .index_select(0, &top_idx.view([-1]))
            .view([len, k]);
        let weights = (top_sim / temperature).exp();
        let votes = Tensor::zeros([len, classes], (Kind::Float, tch::Device::Cpu)).scatter_add(
            1,
            &neighbour_labels,
            &weights,
        );
        let predicted = votes.argmax(1, false);
        correct += predicted
            .eq_tensor(&test_labels.narrow(0, start, len))
            .sum(Kind::Int64)
            .int64_value(&[]);
        start += len;
    }
    correct as f64 / n_test as f64
}

fn normalize(x: &Tensor) -> Tensor {
    let norm = x.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
    x / norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_vote_matches_a_hand_computed_case() {
        // Bank: two clusters on the unit circle; class 0 near (1,0), class 1 near (0,1).
        let bank = Tensor::from_slice(&[1.0f32, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9]).view([4, 2]);
        let bank_labels = Tensor::from_slice(&[0i64, 0, 1, 1]);
        let test = Tensor::from_slice(&[0.95f32, 0.05, 0.05, 0.95, 0.6, 0.4]).view([3, 2]);
        let test_labels = Tensor::from_slice(&[0i64, 1, 1]);
        // With k=4 every bank point votes; the third query is closer to class 0, so one miss.
        let acc = accuracy(&bank, &bank_labels, &test, &test_labels, 4, 0.07);
        assert!((acc - 2.0 / 3.0).abs() < 1e-9, "{acc}");
        let acc1 = accuracy(
            &bank,
            &bank_labels,
            &test,
            &Tensor::from_slice(&[0i64, 1, 0]),
            1,
            0.07,
        );
        assert!((acc1 - 1.0).abs() < 1e-9, "{acc1}");
    }
}
