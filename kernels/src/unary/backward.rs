//! The element-wise functions' autodiff (`unary`'s module doc), every product through `det_mul`.

use super::UnaryOps;
use crate::mul::MulOps;
use crate::seam::autodiff::{no_grad, unary_autodiff};
use burn::backend::{Autodiff, autodiff::checkpoint::strategy::CheckpointStrategy};

impl<B: UnaryOps + MulOps, C: CheckpointStrategy> UnaryOps for Autodiff<B, C> {
    unary_autodiff!(fn det_exp(x) keep output, |g, y| B::det_mul(g, y));

    // d log(x) = g * (1/x) with lockstep's reciprocal: no hardware division (`arith`).
    unary_autodiff!(fn det_log(x) keep input, |g, x| B::det_mul(g, B::det_recip(x)));

    // `1 - s` and `1 - t*t` are stock ops on flushed values in [0, 1] (module doc).
    unary_autodiff!(fn det_sigmoid(x) keep output, |g, s| {
        let one_minus = B::float_add_scalar(B::float_neg(s.clone()), 1.0f32.into());
        B::det_mul(g, B::det_mul(s, one_minus))
    });

    unary_autodiff!(fn det_tanh(x) keep output, |g, t| {
        let sq = B::det_mul(t.clone(), t);
        B::det_mul(g, B::float_add_scalar(B::float_neg(sq), 1.0f32.into()))
    });

    unary_autodiff!(fn det_gelu(x) keep input, |g, x| B::det_mul(g, B::det_gelu_grad(x)));

    no_grad!(fn det_gelu_grad(x));
    no_grad!(fn det_recip(x));
}
