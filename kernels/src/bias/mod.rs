//! `bias`: `y[i, j] = fl(fl(x[i, j]) + fl(b[j]))` for `x` `[m, n]` and `b` `[1, n]` — one rounding,
//! flushed like every lockstep value (`arith`'s subnormal rule), so a layer's output (and the
//! logits recorded at the end of training) hold the same bits on every device.
//!
//! No reduction forward; the backward is `dx = dy` (no arithmetic) and `db = sum_rows(dy)`
//! (`reduce`'s order). CPU: threads over rows; GPU: one thread per output element.

pub mod cpu;
pub mod gpu;
