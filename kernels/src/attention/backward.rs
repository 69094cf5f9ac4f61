//! `det_attention`'s autodiff: `qkv` and the forward's softmax `att` kept, the gradient from
//! `det_attention_backward`.

use super::AttentionOps;
use crate::seam::autodiff::{Grad, no_grad};
use burn::backend::{
    Autodiff,
    autodiff::checkpoint::strategy::CheckpointStrategy,
    autodiff::ops::{Backward as _, OpsKind},
    tensor::FloatTensor,
};

/// What the backward takes: `qkv`, `att` and the constants `(b, nh, scale, fused)`.
type Kept<B> = (FloatTensor<B>, FloatTensor<B>, (usize, usize, f32, bool));

impl<B: AttentionOps, C: CheckpointStrategy> AttentionOps for Autodiff<B, C> {
    fn det_attention(
        qkv: FloatTensor<Self>,
        b: usize,
        nh: usize,
        scale: f32,
        fused: bool,
    ) -> FloatTensor<Self> {
        let grad: fn(Kept<B>, FloatTensor<B>) -> FloatTensor<B> =
            |(x, att, (b, nh, scale, fused)), g| {
                B::det_attention_backward(x, att, g, b, nh, scale, fused)
            };
        match Grad::<B, _, 1>::new()
            .prepare::<C>([qkv.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = qkv.primitive().clone();
                let (y, att) = B::det_attention_keep(x.clone(), b, nh, scale, fused);
                prep.finish(((x, att, (b, nh, scale, fused)), grad), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::det_attention(qkv.into_primitive(), b, nh, scale, fused))
            }
        }
    }

    no_grad!(fn det_attention_keep(qkv; b: usize, nh: usize, scale: f32, fused: bool) -> (y, att));

    no_grad!(fn det_attention_backward(qkv, att, dy; b: usize, nh: usize, scale: f32, fused: bool));
}
