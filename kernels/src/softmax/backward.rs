//! `det_softmax`'s autodiff: the output `y` kept, the gradient from `det_softmax_backward`.

use super::SoftmaxOps;
use crate::seam::autodiff::{no_grad, unary_autodiff};
use burn::backend::{Autodiff, autodiff::checkpoint::strategy::CheckpointStrategy};

impl<B: SoftmaxOps, C: CheckpointStrategy> SoftmaxOps for Autodiff<B, C> {
    unary_autodiff!(fn det_softmax(x, log: bool) keep output, |g, y| {
        B::det_softmax_backward(y, g, log)
    });

    no_grad!(fn det_softmax_backward(y, dy; log: bool));
}
