//! lockstep-kernels: deterministic kernels, one folder per op: the CPU version (`cpu.rs`), the
//! GPU kernel (`gpu.rs`, CubeCL), their launches (`launch.rs`) and the autodiff (`backward.rs`)
//! side by side. `ops` lists the ops (and is the API models call); `seam` is what every op
//! plugs into burn with.
//!
//! The contract: for every op here, the CPU version and the GPU kernel produce the same bits, on
//! every thread count, workgroup count and device whose arithmetic the start-up probe accepts
//! (see `profile`). Each op's module doc states its exact arithmetic order. The rules that make
//! it so (`arith`'s module doc has the details):
//!
//! - One unit of work (a thread on the GPU, a loop iteration on the CPU) owns one output value
//!   and walks its inputs in an order fixed by the output's logical index. No split-K, no atomics,
//!   no shared-memory trees, no subgroup ops; threads split only *between* outputs.
//! - A device is assumed to give only IEEE round-to-nearest `+ - *`, comparisons, `floor`, bit
//!   casts and small int<->float conversions. `exp`/`log`/reciprocal/square root are built from
//!   these (`arith`); no `/`, `sqrt` or transcendental builtins (real GPUs round those their own
//!   way), no reliance on gradual underflow.
//! - Subnormals have one defined behaviour: every value read, every rounded intermediate and
//!   every value written is flushed (`|x| <= MIN_POSITIVE` -> signed zero) in software, so a
//!   device that flushes in hardware and one that does not compute the same bits.
//! - Every product that feeds an addition is rounded before the addition. Rust never contracts
//!   `a * b + c`. CubeCL's optimiser rewrites `a * b + c` into `fma(a, b, c)` (which real GPUs
//!   fuse), so GPU kernels pass every rounded value through `arith::gpu::pin`, an integer barrier
//!   on a runtime value that no compiler can see through (it also does the flush).
//! - Every kernel is f32 and allocates contiguous outputs; inputs are read through strides or
//!   made contiguous by a copy kernel (no arithmetic).

// burn's NdArray backend is deprecated upstream in favour of Flex; every op's
// `#[backend_extension]` and its CPU `launch.rs` name it.
#![allow(deprecated)]

pub mod arith;
pub mod attention;
pub mod bias;
pub mod bmm;
pub mod causal;
pub mod dropout;
pub mod embedding;
pub mod ftz;
pub mod heap;
pub mod im2col;
pub mod layernorm;
pub mod matmul;
pub mod mul;
#[cfg(test)]
pub mod negate;
pub mod ops;
pub mod optim;
pub mod pool;
pub mod probe;
pub mod profile;
pub mod readback;
pub mod reduce;
mod rowgroup;
mod seam;
mod simd;
pub mod softmax;
pub mod unary;
pub mod xent;

pub use ops::{
    DetOps, add_bias, cross_entropy_nll, dropout_mask, matmul as det_matmul, sum_all, sum_rows,
};
