//! Checkpoint capture and restore: the training state (weights, optimizer moments, position) as a
//! `Checkpoint` ([`Checkpoint::capture`]) and back ([`Checkpoint::restore`]), bit for bit; the
//! file format itself is `crate::checkpoint`.

use super::*;

/// Where the loop starts: weights, optimizer slots and state on the backend.
pub(crate) struct Start {
    pub(crate) params: Vec<Tensor<1>>,
    pub(crate) slots: Vec<Vec<Tensor<1>>>,
    pub(crate) state: TrainState,
}

impl Start {
    pub(crate) fn fresh(model: &Model, cfg: &Config, data: &Dataset, device: &Device) -> Self {
        let (_, total) = step_counts(cfg, data.train.len());
        let params = model
            .init_params(cfg.seed)
            .into_iter()
            .map(|v| upload(v, device))
            .collect();
        let nslots = optim::slot_names(cfg.optimizer.kind).len();
        let slots = model
            .specs
            .iter()
            .map(|s| {
                (0..nslots)
                    .map(|_| upload(vec![0.0; s.numel()], device))
                    .collect()
            })
            .collect();
        let state = TrainState {
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            total_steps: total,
            last_lr: 0.0,
            streams: BTreeMap::new(),
        };
        Start {
            params,
            slots,
            state,
        }
    }
}

pub(crate) fn to_host(t: &Tensor<1>) -> Vec<f32> {
    lockstep_kernels::readback::to_host(t.clone())
}

impl Checkpoint {
    /// The state a checkpoint holds, uploaded for `model` (every tensor checked by name and
    /// shape; `path` names the file in errors).
    pub(crate) fn restore(
        &self,
        model: &Model,
        cfg: &Config,
        path: &Path,
        device: &Device,
    ) -> Result<Start, TrainError> {
        let ck = self;
        let mut params = Vec::new();
        let mut slots = Vec::new();
        for s in &model.specs {
            params.push(upload(
                ck.tensor(&format!("model.{}", s.name), &s.shape, path)?,
                device,
            ));
            let mut ps = Vec::new();
            for slot in optim::slot_names(cfg.optimizer.kind) {
                ps.push(upload(
                    ck.tensor(&format!("optim.{slot}.{}", s.name), &s.shape, path)?,
                    device,
                ));
            }
            slots.push(ps);
        }
        let expected = model.specs.len() * (1 + optim::slot_names(cfg.optimizer.kind).len());
        if ck.tensors.len() != expected {
            return Err(TrainError::checkpoint(
                path,
                format!(
                    "holds {} tensors, the model and optimizer need {expected}",
                    ck.tensors.len()
                ),
                "resume with the config the checkpoint was trained with",
            ));
        }
        Ok(Start {
            params,
            slots,
            state: ck.state.clone(),
        })
    }

    /// The state after `state.step` as a checkpoint; refuses a non-finite weight (naming it).
    pub(crate) fn capture(
        model: &Model,
        cfg: &Config,
        identity: &RunIdentity,
        data: &Dataset,
        params: &[Tensor<1>],
        slots: &[Vec<Tensor<1>>],
        state: &TrainState,
    ) -> Result<Checkpoint, TrainError> {
        let mut tensors = BTreeMap::new();
        for (i, s) in model.specs.iter().enumerate() {
            let w = to_host(&params[i]);
            if let Some(bad) = w.iter().find(|v| !v.is_finite()) {
                return Err(TrainError::NonFinite {
                    step: state.step,
                    tensor: format!("model.{}", s.name),
                    value: *bad,
                });
            }
            tensors.insert(
                format!("model.{}", s.name),
                TensorEntry::from_f32(s.shape.clone(), &w),
            );
            for (slot, t) in optim::slot_names(cfg.optimizer.kind).iter().zip(&slots[i]) {
                tensors.insert(
                    format!("optim.{slot}.{}", s.name),
                    TensorEntry::from_f32(s.shape.clone(), &to_host(t)),
                );
            }
        }
        Ok(Checkpoint {
            identity: identity.clone(),
            state: state.clone(),
            tensors,
            inference: Some(data.inference(&cfg.data)),
        })
    }
}
