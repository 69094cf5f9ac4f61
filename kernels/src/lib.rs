//! lockstep-kernels: deterministic kernels, one folder per op, the CPU version (`cpu.rs`) and
//! the GPU kernel (`gpu.rs`, CubeCL) side by side.
//!
//! The contract: for every op here, the CPU version and the GPU kernel produce the same bits, on
//! every thread count, workgroup count and device whose arithmetic profile is `unfused` (see
//! `profile`). Each op's module doc states its exact arithmetic order. The rules that make it so:
//!
//! - One unit of work (a thread on the GPU, a loop iteration on the CPU) owns one output value
//!   and walks its inputs in an order fixed by the output's logical index. No split-K, no atomics,
//!   no shared-memory trees, no subgroup ops; threads split only *between* outputs.
//! - Only `+ - *`, comparisons, `floor`, bit casts and small int<->float conversions, each
//!   rounded once (IEEE round-to-nearest-even). `exp`/`log`/reciprocal are built from these
//!   (`xent`); no `/`, `sqrt` or transcendental builtins (WGSL gives those ULP bounds only).
//! - Every product that feeds an addition is rounded before the addition. Rust never contracts
//!   `a * b + c`. CubeCL's optimiser always rewrites `a * b + c` into `fma(a, b, c)` (which real
//!   GPUs fuse), so GPU kernels write `(a * b) * one + c` with `one` a *runtime* 1.0: the only
//!   possible rewrite is `fma(round(a*b), 1, c) = round(round(a*b) + c)` — the unfused result.
//!   `arith::mad_nc` is that helper; `xent`'s polynomials and `matmul`'s loop use it.
//! - Every kernel is f32 and allocates contiguous outputs; inputs are read through strides or
//!   made contiguous by a copy kernel (no arithmetic).

pub mod arith;
pub mod dropout;
pub mod im2col;
pub mod matmul;
pub mod ops;
pub mod optim;
pub mod pool;
pub mod profile;
pub mod reduce;
pub mod softmax;
pub mod xent;

pub use ops::{
    DetOps, add_bias, cross_entropy_nll, dropout_mask, matmul as det_matmul, sum_all, sum_rows,
};
