//! `det_causal_softmax`'s autodiff: the output `y` kept, the gradient from
//! `det_causal_softmax_backward`.

use super::CausalOps;
use crate::seam::autodiff::{no_grad, unary_autodiff};
use burn::backend::{Autodiff, autodiff::checkpoint::strategy::CheckpointStrategy};

impl<B: CausalOps, C: CheckpointStrategy> CausalOps for Autodiff<B, C> {
    unary_autodiff!(fn det_causal_softmax(x, scale: f32) keep output, |g, y| {
        B::det_causal_softmax_backward(y, g, scale)
    });

    no_grad!(fn det_causal_softmax_backward(y, dy; scale: f32));
}
