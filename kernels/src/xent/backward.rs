//! `det_xent`'s autodiff: `logits` tracked, `logits` and `targets` kept, the gradient from
//! `det_xent_backward`.

use super::XentOps;
use crate::seam::autodiff::{Grad, no_grad};
use burn::backend::{
    Autodiff,
    autodiff::{
        checkpoint::strategy::CheckpointStrategy,
        ops::{Backward, OpsKind},
    },
    tensor::FloatTensor,
};

impl<B: XentOps, C: CheckpointStrategy> XentOps for Autodiff<B, C> {
    fn det_xent(logits: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self> {
        type Kept<B> = (FloatTensor<B>, FloatTensor<B>);
        let grad: fn(Kept<B>, FloatTensor<B>) -> FloatTensor<B> =
            |(x, t), g| B::det_xent_backward(x, t, g);
        let t = targets.primitive().clone();
        match Grad::<B, _, 1>::new()
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = logits.primitive().clone();
                let out = B::det_xent(x.clone(), t.clone());
                prep.finish(((x, t), grad), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::det_xent(logits.into_primitive(), t)),
        }
    }

    no_grad!(fn det_xent_backward(logits, targets, g));
}
