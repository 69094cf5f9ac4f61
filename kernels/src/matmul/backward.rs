//! `det_matmul`'s autodiff: `dA = G · Bᵀ`, `dB = Aᵀ · G`, both with the same kernel and
//! the same arithmetic profile (`fused`).

use super::MatmulOps;
use crate::seam::autodiff::binary_autodiff;
use burn::backend::{Autodiff, autodiff::checkpoint::strategy::CheckpointStrategy};

impl<B: MatmulOps, C: CheckpointStrategy> MatmulOps for Autodiff<B, C> {
    binary_autodiff!(fn det_matmul(fused: bool), |g, a, b| (
        B::det_matmul(g.clone(), B::float_transpose(b), fused),
        B::det_matmul(B::float_transpose(a), g, fused)
    ));
}
