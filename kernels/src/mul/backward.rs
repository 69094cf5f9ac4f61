//! `det_mul`'s autodiff: `da = g * b`, `db = g * a`, with the same kernel.

use super::MulOps;
use crate::seam::autodiff::binary_autodiff;
use burn::backend::{Autodiff, autodiff::checkpoint::strategy::CheckpointStrategy};

impl<B: MulOps, C: CheckpointStrategy> MulOps for Autodiff<B, C> {
    binary_autodiff!(fn det_mul, |g, a, b| (B::det_mul(g.clone(), b), B::det_mul(g, a)));
}
