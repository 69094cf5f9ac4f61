//! `det_causal_softmax` and its backward on the CPU backends (`cpu.rs`) and on CubeCL
//! (`gpu.rs`).

use super::{CausalOps, cpu, gpu};
use crate::seam::cube::{ONE, contiguous, launch_into};
use crate::seam::host::{cpu_backends, dims2, read, upload};
use burn::backend::{Cube, TensorMetadata, tensor::FloatTensor};

cpu_backends! {
    impl CausalOps {
        fn det_causal_softmax(x: FloatTensor<Self>, scale: f32) -> FloatTensor<Self> {
            let device = x.device();
            let (xv, s) = read::<Self>(x);
            let (r, t) = dims2(&s, "det_causal_softmax");
            upload::<Self>(cpu::forward(&xv, r, t, scale), s, &device)
        }
        fn det_causal_softmax_backward(
            y: FloatTensor<Self>,
            dy: FloatTensor<Self>,
            scale: f32,
        ) -> FloatTensor<Self> {
            let device = y.device();
            let ((yv, s), (gv, _)) = (read::<Self>(y), read::<Self>(dy));
            let (r, t) = dims2(&s, "det_causal_softmax_backward");
            upload::<Self>(cpu::backward(&yv, &gv, r, t, scale), s, &device)
        }
    }
}

impl CausalOps for Cube {
    fn det_causal_softmax(x: FloatTensor<Self>, scale: f32) -> FloatTensor<Self> {
        let [x] = contiguous([x], "det_causal_softmax");
        let shape = x.shape();
        let [r, _] = shape.dims::<2>();
        launch_into!(gpu::causal_softmax_forward_kernel, x, shape, r, |out| (
            x.into_tensor_arg(),
            out,
            scale,
            ONE
        ))
    }

    fn det_causal_softmax_backward(
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        let [y, g] = contiguous([y, dy], "det_causal_softmax_backward");
        let shape = y.shape();
        let [r, _] = shape.dims::<2>();
        launch_into!(gpu::causal_softmax_backward_kernel, y, shape, r, |out| (
            y.into_tensor_arg(),
            g.into_tensor_arg(),
            out,
            scale,
            ONE
        ))
    }
}
