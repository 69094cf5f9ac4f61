//! `det_embedding` and its backward on the CPU backends (`cpu.rs`) and on CubeCL (`gpu.rs`).

use super::{EmbeddingOps, cpu, gpu};
use crate::seam::cube::{ONE, contiguous, launch_into};
use crate::seam::host::{cpu_backends, dims2, read, upload};
use burn::backend::{Cube, Shape, TensorMetadata, tensor::FloatTensor};

fn usizes(v: &[f32]) -> Vec<usize> {
    v.iter().map(|&x| x as usize).collect()
}

cpu_backends! {
    impl EmbeddingOps {
        fn det_embedding(
            table: FloatTensor<Self>,
            ids: FloatTensor<Self>,
            _order: FloatTensor<Self>,
            _offsets: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            let device = table.device();
            let ((tv, s), (iv, _)) = (read::<Self>(table), read::<Self>(ids));
            let (_, c) = dims2(&s, "det_embedding");
            let ids = usizes(&iv);
            upload::<Self>(cpu::gather(&tv, c, &ids), Shape::new([ids.len(), c]), &device)
        }

        fn det_embedding_backward(
            g: FloatTensor<Self>,
            order: FloatTensor<Self>,
            offsets: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            let device = g.device();
            let ((gv, s), (ov, _), (fv, _)) =
                (read::<Self>(g), read::<Self>(order), read::<Self>(offsets));
            let (_, c) = dims2(&s, "det_embedding_backward");
            let offsets = usizes(&fv);
            let vocab = offsets.len() - 1;
            let out = cpu::segment_sum(&gv, c, &usizes(&ov), &offsets);
            upload::<Self>(out, Shape::new([vocab, c]), &device)
        }
    }
}

impl EmbeddingOps for Cube {
    fn det_embedding(
        table: FloatTensor<Self>,
        ids: FloatTensor<Self>,
        _order: FloatTensor<Self>,
        _offsets: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let [table, ids] = contiguous([table, ids], "det_embedding");
        let c = table.shape()[1];
        let n = ids.shape()[0];
        launch_into!(
            gpu::gather_kernel,
            table,
            Shape::new([n, c]),
            n * c,
            |out| (table.into_tensor_arg(), ids.into_tensor_arg(), out, ONE)
        )
    }

    fn det_embedding_backward(
        g: FloatTensor<Self>,
        order: FloatTensor<Self>,
        offsets: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let [g, order, offsets] = contiguous([g, order, offsets], "det_embedding_backward");
        let c = g.shape()[1];
        let vocab = offsets.shape()[0] - 1;
        launch_into!(
            gpu::segment_sum_kernel,
            g,
            Shape::new([vocab, c]),
            vocab * c,
            |out| (
                g.into_tensor_arg(),
                order.into_tensor_arg(),
                offsets.into_tensor_arg(),
                out,
                ONE
            )
        )
    }
}
