//! `det_pool2d`'s autodiff: `x` kept, the gradient from `det_pool2d_backward`.

use super::{Pool, PoolOps};
use crate::seam::autodiff::{no_grad, unary_autodiff};
use burn::backend::{Autodiff, autodiff::checkpoint::strategy::CheckpointStrategy};

impl<B: PoolOps, C: CheckpointStrategy> PoolOps for Autodiff<B, C> {
    unary_autodiff!(fn det_pool2d(x, k: usize, kind: Pool) keep input, |g, x| {
        B::det_pool2d_backward(x, g, k, kind)
    });

    no_grad!(fn det_pool2d_backward(x, dy; k: usize, kind: Pool));
}
