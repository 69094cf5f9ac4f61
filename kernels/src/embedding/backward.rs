//! `det_embedding`'s autodiff: the table's gradient is `det_embedding_backward` (the segmented
//! sum in position order); the integer inputs take no gradient. The tape keeps the segments.

use super::EmbeddingOps;
use crate::seam::autodiff::{Grad, no_grad};
use burn::backend::{
    Autodiff,
    autodiff::{
        checkpoint::strategy::CheckpointStrategy,
        ops::{Backward, OpsKind},
    },
    tensor::FloatTensor,
};

/// The backward: the segments (`order`, `offsets`) and the incoming gradient to the table's.
type SegmentGrad<B> = fn((FloatTensor<B>, FloatTensor<B>), FloatTensor<B>) -> FloatTensor<B>;

impl<B: EmbeddingOps, C: CheckpointStrategy> EmbeddingOps for Autodiff<B, C> {
    fn det_embedding(
        table: FloatTensor<Self>,
        ids: FloatTensor<Self>,
        order: FloatTensor<Self>,
        offsets: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (ids, order, offsets) = (
            ids.into_primitive(),
            order.into_primitive(),
            offsets.into_primitive(),
        );
        let grad: SegmentGrad<B> =
            |(order, offsets), g| B::det_embedding_backward(g, order, offsets);
        match Grad::<B, _, 1>::new()
            .prepare::<C>([table.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out =
                    B::det_embedding(table.into_primitive(), ids, order.clone(), offsets.clone());
                prep.finish(((order, offsets), grad), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::det_embedding(
                table.into_primitive(),
                ids,
                order,
                offsets,
            )),
        }
    }

    no_grad!(fn det_embedding_backward(g, order, offsets));
}
