//! `det_softmax` and its backward on the CPU backends (`cpu.rs`) and on CubeCL (`gpu.rs`).

use super::{SoftmaxOps, cpu, gpu};
use crate::seam::cube::{ONE, contiguous, output};
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
        let (out, grid) = output(&x, shape, m);
        let Some((count, dim)) = grid else {
            return out;
        };
        gpu::softmax_forward_kernel::launch(
            &out.client,
            count,
            dim,
            x.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            ONE,
            u32::from(log),
        );
        out
    }

    fn det_softmax_backward(
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        log: bool,
    ) -> FloatTensor<Self> {
        let [y, g] = contiguous([y, dy], "det_softmax_backward");
        let shape = y.shape();
        let [m, _] = shape.dims::<2>();
        let (out, grid) = output(&y, shape, m);
        let Some((count, dim)) = grid else {
            return out;
        };
        gpu::softmax_backward_kernel::launch(
            &out.client,
            count,
            dim,
            y.into_tensor_arg(),
            g.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            ONE,
            u32::from(log),
        );
        out
    }
}
