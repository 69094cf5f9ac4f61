//! Evaluation: logits of a split in fixed-size chunks in index order, and the aggregate scores
//! (loss and accuracy on the host in f64, fixed order, first-max argmax).

use super::*;

/// Aggregate scores on one split.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalResult {
    pub split: String,
    pub samples: usize,
    pub loss: f64,
    pub accuracy: f64,
    #[serde(skip)]
    pub logits: Vec<f32>,
    #[serde(skip)]
    pub labels: Vec<u32>,
}

/// Logits and aggregate scores of `params` on `split`, computed in `batch`-sized chunks in
/// index order. Loss and accuracy are computed on the host in f64 (fixed order, first-max argmax).
pub fn evaluate(
    model: &Model,
    params: &[Tensor<1>],
    split: &Split,
    name: &str,
    batch: usize,
    device: &Device,
) -> EvalResult {
    let mut logits = Vec::with_capacity(split.labels.len() * model.classes);
    let n = split.len();
    let mut start = 0;
    while start < n {
        let end = (start + batch).min(n);
        let x = Tensor::<2>::from_data(
            TensorData::new(
                split.features[start * split.dim..end * split.dim].to_vec(),
                [end - start, split.dim],
            ),
            device,
        );
        let out = model.forward(params, x, None);
        logits.extend(
            out.try_into_vec_as::<f32>()
                .expect("logits read back as f32"),
        );
        start = end;
    }
    let (loss, accuracy) = model.task.score(&logits, &split.labels, model.classes);
    EvalResult {
        split: name.into(),
        samples: n,
        loss,
        accuracy,
        logits,
        labels: split.labels.clone(),
    }
}

pub(crate) fn eval_splits(
    model: &Model,
    params: &[Tensor<1>],
    data: &Dataset,
    cfg: &Config,
    device: &Device,
) -> Vec<EvalResult> {
    let mut out = Vec::new();
    if let Some(v) = &data.validation {
        out.push(evaluate(
            model,
            params,
            v,
            "validation",
            cfg.train.eval_batch_size,
            device,
        ));
    }
    if data.text.is_none() {
        out.push(evaluate(
            model,
            params,
            &data.test,
            "test",
            cfg.train.eval_batch_size,
            device,
        ));
    }
    out
}

pub(crate) fn eval_line(step: u64, e: &EvalResult, model: &Model) -> MetricLine {
    MetricLine::Eval {
        step,
        split: e.split.clone(),
        samples: e.samples,
        loss: e.loss,
        accuracy: e.accuracy,
        perplexity: (model.rows_per_sample > 1).then(|| e.loss.exp()),
    }
}
