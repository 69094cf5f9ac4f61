//! `det_dropout_mask` under autodiff: made on the inner backend, untracked.

use super::DropoutOps;
use crate::seam::autodiff::no_grad;
use burn::backend::{Autodiff, autodiff::checkpoint::strategy::CheckpointStrategy};

impl<B: DropoutOps, C: CheckpointStrategy> DropoutOps for Autodiff<B, C> {
    no_grad!(fn det_dropout_mask(&like; key: [u32; 8], first: u64, p: f32, scale: f32));
}
