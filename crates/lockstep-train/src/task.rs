//! What a model is trained to do, behind one small trait: how a batch's labels become targets,
//! the training loss, and the scores an evaluation records. The trainer, `evaluate` and `verify`
//! go through it; classification (one-hot targets, mean cross-entropy, accuracy) is the task of
//! every shipped model, and language modelling is the next implementation.

use crate::model::one_hot;
use burn::tensor::{Device, Tensor, TensorData};
use lockstep_core::config::KernelSet;

pub trait Task: Send + Sync {
    /// The targets of a batch with `labels`, for a model with `outputs` logits per sample.
    fn targets(&self, labels: &[u32], outputs: usize, device: &Device) -> Tensor<2>;
    /// The training loss `[1, 1]` of `logits`' rows as a share of a batch of `rows` logit rows
    /// (the rows' summed loss times `f32(1 / rows)`: the batch mean when `logits` is the whole
    /// batch, one shard's part of it otherwise), through the kernel set's reductions.
    fn loss(
        &self,
        kernels: KernelSet,
        logits: Tensor<2>,
        targets: Tensor<2>,
        rows: usize,
    ) -> Tensor<2>;
    /// (mean loss, metric) of an evaluation: on the host in f64, samples in index order.
    fn score(&self, logits: &[f32], labels: &[u32], outputs: usize) -> (f64, f64);
}

/// One label in `0..classes` per sample: one-hot targets, mean cross-entropy, accuracy with the
/// first maximum as the prediction.
#[derive(Clone, Copy, Debug, Default)]
pub struct Classification;

impl Task for Classification {
    fn targets(&self, labels: &[u32], outputs: usize, device: &Device) -> Tensor<2> {
        Tensor::<2>::from_data(
            TensorData::new(one_hot(labels, outputs), [labels.len(), outputs]),
            device,
        )
    }

    fn loss(
        &self,
        kernels: KernelSet,
        logits: Tensor<2>,
        targets: Tensor<2>,
        rows: usize,
    ) -> Tensor<2> {
        crate::opset::ops(kernels).cross_entropy(logits, targets, rows)
    }

    fn score(&self, logits: &[f32], labels: &[u32], classes: usize) -> (f64, f64) {
        let mut loss = 0.0f64;
        let mut correct = 0usize;
        for (row, &label) in logits.chunks_exact(classes).zip(labels) {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            correct += usize::from(best == label as usize);
            loss += log_sum_exp(row, row[best] as f64) - row[label as usize] as f64;
        }
        let n = labels.len().max(1) as f64;
        (loss / n, correct as f64 / n)
    }
}

/// `ln(sum exp(row))` in f64 around the row's maximum `max`: the sum in index order.
pub fn log_sum_exp(row: &[f32], max: f64) -> f64 {
    row.iter()
        .map(|&v| (v as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max
}
