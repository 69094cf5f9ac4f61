//! `lockstep sample`: text from a trained language model, the same on every backend.
//!
//! Generation recomputes the whole context for each new token (no KV cache): the context is the
//! last `block_size` tokens of prompt + generated text. For generated token `i` (0-based):
//!
//! 1. `logits` = the model's last row (lockstep's kernels: the same bits on every backend);
//! 2. `--temperature 0`: the first maximum (greedy);
//! 3. otherwise the `--top-k` largest logits are kept (ties: the lower token id first; all when
//!    `--top-k` is not given), `m` = their maximum, and each kept token `j` gets the weight
//!    `w_j = exp_fixed(f32((l_j - m) / T))` (`lockstep_kernels::arith::exp_fixed`: `+ - *` only);
//! 4. `u` = the first `uniform_f32` of stream `sample/<seed>/<i>`; the token is the first `j`
//!    (ascending id among the kept) whose running f64 sum of weights exceeds `u * sum(w)`.
//!
//! So a given run, prompt, seed, temperature and top-k print the same text on ndarray, flex and
//! wgpu, and `--temperature 0` needs no seed at all.

use crate::TrainError;
use crate::predict::Predictor;
use lockstep_core::SeedStream;
use lockstep_core::config::BackendKind;
use std::path::Path;

#[derive(Clone, Debug)]
pub struct SampleOptions {
    pub prompt: String,
    pub tokens: usize,
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub seed: u64,
    pub backend: Option<BackendKind>,
}

/// The index of the next token from `logits` (module doc, steps 2-4).
pub fn pick(logits: &[f32], temperature: f64, top_k: Option<usize>, seed: u64, i: u64) -> usize {
    let first_max = |ids: &[usize]| {
        ids.iter()
            .copied()
            .fold(ids[0], |b, j| if logits[j] > logits[b] { j } else { b })
    };
    let all: Vec<usize> = (0..logits.len()).collect();
    if temperature == 0.0 {
        return first_max(&all);
    }
    let mut kept = all;
    if let Some(k) = top_k.filter(|&k| k < logits.len()) {
        kept.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        kept.truncate(k);
        kept.sort_unstable();
    }
    let m = logits[first_max(&kept)] as f64;
    let w: Vec<f64> = kept
        .iter()
        .map(|&j| {
            lockstep_kernels::arith::exp_fixed(((logits[j] as f64 - m) / temperature) as f32) as f64
        })
        .collect();
    let total: f64 = w.iter().sum();
    let u = SeedStream::new(seed, lockstep_core::streams::sample(seed, i)).uniform_f32() as f64;
    let target = u * total;
    let mut run = 0.0;
    for (j, wj) in kept.iter().zip(&w) {
        run += wj;
        if run > target {
            return *j;
        }
    }
    *kept.last().expect("at least one token is kept")
}

/// Generate `opts.tokens` tokens after `opts.prompt` with the language model in `run` (a run
/// directory or a checkpoint); returns the prompt followed by the generated text.
pub fn sample(run: &Path, opts: &SampleOptions) -> Result<String, TrainError> {
    let p = Predictor::load(run, opts.backend)?;
    let bad = |what: String, fix: &str| TrainError::run_dir(run, what, fix);
    let vocab = p.vocab().ok_or_else(|| {
        bad(
            "is not a language model (its checkpoint has no vocabulary)".into(),
            "sample from a run of model.kind = \"gpt\"; score classifiers with `lockstep predict`",
        )
    })?;
    if opts.tokens == 0 {
        return Err(bad(
            "--tokens 0 would generate nothing".into(),
            "pass --tokens N with N >= 1",
        ));
    }
    if !opts.temperature.is_finite() || opts.temperature < 0.0 {
        return Err(bad(
            format!(
                "--temperature {} is not a finite number >= 0",
                opts.temperature
            ),
            "use e.g. --temperature 0.8 (0 = greedy)",
        ));
    }
    if opts.top_k == Some(0) {
        return Err(bad(
            "--top-k 0 keeps no token".into(),
            "use --top-k 1 or more",
        ));
    }
    let mut ids = vocab.encode(&opts.prompt).map_err(|c| {
        bad(
            format!("the prompt's character {c:?} is not in the model's vocabulary"),
            "use only characters of the training text (`lockstep inspect` lists the vocabulary)",
        )
    })?;
    if ids.is_empty() {
        return Err(bad(
            "the prompt is empty".into(),
            "pass --prompt with at least one character (e.g. a newline)",
        ));
    }
    let start = ids.len();
    for i in 0..opts.tokens {
        let ctx = &ids[ids.len().saturating_sub(p.context())..];
        let logits = p.next_logits(ctx);
        ids.push(pick(&logits, opts.temperature, opts.top_k, opts.seed, i as u64) as u32);
    }
    Ok(format!("{}{}", opts.prompt, vocab.decode(&ids[start..])))
}

#[cfg(test)]
mod tests {
    use super::pick;

    #[test]
    fn greedy_top_k_and_draws() {
        let l = [0.5f32, 2.0, 2.0, -1.0];
        assert_eq!(pick(&l, 0.0, None, 1, 0), 1, "first maximum");
        // top-1 keeps the first of the tied maxima whatever the draw.
        for i in 0..20 {
            assert_eq!(pick(&l, 1.0, Some(1), 9, i), 1);
        }
        // With a very low temperature the maxima dominate; both tied ones appear.
        let picks: Vec<usize> = (0..64).map(|i| pick(&l, 0.01, None, 3, i)).collect();
        assert!(picks.iter().all(|&j| j == 1 || j == 2));
        assert!(picks.contains(&1) && picks.contains(&2));
        assert_eq!(pick(&l, 1.0, None, 5, 7), pick(&l, 1.0, None, 5, 7));
    }
}
