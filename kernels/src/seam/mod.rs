//! What every op folder plugs into burn with (`ops` is the list of the ops themselves).
//!
//! - `host`: the CPU backends (ndarray, flex): a tensor's values as a row-major `[f32]` (no copy
//!   where the storage already is one), results uploaded back, and `cpu_backends!`, which
//!   implements an op's trait for both CPU backends from one body.
//! - `cube`: launching CubeCL kernels (wgpu and every other cube runtime): the f32 check,
//!   contiguous inputs, output allocation, grid size, and the blocked accumulation that keeps a
//!   long loop under lavapipe's cap.
//! - `autodiff`: the macros that write an op's `Autodiff<B, C>` methods: `unary_autodiff!` (one
//!   tracked input), `binary_autodiff!` (two tracked inputs, both kept) and `no_grad!` (no
//!   backward: the method runs on the inner backend).
//!
//! Nothing here names an op: every op folder may use it, and it uses none of them.

pub(crate) mod autodiff;
pub(crate) mod cube;
pub(crate) mod host;
