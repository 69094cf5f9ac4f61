//! `det_pool2d` and its backward on the CPU backends (`cpu.rs`) and on CubeCL (`gpu.rs`).

use super::{Pool, PoolOps, cpu, gpu};
use crate::seam::cube::{ONE, contiguous, launch_into};
use crate::seam::host::{cpu_backends, dims4, read, upload};
use burn::backend::{Cube, Shape, TensorMetadata, tensor::FloatTensor};

cpu_backends! {
    impl PoolOps {
        fn det_pool2d(x: FloatTensor<Self>, k: usize, kind: Pool) -> FloatTensor<Self> {
            let device = x.device();
            let (xv, s) = read::<Self>(x);
            let [n, c, h, w] = dims4(&s, "det_pool2d");
            let y = cpu::forward(&xv, n * c, h, w, k, kind);
            upload::<Self>(y, Shape::new([n, c, h / k, w / k]), &device)
        }
        fn det_pool2d_backward(
            x: FloatTensor<Self>,
            dy: FloatTensor<Self>,
            k: usize,
            kind: Pool,
        ) -> FloatTensor<Self> {
            let device = x.device();
            let ((xv, s), (gv, _)) = (read::<Self>(x), read::<Self>(dy));
            let [n, c, h, w] = dims4(&s, "det_pool2d_backward");
            upload::<Self>(cpu::backward(&xv, &gv, n * c, h, w, k, kind), s, &device)
        }
    }
}

impl PoolOps for Cube {
    fn det_pool2d(x: FloatTensor<Self>, k: usize, kind: Pool) -> FloatTensor<Self> {
        let [x] = contiguous([x], "det_pool2d");
        let [n, c, h, w] = x.shape().dims::<4>();
        assert!(k > 0, "det_pool2d: window 0");
        let shape = Shape::new([n, c, h / k, w / k]);
        let len = shape.num_elements();
        launch_into!(gpu::pool_forward_kernel, x, shape, len, |out| (
            x.into_tensor_arg(),
            out,
            Pool::inv(k),
            ONE,
            k,
            kind.code()
        ))
    }

    fn det_pool2d_backward(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        k: usize,
        kind: Pool,
    ) -> FloatTensor<Self> {
        let [x, g] = contiguous([x, dy], "det_pool2d_backward");
        let shape = x.shape();
        let len = shape.num_elements();
        launch_into!(gpu::pool_backward_kernel, x, shape, len, |out| (
            x.into_tensor_arg(),
            g.into_tensor_arg(),
            out,
            Pool::inv(k),
            ONE,
            k,
            kind.code()
        ))
    }
}
