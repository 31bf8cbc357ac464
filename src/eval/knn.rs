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
    #[error(
        "the bank ({bank}: {bank_classes}) and the queries ({queries}: {query_classes}) share no class name"
    )]
    NoSharedClasses {
        bank: String,
        queries: String,
        bank_classes: String,
        query_classes: String,
    },
}

/// Features of a labelled source, with each sample's class *name*.
pub struct Labelled {
    /// `[n, d]` on the CPU.
    pub features: Tensor,
    /// The class name of each row.
    pub classes: Vec<Arc<str>>,
    /// Samples that could not be read or decoded.
    pub skipped: u64,
}

/// Features of every readable sample of a labelled source. `embed(images_nhwc_u8)` runs the
/// network; `progress` is told of each sample read (the bar is hidden when stderr is no TTY).
pub fn extract(
    source: OpenedSource,
    name: &str,
    image_size: u32,
    batch_size: usize,
    decode: &DecodeConfig,
    embed: &dyn Fn(&Tensor) -> Tensor,
    progress: &indicatif::ProgressBar,
) -> Result<Labelled, KnnError> {
    let src: Arc<dyn IndexedSource> = match source {
        OpenedSource::Indexed(s) => s,
        OpenedSource::Stream(_) => return Err(KnnError::Stream),
    };
    let Some(n_classes) = src.num_classes() else {
        return Err(KnnError::Unlabelled(name.to_string()));
    };
    let names: Vec<Arc<str>> = (0..n_classes).map(|c| src.class_name(c).into()).collect();
    let side = image_size as i64;
    let view_bytes = (side * side * 3) as usize;
    let mut features = Vec::new();
    let mut classes: Vec<Arc<str>> = Vec::new();
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
    progress.set_length(src.len());
    for id in 0..src.len() {
        progress.inc(1);
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
        classes.push(names[label as usize].clone());
        if pixels.len() == batch_size * view_bytes {
            flush(&mut pixels, &mut features);
        }
    }
    flush(&mut pixels, &mut features);
    if features.is_empty() {
        return Err(KnnError::Empty(name.to_string()));
    }
    Ok(Labelled {
        features: Tensor::cat(&features, 0),
        classes,
        skipped,
    })
}

/// Bank and query labels on one shared numbering of class names.
#[derive(Debug)]
pub struct Aligned {
    pub bank_labels: Tensor,
    pub query_labels: Tensor,
    /// Classes in the bank that no query has (harmless, but worth knowing).
    pub bank_only: Vec<String>,
    /// Classes of queries that the bank lacks: those queries can never be classified right.
    pub query_only: Vec<String>,
    /// Queries whose class the bank lacks.
    pub unmatched_queries: usize,
}

/// Numbers the classes of both sides by name (sorted), so a label means the same class in the
/// bank and in the queries whatever folders each side has. Errors when no name is shared.
pub fn align(
    bank: &[Arc<str>],
    queries: &[Arc<str>],
    bank_name: &str,
    query_name: &str,
) -> Result<Aligned, KnnError> {
    use std::collections::BTreeSet;
    let bank_set: BTreeSet<&str> = bank.iter().map(|c| &**c).collect();
    let query_set: BTreeSet<&str> = queries.iter().map(|c| &**c).collect();
    if bank_set.intersection(&query_set).next().is_none() {
        let list = |s: &BTreeSet<&str>| {
            let v: Vec<&str> = s.iter().take(8).copied().collect();
            let more = s.len().saturating_sub(8);
            if more > 0 {
                format!("{} and {more} more", v.join(", "))
            } else {
                v.join(", ")
            }
        };
        return Err(KnnError::NoSharedClasses {
            bank: bank_name.to_string(),
            queries: query_name.to_string(),
            bank_classes: list(&bank_set),
            query_classes: list(&query_set),
        });
    }
    let all: Vec<&str> = bank_set.union(&query_set).copied().collect();
    let id = |c: &str| all.binary_search(&c).expect("every name is in the union") as i64;
    let bank_labels: Vec<i64> = bank.iter().map(|c| id(c)).collect();
    let query_labels: Vec<i64> = queries.iter().map(|c| id(c)).collect();
    Ok(Aligned {
        bank_labels: Tensor::from_slice(&bank_labels),
        query_labels: Tensor::from_slice(&query_labels),
        bank_only: bank_set
            .difference(&query_set)
            .map(|s| s.to_string())
            .collect(),
        query_only: query_set
            .difference(&bank_set)
            .map(|s| s.to_string())
            .collect(),
        unmatched_queries: queries.iter().filter(|c| !bank_set.contains(&***c)).count(),
    })
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

    fn names(v: &[&str]) -> Vec<Arc<str>> {
        v.iter().map(|s| Arc::from(*s)).collect()
    }

    #[test]
    fn labels_follow_class_names_not_folder_positions() {
        // The queries lack class "a": by position "b" would be 0 there and 1 in the bank.
        let bank = names(&["a", "a", "b", "c"]);
        let queries = names(&["b", "c", "c"]);
        let al = align(&bank, &queries, "bank", "queries").unwrap();
        assert_eq!(
            Vec::<i64>::try_from(&al.bank_labels).unwrap(),
            vec![0, 0, 1, 2]
        );
        assert_eq!(
            Vec::<i64>::try_from(&al.query_labels).unwrap(),
            vec![1, 2, 2]
        );
        assert_eq!(al.bank_only, vec!["a".to_string()]);
        assert!(al.query_only.is_empty());
        let al = align(&queries, &names(&["a", "b"]), "bank", "queries").unwrap();
        assert_eq!(al.query_only, vec!["a".to_string()]);
        assert_eq!(al.unmatched_queries, 1);
        let err = align(&bank, &names(&["x"]), "bank", "queries").unwrap_err();
        assert!(err.to_string().contains("share no class name"), "{err}");
    }
}
