//! `det_softmax` and its backward on the CPU backends (`cpu.rs`) and on CubeCL (`gpu.rs`).

use super::{SoftmaxOps, cpu, gpu};
use crate::seam::cube::{ONE, contiguous, launch_into};
use crate::seam::host::{cpu_backends, dims2, read, upload};
use burn::backend::{Cube, TensorMetadata, tensor::FloatTensor};

cpu_backends! {
    impl SoftmaxOps {
        fn det_softmax(x: FloatTensor<Self>, log: bool) -> FloatTensor<Self> {
            let device = x.device();
            let (xv, s) = read::<Self>(x);
            let (m, c) = dims2(&s, "det_softmax");
            upload::<Self>(cpu::forward(&xv, m, c, log), s, &device)
        }
        fn det_softmax_backward(
            y: FloatTensor<Self>,
            dy: FloatTensor<Self>,
            log: bool,
        ) -> FloatTensor<Self> {
            let device = y.device();
            let ((yv, s), (gv, _)) = (read::<Self>(y), read::<Self>(dy));
            let (m, c) = dims2(&s, "det_softmax_backward");
            upload::<Self>(cpu::backward(&yv, &gv, m, c, log), s, &device)
        }
    }
}

impl SoftmaxOps for Cube {
    fn det_softmax(x: FloatTensor<Self>, log: bool) -> FloatTensor<Self> {
        let [x] = contiguous([x], "det_softmax");
        let shape = x.shape();
        let [m, _] = shape.dims::<2>();
        launch_into!(gpu::softmax_forward_kernel, x, shape, m, |out| (
            x.into_tensor_arg(),
            out,
            ONE,
            u32::from(log)
        ))
    }

    fn det_softmax_backward(
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        log: bool,
    ) -> FloatTensor<Self> {
        let [y, g] = contiguous([y, dy], "det_softmax_backward");
        let shape = y.shape();
        let [m, _] = shape.dims::<2>();
        launch_into!(gpu::softmax_backward_kernel, y, shape, m, |out| (
            y.into_tensor_arg(),
            g.into_tensor_arg(),
            out,
            ONE,
            u32::from(log)
        ))
    }
}
