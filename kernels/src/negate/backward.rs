//! `det_negate`'s autodiff: `dx = -g`, with the same kernel; only the shape is kept.

use super::NegateOps;
use crate::seam::autodiff::unary_autodiff;
use burn::backend::{Autodiff, autodiff::checkpoint::strategy::CheckpointStrategy};

impl<B: NegateOps, C: CheckpointStrategy> NegateOps for Autodiff<B, C> {
    unary_autodiff!(fn det_negate(x) keep shape, |g, _shape| B::det_negate(g));
}
