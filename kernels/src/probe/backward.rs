//! `det_probe_mad` under autodiff: run on the inner backend, untracked.

use super::ProbeOps;
use crate::seam::autodiff::no_grad;
use burn::backend::{Autodiff, autodiff::checkpoint::strategy::CheckpointStrategy};

impl<B: ProbeOps, C: CheckpointStrategy> ProbeOps for Autodiff<B, C> {
    no_grad!(fn det_probe_mad(a, b, c));
}
