//! The training loop: batches in the shuffled order, forward, loss, backward, optimizer step,
//! schedule, metrics, periodic evaluation and checkpoints, then the final evaluation, scores and
//! `final.safetensors`.

use super::*;
use crate::workers::{Workers, combine};

#[allow(clippy::too_many_arguments)]
pub(crate) fn run_loop(
    cfg: &Config,
    identity: &RunIdentity,
    data: &Dataset,
    model: &Model,
    backend: &Backend,
    start: Start,
    dir: &Path,
    opts: &RunOptions,
) -> Result<RunSummary, TrainError> {
    let device = &backend.device;
    let ad = device.clone().autodiff();
    let Start {
        mut params,
        mut slots,
        mut state,
    } = start;
    let n = data.train.len();
    let (spe, total) = step_counts(cfg, n);
    let b = cfg.train.batch_size;
    // Rank 0 writes the run directory; the other workers only compute.
    let workers = &opts.workers;
    let writes = workers.writes();
    let mut metrics = Lines::open(writes, &dir.join("metrics.jsonl"))?;
    let mut timing = Lines::open(writes, &dir.join("timing.jsonl"))?;
    let shuffle_name = lockstep_core::streams::shuffle;
    let mut order = SeedStream::new(cfg.seed, shuffle_name(state.epoch)).permutation(n);
    let stop = opts.stop_at.unwrap_or(u64::MAX).min(total);
    let bar = if opts.progress && writes {
        ProgressBar::new(total)
    } else {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(state.step);
    let t0 = Instant::now();
    let start_step = state.step;
    tracing::info!(
        step = state.step,
        total,
        backend = backend.kind.as_str(),
        "training"
    );

    let shards = cfg.train.shards;
    let mut spent = Spent::default();
    while state.step < stop {
        let lo = state.batch_in_epoch as usize * b;
        let hi = (lo + b).min(n);
        let (x, y) = match &data.text {
            Some(text) => text.train_batch(cfg.seed, state.step, b),
            None => data.train.gather(&order[lo..hi]),
        };
        let bs = x.len() / data.train.dim;
        let lr = learning_rate(&cfg.optimizer, &cfg.schedule, state.step, total);
        let step = Step {
            model,
            params: &params,
            dim: data.train.dim,
            batch: bs,
            dropout: (cfg.seed, state.step),
            ad: &ad,
        };
        let (loss_v, mut gs) = if shards == 1 && workers.size() == 1 {
            // One shard: the gradient stays on the device, as before shards existed.
            step.shard(x, &y, 0)
        } else {
            step.sharded(&x, &y, shards, workers, device, &mut spent)
        };
        if !loss_v.is_finite() {
            return Err(TrainError::NonFinite {
                step: state.step + 1,
                tensor: "loss".into(),
                value: loss_v,
            });
        }
        if cfg.train.grad_clip > 0.0 {
            optim::clip_global_norm(&mut gs, cfg.train.grad_clip);
        }
        // Each parameter is moved into its update (not cloned), so that a CPU backend can
        // update it in place.
        params = std::mem::take(&mut params)
            .into_iter()
            .zip(gs)
            .enumerate()
            .map(|(i, (w, g))| {
                let ocfg = optim::config_for(&cfg.optimizer, &model.specs[i]);
                optim::update(
                    &ocfg,
                    cfg.train.kernels,
                    lr,
                    state.step + 1,
                    w,
                    g,
                    &mut slots[i],
                )
            })
            .collect();
        state.step += 1;
        state.last_lr = lr;
        state.batch_in_epoch += 1;
        if data.text.is_none() && state.batch_in_epoch == spe {
            state.epoch += 1;
            state.batch_in_epoch = 0;
            order = SeedStream::new(cfg.seed, shuffle_name(state.epoch)).permutation(n);
        }
        state.streams = match data.text {
            None => BTreeMap::from([(
                shuffle_name(state.epoch),
                "regenerated from the epoch number".to_string(),
            )]),
            Some(_) => BTreeMap::from([(
                lockstep_core::streams::batch(state.step),
                "regenerated from the step number".to_string(),
            )]),
        };
        metrics.line(&MetricLine::Train {
            step: state.step,
            epoch: state.epoch,
            loss: loss_v as f64,
            lr: lr as f64,
        })?;
        bar.set_position(state.step);
        bar.set_message(format!("loss {loss_v:.4}"));
        let at_end = state.step == total;
        if writes && cfg.train.eval_every > 0 && state.step % cfg.train.eval_every == 0 && !at_end {
            for e in eval_splits(model, &params, data, cfg, device) {
                metrics.line(&eval_line(state.step, &e, model))?;
            }
        }
        let ckpt_due =
            cfg.train.checkpoint_every > 0 && state.step % cfg.train.checkpoint_every == 0;
        if (ckpt_due || state.step == stop) && !at_end {
            let ck = Checkpoint::capture(model, cfg, identity, data, &params, &slots, &state)?;
            // Serialised once: hashed for the workers' comparison, then written.
            let bytes = ck.to_bytes();
            let what = format!("after step {} (SHA-256 of the checkpoint)", state.step);
            same_on_every_worker(workers, &bytes, &what)?;
            if writes {
                write_atomic(&checkpoint_path(dir, state.step), &bytes)?;
            }
            let secs = t0.elapsed().as_secs_f64();
            timing.line(&serde_json::json!({"step": state.step, "wall_s": secs, "steps_per_s": (state.step - start_step) as f64 / secs.max(1e-9), "workers": workers.size()}))?;
        }
    }
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let samples_per_s = ((state.step - start_step) as usize * b) as f64 / secs.max(1e-9);
    let mut line = serde_json::json!({"step": state.step, "wall_s": secs, "steps_per_s": (state.step - start_step) as f64 / secs.max(1e-9), "samples_per_s": samples_per_s, "workers": workers.size()});
    if shards > 1 || workers.size() > 1 {
        // Where a sharded step's time goes, and what each worker sends per step.
        line["shards_s"] = serde_json::json!(spent.shards);
        line["exchange_s"] = serde_json::json!(spent.exchange);
        line["combine_s"] = serde_json::json!(spent.combine);
        line["bytes_sent_per_step"] = serde_json::json!(spent.bytes_sent_per_step);
    }
    if data.text.is_some() {
        line["tokens_per_s"] = serde_json::json!(samples_per_s * data.train.dim as f64);
    }
    timing.line(&line)?;
    if state.step < total {
        return Ok(RunSummary {
            dir: dir.into(),
            step: state.step,
            total_steps: total,
            finished: false,
            evals: vec![],
            final_sha256: None,
        });
    }
    // The end: final evaluation, recorded scores, then final.safetensors last.
    let ck = Checkpoint::capture(model, cfg, identity, data, &params, &slots, &state)?;
    let bytes = ck.to_bytes();
    let final_sha = sha256_hex(&bytes);
    let what = format!("after step {} (SHA-256 of final.safetensors)", state.step);
    same_on_every_worker(workers, &bytes, &what)?;
    if !writes {
        return Ok(RunSummary {
            dir: dir.into(),
            step: state.step,
            total_steps: total,
            finished: true,
            evals: vec![],
            final_sha256: Some(final_sha),
        });
    }
    let evals = eval_splits(model, &params, data, cfg, device);
    for e in &evals {
        metrics.line(&eval_line(state.step, e, model))?;
    }
    std::fs::create_dir_all(dir.join("eval")).map_err(|e| {
        TrainError::run_dir(
            dir,
            format!("cannot create eval/: {e}"),
            "check permissions",
        )
    })?;
    let mut splits = BTreeMap::new();
    for e in &evals {
        let mut f = TensorFile::default();
        f.tensors.insert(
            "logits".into(),
            TensorEntry::from_f32(vec![e.labels.len(), model.classes], &e.logits),
        );
        f.tensors.insert(
            "labels".into(),
            TensorEntry {
                dtype: lockstep_core::DType::U32,
                shape: vec![e.labels.len()],
                data: e.labels.iter().flat_map(|l| l.to_le_bytes()).collect(),
            },
        );
        if model.rows_per_sample > 1 {
            // A language model's recorded scores: each validation token's log-probability.
            let lp = token_logprobs(&e.logits, &e.labels, model.classes);
            f.tensors.insert(
                "token_logprobs".into(),
                TensorEntry::from_f32(vec![e.labels.len()], &lp),
            );
        }
        f.metadata
            .insert("lockstep.checkpoint_sha256".into(), final_sha.clone());
        f.metadata.insert("lockstep.split".into(), e.split.clone());
        f.write_atomic(&dir.join("eval").join(format!("{}.safetensors", e.split)))?;
        let logits: Vec<u8> = e.logits.iter().flat_map(|v| v.to_le_bytes()).collect();
        splits.insert(
            e.split.clone(),
            SplitScore {
                samples: e.samples,
                loss: e.loss,
                accuracy: e.accuracy,
                logits_sha256: sha256_hex(&logits),
            },
        );
    }
    let scores = Scores {
        step: state.step,
        checkpoint_sha256: final_sha.clone(),
        config_hash: identity.config_hash.clone(),
        splits,
    };
    write_atomic(&dir.join("scores.json"), &scores.to_bytes())?;
    write_atomic(&dir.join("final.safetensors"), &bytes)?;
    tracing::info!(step = state.step, sha256 = %final_sha, "finished");
    // After the run is safely finished: a plot that cannot be drawn is a warning, never a
    // failed run (`lockstep plot RUN` draws it again).
    if let Err(e) = crate::tracking::plot(&[dir.to_path_buf()], &dir.join("plot.png")) {
        eprintln!("warning: the run finished but plot.png was not written: {e}");
    }
    Ok(RunSummary {
        dir: dir.into(),
        step: state.step,
        total_steps: total,
        finished: true,
        evals,
        final_sha256: Some(final_sha),
    })
}

/// `metrics.jsonl` / `timing.jsonl` on the worker that writes; nothing on the others.
struct Lines(Option<Metrics>);

impl Lines {
    fn open(writes: bool, path: &Path) -> Result<Self, TrainError> {
        Ok(Lines(if writes {
            Some(Metrics::open(path)?)
        } else {
            None
        }))
    }
    fn line<T: Serialize>(&mut self, v: &T) -> Result<(), TrainError> {
        match &mut self.0 {
            Some(m) => m.line(v),
            None => Ok(()),
        }
    }
}

/// After a checkpoint: every worker's weights and optimizer state must be the same bits (they
/// apply the same step to the same gradient); a difference is a broken invariant, reported on
/// every worker before anything is written. `bytes` is the serialised checkpoint, `when` says
/// which one.
fn same_on_every_worker(workers: &Workers, bytes: &[u8], when: &str) -> Result<(), TrainError> {
    if workers.size() == 1 {
        return Ok(());
    }
    workers.agree(
        &format!("the weights and optimizer state {when}"),
        &sha256_hex(bytes),
        "a broken invariant: report it with the run directory; resume with one worker to continue from the last written checkpoint",
    )
}

/// Seconds a sharded run spent in its shards' forward/backward, in the all-gather, and in the
/// tree (device adds, read-back and packing, host adds, upload), and the bytes each worker sends
/// per step.
#[derive(Default)]
struct Spent {
    shards: f64,
    exchange: f64,
    combine: f64,
    bytes_sent_per_step: usize,
}

/// One optimizer step's forward/backward work: the batch's `batch` samples of `dim` inputs.
struct Step<'a> {
    model: &'a Model,
    params: &'a [Tensor<1>],
    dim: usize,
    batch: usize,
    /// (seed, 0-based step) of the dropout streams.
    dropout: (u64, u64),
    ad: &'a Device,
}

impl Step<'_> {
    /// Forward and backward of the samples `x`/`y` that start at sample `first` of the batch:
    /// (their loss share, one gradient per parameter on the device). The loss is their summed
    /// loss times `f32(1 / rows of the whole batch)` (`Task::loss`).
    fn shard(&self, x: Vec<f32>, y: &[u32], first: usize) -> (f32, Vec<Tensor<1>>) {
        let model = self.model;
        let samples = x.len() / self.dim;
        let xt = Tensor::<2>::from_data(TensorData::new(x, [samples, self.dim]), self.ad);
        let tt = model.task.targets(y, model.classes, self.ad);
        let leaves: Vec<Tensor<1>> = self
            .params
            .iter()
            .map(|p| Tensor::from_inner(p.clone()).require_grad())
            .collect();
        let shard = (first as u64, samples);
        let logits = model.forward_shard(&leaves, xt, Some(self.dropout), shard);
        let rows = self.batch * model.rows_per_sample;
        let loss = model.task.loss(model.kernels, logits, tt, rows);
        let loss_v = loss
            .clone()
            .try_into_vec_as::<f32>()
            .expect("loss reads back as f32")[0];
        let grads = loss.backward();
        let gs = leaves
            .iter()
            .map(|l| {
                l.grad(&grads)
                    .expect("every parameter takes part in the loss")
            })
            .collect();
        (loss_v, gs)
    }

    /// The batch cut into `shards` (`crate::workers`): this worker's block of shards
    /// forward/backward, reduced on the device as far as the fixed tree allows, the partials
    /// all-gathered as f32 bytes (the machine's byte order: the workers of a job share an
    /// architecture) and the tree finished on the host; the gradients end on `device`.
    fn sharded(
        &self,
        x: &[f32],
        y: &[u32],
        shards: usize,
        workers: &Workers,
        device: &Device,
        spent: &mut Spent,
    ) -> (f32, Vec<Tensor<1>>) {
        let t0 = Instant::now();
        let sizes: Vec<usize> = self.model.specs.iter().map(|s| s.numel()).collect();
        let (rank, nw) = (workers.rank(), workers.size());
        let labels = y.len() / self.batch.max(1);
        let mine: Vec<(f32, Vec<Tensor<1>>)> = crate::workers::shards_of(rank, nw, shards)
            .map(|s| {
                let (lo, hi) = crate::workers::shard_range(self.batch, shards, s);
                if lo == hi {
                    let zeros = sizes.iter().map(|&n| Tensor::zeros([n], device)).collect();
                    return (0.0, zeros);
                }
                let xs = x[lo * self.dim..hi * self.dim].to_vec();
                self.shard(xs, &y[lo * labels..hi * labels], lo)
            })
            .collect();
        let t1 = Instant::now();
        spent.shards += (t1 - t0).as_secs_f64();
        // The tree's lower levels on the device: all of it on one worker, a block's complete
        // subtree when the block is a power of two.
        if nw == 1 {
            let whole = crate::workers::tree(mine, device_add);
            spent.combine += t1.elapsed().as_secs_f64();
            return whole;
        }
        let sends = if mine.len().is_power_of_two() {
            vec![crate::workers::tree(mine, device_add)]
        } else {
            mine
        };
        let per_part = 1 + sizes.iter().sum::<usize>();
        let mut bytes: Vec<u8> = Vec::with_capacity(sends.len() * per_part * 4);
        for (loss, gs) in sends {
            bytes.extend_from_slice(bytemuck::bytes_of(&loss));
            for g in gs {
                bytes.extend_from_slice(bytemuck::cast_slice(&state::to_host(&g)));
            }
        }
        let t3 = Instant::now();
        let all = workers.0.all_gather(&bytes);
        let t4 = Instant::now();
        // The workers' partials in rank order = shard order (blocks are contiguous).
        let floats: Vec<f32> = bytemuck::pod_collect_to_vec(&all);
        let parts: Vec<&[f32]> = floats.chunks_exact(per_part).collect();
        let loss = crate::workers::tree(parts.iter().map(|p| p[0]).collect(), arith_add);
        let mut gs = Vec::with_capacity(sizes.len());
        let mut off = 1;
        for &len in &sizes {
            let vs = parts.iter().map(|p| p[off..off + len].to_vec()).collect();
            gs.push(upload(combine(vs), device));
            off += len;
        }
        spent.combine += (t3 - t1).as_secs_f64() + t4.elapsed().as_secs_f64();
        spent.exchange += (t4 - t3).as_secs_f64();
        spent.bytes_sent_per_step = bytes.len();
        (loss, gs)
    }
}

/// Lockstep's flushed add of two host scalars (the tree's loss shares).
fn arith_add(a: f32, b: f32) -> f32 {
    lockstep_kernels::arith::add(a, b)
}

/// Two shard partials added on their device: the loss shares on the host, the gradients with
/// the `add_bias` kernel on `[1, n]` views (`flush(a + b)` per element, as `arith::add`).
fn device_add(a: (f32, Vec<Tensor<1>>), b: (f32, Vec<Tensor<1>>)) -> (f32, Vec<Tensor<1>>) {
    let gs =
        a.1.into_iter()
            .zip(b.1)
            .map(|(x, y)| {
                let n = x.dims()[0];
                lockstep_kernels::add_bias(x.reshape([1, n]), y.reshape([1, n])).reshape([n])
            })
            .collect();
    (arith_add(a.0, b.0), gs)
}

/// `log softmax(row)[label]` of each logit row, in f64 (max, then the sum of `exp(v - max)` in
/// index order), rounded once to f32.
pub fn token_logprobs(logits: &[f32], labels: &[u32], classes: usize) -> Vec<f32> {
    logits
        .chunks_exact(classes)
        .zip(labels)
        .map(|(row, &l)| {
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            (row[l as usize] as f64 - crate::task::log_sum_exp(row, max)) as f32
        })
        .collect()
}
