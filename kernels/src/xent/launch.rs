//! `det_xent` and its backward on the CPU backends (`cpu.rs`) and on CubeCL (`gpu.rs`).

use super::{XentOps, cpu, gpu};
use crate::seam::cube::{ONE, contiguous, launch_into};
use crate::seam::host::{cpu_backends, dims2, read, upload};
use burn::backend::{Cube, Shape, TensorMetadata, tensor::FloatTensor};

cpu_backends! {
    impl XentOps {
        fn det_xent(logits: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self> {
            let device = logits.device();
            let ((xv, s), (tv, _)) = (read::<Self>(logits), read::<Self>(targets));
            let (m, c) = dims2(&s, "det_xent");
            upload::<Self>(cpu::forward(&xv, &tv, m, c), Shape::new([m, 1]), &device)
        }
        fn det_xent_backward(
            logits: FloatTensor<Self>,
            targets: FloatTensor<Self>,
            g: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            let device = logits.device();
            let ((xv, s), (tv, _), (gv, _)) =
                (read::<Self>(logits), read::<Self>(targets), read::<Self>(g));
            let (m, c) = dims2(&s, "det_xent_backward");
            upload::<Self>(cpu::backward(&xv, &tv, &gv, m, c), s, &device)
        }
    }
}

impl XentOps for Cube {
    fn det_xent(logits: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self> {
        let [x, t] = contiguous([logits, targets], "det_xent");
        let [m, _] = x.shape().dims::<2>();
        launch_into!(gpu::xent_forward_kernel, x, Shape::new([m, 1]), m, |out| (
            x.into_tensor_arg(),
            t.into_tensor_arg(),
            out,
            ONE
        ))
    }

    fn det_xent_backward(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        g: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let [x, t, g] = contiguous([logits, targets, g], "det_xent_backward");
        let shape = x.shape();
        let m = shape[0];
        launch_into!(gpu::xent_backward_kernel, x, shape, m, |out| (
            x.into_tensor_arg(),
            t.into_tensor_arg(),
            g.into_tensor_arg(),
            out,
            ONE
        ))
    }
}
