//! `det_bmm`'s autodiff: `dA = G · Bᵀ`, `dB = Aᵀ · G` per batch element, both with the same
//! kernel (`swap_dims(1, 2)`: a view, no arithmetic).

use super::BmmOps;
use crate::seam::autodiff::binary_autodiff;
use burn::backend::{Autodiff, autodiff::checkpoint::strategy::CheckpointStrategy};

impl<B: BmmOps, C: CheckpointStrategy> BmmOps for Autodiff<B, C> {
    binary_autodiff!(fn det_bmm(fused: bool), |g, a, b| (
        B::det_bmm(g.clone(), B::float_swap_dims(b, 1, 2), fused),
        B::det_bmm(B::float_swap_dims(a, 1, 2), g, fused)
    ));
}
