//! `det_layer_norm`'s autodiff: the input `x` kept (the backward recomputes the row statistics
//! and `y` from it), the gradient from `det_layer_norm_backward`.

use super::LayerNormOps;
use crate::seam::autodiff::{no_grad, unary_autodiff};
use burn::backend::{Autodiff, autodiff::checkpoint::strategy::CheckpointStrategy};

impl<B: LayerNormOps, C: CheckpointStrategy> LayerNormOps for Autodiff<B, C> {
    unary_autodiff!(fn det_layer_norm(x, eps: f32) keep input, |g, x| {
        B::det_layer_norm_backward(x, g, eps)
    });

    no_grad!(fn det_layer_norm_backward(x, dy; eps: f32));
}
