//! `det_row_major` under autodiff: on the inner backend, untracked.

use super::ReadbackOps;
use crate::seam::autodiff::no_grad;
use burn::backend::{Autodiff, autodiff::checkpoint::strategy::CheckpointStrategy};

impl<B: ReadbackOps, C: CheckpointStrategy> ReadbackOps for Autodiff<B, C> {
    no_grad!(fn det_row_major(x));
}
