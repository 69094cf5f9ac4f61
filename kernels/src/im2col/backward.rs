//! `det_im2col`'s autodiff: `x`'s shape kept, the gradient from `det_col2im`.

use super::Im2colOps;
use crate::seam::autodiff::{no_grad, unary_autodiff};
use burn::backend::{Autodiff, autodiff::checkpoint::strategy::CheckpointStrategy};

impl<B: Im2colOps, C: CheckpointStrategy> Im2colOps for Autodiff<B, C> {
    unary_autodiff!(fn det_im2col(x, k: usize, pad: usize) keep shape, |g, s| {
        B::det_col2im(g, [s[0], s[1], s[2], s[3]], k, pad)
    });

    no_grad!(fn det_col2im(dcols; dims: [usize; 4], k: usize, pad: usize));
}
