//! The training loop: batches in the shuffled order, forward, loss, backward, optimizer step,
//! schedule, metrics, periodic evaluation and checkpoints, then the final evaluation, scores and
//! `final.safetensors`.

use super::*;

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
    let mut metrics = Metrics::open(&dir.join("metrics.jsonl"))?;
    let mut timing = Metrics::open(&dir.join("timing.jsonl"))?;
    let shuffle_name = lockstep_core::streams::shuffle;
    let mut order = SeedStream::new(cfg.seed, shuffle_name(state.epoch)).permutation(n);
    let stop = opts.stop_at.unwrap_or(u64::MAX).min(total);
    let bar = if opts.progress {
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

    while state.step < stop {
        let lo = state.batch_in_epoch as usize * b;
        let hi = (lo + b).min(n);
        let (x, y) = match &data.text {
            Some(text) => text.train_batch(cfg.seed, state.step, b),
            None => data.train.gather(&order[lo..hi]),
        };
        let bs = x.len() / data.train.dim;
        let xt = Tensor::<2>::from_data(TensorData::new(x, [bs, data.train.dim]), &ad);
        let tt = model.task.targets(&y, model.classes, &ad);
        let leaves: Vec<Tensor<1>> = params
            .iter()
            .map(|p| Tensor::from_inner(p.clone()).require_grad())
            .collect();
        let logits = model.forward(&leaves, xt, Some((cfg.seed, state.step)));
        let loss = model.task.loss(model.kernels, logits, tt);
        let loss_v = loss
            .clone()
            .try_into_vec_as::<f32>()
            .expect("loss reads back as f32")[0];
        if !loss_v.is_finite() {
            return Err(TrainError::NonFinite {
                step: state.step + 1,
                tensor: "loss".into(),
                value: loss_v,
            });
        }
        let grads = loss.backward();
        let lr = learning_rate(&cfg.optimizer, &cfg.schedule, state.step, total);
        let mut gs: Vec<Tensor<1>> = leaves
            .iter()
            .map(|l| {
                l.grad(&grads)
                    .expect("every parameter takes part in the loss")
            })
            .collect();
        if cfg.train.grad_clip > 0.0 {
            optim::clip_global_norm(&mut gs, cfg.train.grad_clip);
        }
        for (i, g) in gs.into_iter().enumerate() {
            let ocfg = optim::config_for(&cfg.optimizer, &model.specs[i]);
            params[i] = optim::update(
                &ocfg,
                cfg.train.kernels,
                lr,
                state.step + 1,
                params[i].clone(),
                g,
                &mut slots[i],
            );
        }
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
        if cfg.train.eval_every > 0 && state.step % cfg.train.eval_every == 0 && !at_end {
            for e in eval_splits(model, &params, data, cfg, device) {
                metrics.line(&eval_line(state.step, &e, model))?;
            }
        }
        let ckpt_due =
            cfg.train.checkpoint_every > 0 && state.step % cfg.train.checkpoint_every == 0;
        if (ckpt_due || state.step == stop) && !at_end {
            let ck = Checkpoint::capture(model, cfg, identity, data, &params, &slots, &state)?;
            ck.write(&checkpoint_path(dir, state.step))?;
            let secs = t0.elapsed().as_secs_f64();
            timing.line(&serde_json::json!({"step": state.step, "wall_s": secs, "steps_per_s": (state.step - start_step) as f64 / secs.max(1e-9)}))?;
        }
    }
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let samples_per_s = ((state.step - start_step) as usize * b) as f64 / secs.max(1e-9);
    let mut line = serde_json::json!({"step": state.step, "wall_s": secs, "steps_per_s": (state.step - start_step) as f64 / secs.max(1e-9), "samples_per_s": samples_per_s});
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
    let evals = eval_splits(model, &params, data, cfg, device);
    for e in &evals {
        metrics.line(&eval_line(state.step, e, model))?;
    }
    let ck = Checkpoint::capture(model, cfg, identity, data, &params, &slots, &state)?;
    let bytes = ck.to_bytes();
    let final_sha = sha256_hex(&bytes);
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
