//! `matmul`: `[m, k] x [k, n] -> [m, n]`, each output accumulated strictly in k order.
//!
//! Order (both sides, every backend): `acc = 0.0; for p in 0..k { acc = round(round(a[i,p] *
//! b[p,j]) + acc) }; out[i,j] = acc`. No split-K, no blocking along k, no tree.
//!
//! - CPU (`cpu.rs`): threads split over blocks of 4 output rows, SIMD lanes over output columns
//!   (each lane is one output's own accumulator), so thread count and vector width cannot change
//!   the order. The `Fused` profile replaces the multiply-add with `mul_add` (one rounding), to
//!   match a device that fuses.
//! - GPU (`gpu.rs`): one thread per output element, reading both inputs through their strides
//!   (transposed views in backward cost no copy); the product passes through `mad_nc`.
//!
//! Backward (registered with burn's autodiff in `ops`): `dA = G · Bᵀ`, `dB = Aᵀ · G`, both with
//! this same kernel, so gradients keep the same fixed order.

pub mod cpu;
pub mod gpu;
