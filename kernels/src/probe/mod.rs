//! `probe`: `a * b + c` element-wise, written plainly, as the device compiles it — the
//! arithmetic-profile probe (`profile`'s `native_mad`), the one op here that does *not* keep
//! lockstep's rules: no `pin`, no flush, so a device that fuses it into `fma` shows. The CPU
//! version is the same plain expression (Rust never contracts it). No backward (`backward.rs`
//! runs it on the inner backend, untracked).

mod backward;
pub mod cpu;
pub mod gpu;
mod launch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

/// `probe` on every backend: `launch.rs` for ndarray, flex and CubeCL, `backward.rs` for
/// autodiff.
#[backend_extension(NdArray, Flex, Cube, Autodiff)]
pub trait ProbeOps: Backend {
    /// `a * b + c` written plainly, as the device compiles it.
    fn det_probe_mad(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// Plain `a * b + c` as the device compiles it (see `profile`).
pub fn probe_mad(a: Tensor<1>, b: Tensor<1>, c: Tensor<1>) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as ProbeOps>::det_probe_mad(
        a.into_dispatch(),
        b.into_dispatch(),
        c.into_dispatch(),
    ))
}
