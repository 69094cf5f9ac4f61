//! `det_add_bias`'s autodiff: `dx = g`, `db = det_sum_rows(g)`; nothing kept.

use super::BiasOps;
use crate::reduce::ReduceOps;
use crate::seam::autodiff::{Grad, Grad2Fn};
use burn::backend::{
    Autodiff,
    autodiff::{
        checkpoint::strategy::CheckpointStrategy,
        ops::{Backward, OpsKind},
    },
    tensor::FloatTensor,
};

impl<B: BiasOps + ReduceOps, C: CheckpointStrategy> BiasOps for Autodiff<B, C> {
    fn det_add_bias(x: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let grad: Grad2Fn<B, ()> = |g, (), [need_x, need_b]| {
            let db = need_b.then(|| B::det_sum_rows(g.clone()));
            [need_x.then_some(g), db]
        };
        let grad_fn = Grad::<B, (), 2>::new();
        match grad_fn
            .prepare::<C>([x.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(
                ((), grad),
                B::det_add_bias(x.into_primitive(), b.into_primitive()),
            ),
            OpsKind::UnTracked(prep) => {
                prep.finish(B::det_add_bias(x.into_primitive(), b.into_primitive()))
            }
        }
    }
}
