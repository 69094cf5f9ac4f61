//! `det_probe_mad` on the CPU backends (`cpu.rs`) and on CubeCL (`gpu.rs`).

use super::{ProbeOps, cpu, gpu};
use crate::seam::cube::{contiguous, empty, grid};
use crate::seam::host::{cpu_backends, read, upload};
use burn::backend::{Cube, TensorMetadata, tensor::FloatTensor};

cpu_backends! {
    impl ProbeOps {
        fn det_probe_mad(
            a: FloatTensor<Self>,
            b: FloatTensor<Self>,
            c: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            let device = a.device();
            let ((av, s), (bv, _), (cv, _)) = (read::<Self>(a), read::<Self>(b), read::<Self>(c));
            upload::<Self>(cpu::mad_plain(&av, &bv, &cv), s, &device)
        }
    }
}

impl ProbeOps for Cube {
    fn det_probe_mad(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let [a, b, c] = contiguous([a, b, c], "det_probe_mad");
        let shape = a.shape();
        let len = shape.num_elements();
        let out = empty(&a, shape);
        let (count, dim) = grid(&out, len.max(1));
        gpu::mad_plain_kernel::launch(
            &out.client,
            count,
            dim,
            a.into_tensor_arg(),
            b.into_tensor_arg(),
            c.into_tensor_arg(),
            out.clone().into_tensor_arg(),
        );
        out
    }
}
