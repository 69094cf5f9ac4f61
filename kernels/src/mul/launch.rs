//! `det_mul` on the CPU backends (`cpu.rs`) and on CubeCL (`gpu.rs`).

use super::{MulOps, cpu, gpu};
use crate::seam::cube::{ONE, contiguous, launch_into};
use crate::seam::host::{cpu_backends, read, upload};
use burn::backend::{Cube, TensorMetadata, tensor::FloatTensor};

cpu_backends! {
    impl MulOps {
        fn det_mul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
            let device = a.device();
            let ((av, s), (bv, sb)) = (read::<Self>(a), read::<Self>(b));
            assert_eq!(s, sb, "det_mul: shapes differ");
            upload::<Self>(cpu::mul(&av, &bv), s, &device)
        }
    }
}

impl MulOps for Cube {
    fn det_mul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let [a, b] = contiguous([a, b], "det_mul");
        let shape = a.shape();
        assert_eq!(shape, b.shape(), "det_mul: shapes differ");
        let len = shape.num_elements();
        launch_into!(gpu::mul_kernel, a, shape, len, |out| (
            a.into_tensor_arg(),
            b.into_tensor_arg(),
            out,
            ONE
        ))
    }
}
