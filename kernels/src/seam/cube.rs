//! Launching CubeCL kernels on burn's cube tensors (wgpu and every other cube runtime).

use crate::arith::gpu::LOOP_BLOCK;
use burn::backend::{DType, Shape};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::{CubeCount, CubeDim};

/// The runtime multiply-by-one that keeps products rounded (crate doc). Never a literal.
pub(crate) const ONE: f32 = 1.0;

pub(crate) fn f32_only(t: &CubeTensor, op: &str) {
    assert_eq!(
        t.dtype,
        DType::F32,
        "{op}: lockstep kernels are f32-only, got {:?}",
        t.dtype
    );
}

/// f32-checked, contiguous inputs (a copy kernel where needed, no arithmetic).
pub(crate) fn contiguous<const N: usize>(ts: [CubeTensor; N], op: &str) -> [CubeTensor; N] {
    ts.map(|t| {
        f32_only(&t, op);
        into_contiguous(t)
    })
}

/// The grid for `units` threads, 256 to a cube.
pub(crate) fn grid(t: &CubeTensor, units: usize) -> (CubeCount, CubeDim) {
    assert!(units < u32::MAX as usize, "kernel indexing is 32-bit");
    let dim = CubeDim::new_1d(256);
    (
        cubecl::calculate_cube_count_elemwise(&t.client, units, dim),
        dim,
    )
}

/// Allocate the output of `shape` beside `like` and, unless it is empty, launch `kernel` on a
/// grid of `units` threads with `args` — the kernel's arguments after the launch geometry, in
/// which `out` names the output's tensor argument. Evaluates to the output.
macro_rules! launch_into {
    ($($kernel:ident)::+, $like:expr, $shape:expr, $units:expr, |$out:ident| ($($arg:expr),* $(,)?)) => {{
        let (out, grid) = $crate::seam::cube::output(&$like, $shape, $units);
        if let Some((count, dim)) = grid {
            let $out = out.clone().into_tensor_arg();
            $($kernel)::+::launch(&out.client, count, dim, $($arg),*);
        }
        out
    }};
}
pub(crate) use launch_into;

/// A contiguous f32 output of `shape` beside `like`, and the grid for `units` threads —
/// `None` when the output is empty (nothing to launch).
pub(crate) fn output(
    like: &CubeTensor,
    shape: Shape,
    units: usize,
) -> (CubeTensor, Option<(CubeCount, CubeDim)>) {
    let empty_out = shape.num_elements() == 0 || units == 0;
    let out = empty(like, shape);
    let g = (!empty_out).then(|| grid(&out, units));
    (out, g)
}

/// An uninitialised contiguous f32 tensor of `shape` beside `like`.
pub(crate) fn empty(like: &CubeTensor, shape: Shape) -> CubeTensor {
    empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), shape, DType::F32)
}

/// `[lo, hi)` blocks of `0..len` of at most `LOOP_BLOCK`, in order; one empty block for 0.
fn blocks(len: usize) -> Vec<(u32, u32)> {
    assert!(len < u32::MAX as usize, "kernel indexing is 32-bit");
    let n = len.div_ceil(LOOP_BLOCK).max(1);
    (0..n)
        .map(|b| {
            let lo = b * LOOP_BLOCK;
            (lo as u32, (lo + LOOP_BLOCK).min(len) as u32)
        })
        .collect()
}

/// Runs `launch(acc_in, out, lo, hi, first)` for each block of `0..len` in order (`blocks`):
/// every block writes a fresh `shape` output that the next block reads as its `acc_in`; the
/// first starts from 0.0 and is handed an unread scratch tensor (a buffer of its own: wgpu
/// forbids binding one buffer twice when a binding is writable). Returns the last output.
pub(crate) fn accumulate_in_blocks(
    like: &CubeTensor,
    shape: Shape,
    len: usize,
    launch: impl Fn(CubeTensor, &CubeTensor, u32, u32, bool),
) -> CubeTensor {
    let mut acc = empty(like, shape.clone());
    for (i, (lo, hi)) in blocks(len).into_iter().enumerate() {
        let out = empty(like, shape.clone());
        launch(acc, &out, lo, hi, i == 0);
        acc = out;
    }
    acc
}
