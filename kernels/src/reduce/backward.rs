//! The reductions' autodiff: the incoming gradient broadcast back to the input's shape.

use super::ReduceOps;
use crate::seam::autodiff::unary_autodiff;
use burn::backend::{Autodiff, Shape, autodiff::checkpoint::strategy::CheckpointStrategy};

impl<B: ReduceOps, C: CheckpointStrategy> ReduceOps for Autodiff<B, C> {
    unary_autodiff!(fn det_sum_rows(x) keep shape, |g, shape| B::float_expand(g, shape));

    unary_autodiff!(fn det_sum_all(x) keep shape, |g, shape| {
        let ones: Shape = shape.iter().map(|_| 1usize).collect();
        B::float_expand(B::float_reshape(g, ones), shape)
    });
}
