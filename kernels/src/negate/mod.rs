//! `negate`: `y = -fl(x)` element-wise (`fl` = `arith::flush`, then an exact sign flip: no
//! rounding anywhere). No reduction; backward `dx = negate(g)` (`backward.rs`). CPU: one element
//! after another; GPU: one thread per element.
//!
//! Compiled for the unit tests only: the smallest complete op, added the way `ops`'s module doc
//! says (this folder, its `pub mod` in `lib.rs` and one line in `ops!`), and its test shows that
//! this is all an op needs to run on every backend, with autodiff.

mod backward;
pub mod cpu;
pub mod gpu;
mod launch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

/// `negate` on every backend: `launch.rs` for ndarray, flex and CubeCL, `backward.rs` for
/// autodiff.
#[backend_extension(NdArray, Flex, Cube, Autodiff)]
pub trait NegateOps: Backend {
    /// `-x` element-wise, flushed.
    fn det_negate(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `-x` element-wise, flushed.
pub fn negate<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as NegateOps>::det_negate(x.into_dispatch()))
}

#[cfg(test)]
mod tests {
    use crate::ops;
    use burn::tensor::{Device, DeviceKind, Tensor, TensorData};

    /// Inputs and the expected bits, written out by hand: a subnormal flushes to a zero of its
    /// sign, which then flips; everything else just flips its sign bit.
    const CASES: [(u32, u32); 8] = [
        (0x3fc0_0000, 0xbfc0_0000), // 1.5 -> -1.5
        (0xc010_0000, 0x4010_0000), // -2.25 -> 2.25
        (0x0000_0000, 0x8000_0000), // 0 -> -0
        (0x8000_0000, 0x0000_0000), // -0 -> 0
        (0x0000_0001, 0x8000_0000), // smallest subnormal -> flushed, -0
        (0x8080_0000, 0x0000_0000), // -MIN_POSITIVE -> flushed (-0), 0
        (0x7f80_0000, 0xff80_0000), // inf -> -inf
        (0x4b00_0001, 0xcb00_0001), // 8388609 -> -8388609
    ];

    fn check(device: &Device, what: &str) {
        let xs: Vec<f32> = CASES.iter().map(|&(x, _)| f32::from_bits(x)).collect();
        let t = || Tensor::<1>::from_data(TensorData::new(xs.clone(), [xs.len()]), device);
        let y = ops::negate(t()).try_into_vec_as::<f32>().expect("f32");
        let got: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
        let want: Vec<u32> = CASES.iter().map(|&(_, y)| y).collect();
        assert_eq!(got, want, "{what}: negate");

        let ad = device.clone().autodiff();
        let x = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, -3.0, 0.5], [3]), &ad)
            .require_grad();
        let g = Tensor::<1>::from_data(TensorData::new(vec![2.0f32, 0.25, -4.0], [3]), &ad);
        let grads = (ops::negate(x.clone()) * g).sum().backward();
        let dx = x.grad(&grads).expect("x takes part");
        let dx = dx.try_into_vec_as::<f32>().expect("f32");
        assert_eq!(dx, [-2.0, -0.25, 4.0], "{what}: negate's gradient");
    }

    /// The op added through the documented path (one folder, one line in `ops!`) runs through
    /// `ops::negate` on both CPU backends and on wgpu, and its backward is registered: the
    /// seam needs nothing else.
    #[test]
    fn an_op_added_through_the_seam_runs_on_every_backend() {
        check(&Device::ndarray(), "ndarray");
        check(&Device::flex(), "flex");
        let wgpu = std::panic::catch_unwind(|| {
            let d = Device::wgpu(DeviceKind::DefaultDevice);
            Tensor::<1>::zeros([1], &d).try_into_vec_as::<f32>().is_ok()
        });
        if wgpu.unwrap_or(false) {
            check(&Device::wgpu(DeviceKind::DefaultDevice), "wgpu");
        } else {
            assert!(std::env::var_os("CI").is_none(), "no wgpu adapter under CI");
            eprintln!("negate: no wgpu adapter, CubeCL path not run");
        }
    }

    /// Every backend has every op of `DetOps` (a `cfg`'d op like this one is not in it).
    #[test]
    fn every_backend_has_every_op() {
        fn all<B: ops::DetOps>() {}
        all::<burn::backend::NdArray>();
        all::<burn::backend::Flex>();
        all::<burn::backend::Cube>();
        all::<burn::backend::Autodiff<burn::backend::Flex>>();
    }
}
