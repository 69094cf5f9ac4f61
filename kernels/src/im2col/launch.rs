//! `det_im2col` and `det_col2im` on the CPU backends (`cpu.rs`) and on CubeCL (`gpu.rs`).

use super::{Im2colOps, cpu, gpu};
use crate::seam::cube::{ONE, contiguous, launch_into};
use crate::seam::host::{cpu_backends, dims4, read, upload};
use burn::backend::{Cube, Shape, TensorMetadata, tensor::FloatTensor};

cpu_backends! {
    impl Im2colOps {
        fn det_im2col(x: FloatTensor<Self>, k: usize, pad: usize) -> FloatTensor<Self> {
            let device = x.device();
            let (xv, s) = read::<Self>(x);
            let dims = dims4(&s, "det_im2col");
            let [n, c, h, w] = dims;
            let cols = cpu::im2col(&xv, dims, k, pad);
            upload::<Self>(cols, Shape::new([n * h * w, c * k * k]), &device)
        }
        fn det_col2im(
            dcols: FloatTensor<Self>,
            dims: [usize; 4],
            k: usize,
            pad: usize,
        ) -> FloatTensor<Self> {
            let device = dcols.device();
            let (gv, _) = read::<Self>(dcols);
            upload::<Self>(cpu::col2im(&gv, dims, k, pad), Shape::new(dims), &device)
        }
    }
}

impl Im2colOps for Cube {
    fn det_im2col(x: FloatTensor<Self>, k: usize, pad: usize) -> FloatTensor<Self> {
        let [x] = contiguous([x], "det_im2col");
        let [n, c, h, w] = x.shape().dims::<4>();
        let shape = Shape::new([n * h * w, c * k * k]);
        let len = shape.num_elements();
        launch_into!(gpu::im2col_kernel, x, shape, len, |out| (
            x.into_tensor_arg(),
            out,
            ONE,
            k,
            pad
        ))
    }

    fn det_col2im(
        dcols: FloatTensor<Self>,
        dims: [usize; 4],
        k: usize,
        pad: usize,
    ) -> FloatTensor<Self> {
        let [g] = contiguous([dcols], "det_col2im");
        let shape = Shape::new(dims);
        let len = shape.num_elements();
        launch_into!(gpu::col2im_kernel, g, shape, len, |out| (
            g.into_tensor_arg(),
            out,
            ONE,
            k,
            pad
        ))
    }
}
