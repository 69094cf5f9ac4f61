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
        let (x, y) = data.train.gather(&order[lo..hi]);
        let bs = y.len();
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
        for i in 0..params.len() {
            let g = leaves[i]
                .grad(&grads)
                .expect("every parameter takes part in the loss");
            params[i] = optim::update(
                &cfg.optimizer,
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
        if state.batch_in_epoch == spe {
            state.epoch += 1;
            state.batch_in_epoch = 0;
            order = SeedStream::new(cfg.seed, shuffle_name(state.epoch)).permutation(n);
        }
        state.streams = BTreeMap::from([(
            shuffle_name(state.epoch),
            "regenerated from the epoch number".to_string(),
        )]);
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
                metrics.line(&eval_line(state.step, &e))?;
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
    timing.line(&serde_json::json!({"step": state.step, "wall_s": secs, "steps_per_s": (state.step - start_step) as f64 / secs.max(1e-9), "samples_per_s": ((state.step - start_step) as usize * b) as f64 / secs.max(1e-9)}))?;
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
        metrics.line(&eval_line(state.step, e))?;
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
            TensorEntry::from_f32(vec![e.samples, model.classes], &e.logits),
        );
        f.tensors.insert(
            "labels".into(),
            TensorEntry {
                dtype: lockstep_core::DType::U32,
                shape: vec![e.samples],
                data: e.labels.iter().flat_map(|l| l.to_le_bytes()).collect(),
            },
        );
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
