//! The optimizer steps under autodiff: run on the inner backend, untracked.

use super::{AdamHyper, Decay, OptimOps, SgdHyper};
use crate::seam::autodiff::no_grad;
use burn::backend::{Autodiff, autodiff::checkpoint::strategy::CheckpointStrategy};

impl<B: OptimOps, C: CheckpointStrategy> OptimOps for Autodiff<B, C> {
    no_grad!(fn det_sgd_step(w, g, buf; hp: SgdHyper, decay: Decay) -> (w, buf));
    no_grad!(fn det_adam_step(w, g, m, v; hp: AdamHyper, decay: Decay) -> (w, m, v));
}
