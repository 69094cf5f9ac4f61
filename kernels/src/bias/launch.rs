//! `det_add_bias` on the CPU backends (`cpu.rs`) and on CubeCL (`gpu.rs`).

use super::{BiasOps, cpu, gpu};
use crate::seam::cube::{ONE, contiguous, launch_into};
use crate::seam::host::{cpu_backends, dims2, read, upload};
use burn::backend::{Cube, TensorMetadata, tensor::FloatTensor};

cpu_backends! {
    impl BiasOps {
        fn det_add_bias(x: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
            let device = x.device();
            let ((xv, s), (bv, _)) = (read::<Self>(x), read::<Self>(b));
            let (m, n) = dims2(&s, "det_add_bias");
            upload::<Self>(cpu::add_bias(&xv, &bv, m, n), s, &device)
        }
    }
}

impl BiasOps for Cube {
    fn det_add_bias(x: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let [x, b] = contiguous([x, b], "det_add_bias");
        let shape = x.shape();
        let len = shape.num_elements();
        launch_into!(gpu::add_bias_kernel, x, shape, len, |out| (
            x.into_tensor_arg(),
            b.into_tensor_arg(),
            out,
            ONE
        ))
    }
}
