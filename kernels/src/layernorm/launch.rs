//! `det_layer_norm` and its backward on the CPU backends (`cpu.rs`) and on CubeCL (`gpu.rs`).

use super::{LayerNormOps, cpu, gpu};
use crate::seam::cube::{ONE, contiguous, launch_into};
use crate::seam::host::{cpu_backends, dims2, read, upload};
use burn::backend::{Cube, TensorMetadata, tensor::FloatTensor};

cpu_backends! {
    impl LayerNormOps {
        fn det_layer_norm(x: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
            let device = x.device();
            let (xv, s) = read::<Self>(x);
            let (m, c) = dims2(&s, "det_layer_norm");
            upload::<Self>(cpu::forward(&xv, m, c, eps), s, &device)
        }
        fn det_layer_norm_backward(
            x: FloatTensor<Self>,
            dy: FloatTensor<Self>,
            eps: f32,
        ) -> FloatTensor<Self> {
            let device = x.device();
            let ((xv, s), (gv, _)) = (read::<Self>(x), read::<Self>(dy));
            let (m, c) = dims2(&s, "det_layer_norm_backward");
            upload::<Self>(cpu::backward(&xv, &gv, m, c, eps), s, &device)
        }
    }
}

impl LayerNormOps for Cube {
    fn det_layer_norm(x: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        let [x] = contiguous([x], "det_layer_norm");
        let shape = x.shape();
        let [m, c] = shape.dims::<2>();
        launch_into!(gpu::layer_norm_forward_kernel, x, shape, m, |out| (
            x.into_tensor_arg(),
            out,
            cpu::inv_count(c),
            eps,
            ONE
        ))
    }

    fn det_layer_norm_backward(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self> {
        let [x, g] = contiguous([x, dy], "det_layer_norm_backward");
        let shape = x.shape();
        let [m, c] = shape.dims::<2>();
        launch_into!(gpu::layer_norm_backward_kernel, x, shape, m, |out| (
            x.into_tensor_arg(),
            g.into_tensor_arg(),
            out,
            cpu::inv_count(c),
            eps,
            ONE
        ))
    }
}
