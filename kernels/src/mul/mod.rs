//! `mul`: the element-wise product of two same-shaped tensors, `y = fl(fl(a) * fl(b))` — one
//! rounding, flushed (`arith`'s subnormal rule). Dropout's mask multiply and the element-wise
//! backward passes (sigmoid, tanh, GELU) use it, so those products hold the same bits on a
//! device that flushes subnormals in hardware and on one that does not.
//!
//! Backward: `da = mul(g, b)`, `db = mul(g, a)`. No reduction. CPU: threads over chunks; GPU:
//! one thread per element.

pub mod cpu;
pub mod gpu;
