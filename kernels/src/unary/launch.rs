//! The element-wise functions on the CPU backends (`cpu.rs`) and on CubeCL (`gpu.rs`).

use super::{UnaryOps, cpu, gpu};
use crate::arith::Unary;
use crate::seam::cube::{ONE, contiguous, launch_into};
use crate::seam::host::{HostRead, cpu_backends, read, upload};
use burn::backend::{Cube, TensorMetadata, tensor::FloatTensor};

/// The seven methods, each `$run(x, its Unary)`.
macro_rules! unary_methods {
    ($run:expr) => {
        fn det_exp(x: FloatTensor<Self>) -> FloatTensor<Self> {
            $run(x, Unary::Exp)
        }
        fn det_log(x: FloatTensor<Self>) -> FloatTensor<Self> {
            $run(x, Unary::Log)
        }
        fn det_sigmoid(x: FloatTensor<Self>) -> FloatTensor<Self> {
            $run(x, Unary::Sigmoid)
        }
        fn det_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
            $run(x, Unary::Tanh)
        }
        fn det_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
            $run(x, Unary::Gelu)
        }
        fn det_gelu_grad(x: FloatTensor<Self>) -> FloatTensor<Self> {
            $run(x, Unary::GeluGrad)
        }
        fn det_recip(x: FloatTensor<Self>) -> FloatTensor<Self> {
            $run(x, Unary::Recip)
        }
    };
}

fn on_host<B: HostRead>(x: FloatTensor<B>, op: Unary) -> FloatTensor<B> {
    let device = x.device();
    let (xv, s) = read::<B>(x);
    upload::<B>(cpu::map(&xv, op), s, &device)
}

cpu_backends! {
    impl UnaryOps {
        unary_methods!(on_host::<Self>);
    }
}

fn on_cube(x: FloatTensor<Cube>, op: Unary) -> FloatTensor<Cube> {
    let [x] = contiguous(
        [x],
        "det_exp/det_log/det_sigmoid/det_tanh/det_gelu/det_recip",
    );
    let shape = x.shape();
    let len = shape.num_elements();
    launch_into!(gpu::unary_kernel, x, shape, len, |out| (
        x.into_tensor_arg(),
        out,
        ONE,
        op as u32
    ))
}

impl UnaryOps for Cube {
    unary_methods!(on_cube);
}
