//! `det_negate` on the CPU backends (`cpu.rs`) and on CubeCL (`gpu.rs`).

use super::{NegateOps, cpu, gpu};
use crate::seam::cube::{ONE, contiguous, launch_into};
use crate::seam::host::{cpu_backends, read, upload};
use burn::backend::{Cube, TensorMetadata, tensor::FloatTensor};

cpu_backends! {
    impl NegateOps {
        fn det_negate(x: FloatTensor<Self>) -> FloatTensor<Self> {
            let device = x.device();
            let (xv, s) = read::<Self>(x);
            upload::<Self>(cpu::negate(&xv), s, &device)
        }
    }
}

impl NegateOps for Cube {
    fn det_negate(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let [x] = contiguous([x], "det_negate");
        let shape = x.shape();
        let len = shape.num_elements();
        launch_into!(gpu::negate_kernel, x, shape, len, |out| (
            x.into_tensor_arg(),
            out,
            ONE
        ))
    }
}
