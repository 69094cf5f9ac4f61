//! The kernel seam: every lockstep op, one line each in `ops!` below.
//!
//! An op is one folder, `kernels/src/<op>/`, holding everything about it:
//!
//! - `mod.rs`: the exact arithmetic order (`//!`), the op's backend extension trait (`XOps`,
//!   `#[backend_extension(NdArray, Flex, Cube, Autodiff)]`, which generates burn's `Dispatch`
//!   routing) and its tensor-level functions, which models call on any device, with or without
//!   autodiff;
//! - `cpu.rs`: the CPU loops (over `[f32]`); `gpu.rs`: the CubeCL kernels;
//! - `launch.rs`: the trait for ndarray and flex (`seam::host::cpu_backends!`: read, loop,
//!   upload) and for every CubeCL runtime (launch the kernel);
//! - `backward.rs`: the trait for `Autodiff<B, C>` (`seam::autodiff`'s macros), the backward
//!   built from the op's own kernels.
//!
//! This file names the ops and nothing else: `ops!` re-exports each op's trait and tensor
//! functions here (the public `lockstep_kernels::ops` API) and makes `DetOps`, every op's trait
//! at once. Op folders never use this file (they use `seam`, `arith` and the ops they are built
//! from), so no module depends on one that depends on it.
//!
//! # Adding an op
//!
//! 1. A folder `kernels/src/<op>/` as above (`negate/`, compiled for the unit tests only, is the
//!    smallest complete one), declared with `pub mod <op>;` in `lib.rs` like every module.
//! 2. One line in `ops!` below: `<op>: <Op>Ops { <tensor functions> },`.
//! 3. One row in `lockstep_core::tolerance::TOLERANCES` per kernel set (`Bitwise` for lockstep).
//! 4. Its tests: the CPU loop against an independent reference in `cpu.rs`, CPU against GPU bits
//!    in `tests/suite/kernels_bitwise.rs`, against burn's stock op in `conformance`.

use burn::backend::Backend;

/// `op: Trait { tensor functions },` per op; a line may start with `#[cfg(...)]`. Such an op
/// stays out of `DetOps` (a bound cannot carry a `cfg`).
macro_rules! ops {
    ($($(#[cfg($($cfg:tt)*)])? $op:ident: $ops:ident { $($api:ident),* },)*) => {
        $($(#[cfg($($cfg)*)])? pub use crate::$op::{$ops, $($api),*};)*
        ops!(@all [] $($(#[cfg($($cfg)*)])? $ops)*);
    };
    (@all [$($all:ident)*] #[cfg $cfg:tt] $skip:ident $($rest:tt)*) => {
        ops!(@all [$($all)*] $($rest)*);
    };
    (@all [$($all:ident)*] $ops:ident $($rest:tt)*) => { ops!(@all [$($all)* $ops] $($rest)*); };
    (@all [$($all:ident)*]) => {
        /// A backend with every lockstep op (ndarray, flex, every CubeCL runtime, and autodiff
        /// over any of them).
        pub trait DetOps: Backend $(+ $all)* {}
        impl<B: Backend $(+ $all)*> DetOps for B {}
    };
}

ops! {
    matmul: MatmulOps { matmul, matmul_in },
    reduce: ReduceOps { sum_rows, sum_all },
    bias: BiasOps { add_bias },
    mul: MulOps { mul },
    xent: XentOps { cross_entropy_nll },
    dropout: DropoutOps { dropout_mask },
    unary: UnaryOps { exp, log, sigmoid, tanh, gelu },
    pool: PoolOps { max_pool2d, avg_pool2d },
    softmax: SoftmaxOps { softmax, log_softmax },
    optim: OptimOps { sgd_step, adam_step },
    im2col: Im2colOps { im2col },
    probe: ProbeOps { probe_mad },
    bmm: BmmOps { bmm, bmm_in },
    embedding: EmbeddingOps { embedding },
    layernorm: LayerNormOps { layer_norm },
    causal: CausalOps { causal_softmax },
    attention: AttentionOps { attention },
    #[cfg(test)] negate: NegateOps { negate },
}
