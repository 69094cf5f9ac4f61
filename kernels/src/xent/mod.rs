//! `xent`: softmax cross-entropy, fused forward and backward, from `arith`'s exact pieces.
//!
//! Per row `i` of `logits` `[m, c]` with `targets` `[m, c]` (one-hot or soft labels), in this
//! order on both sides:
//!
//! ```text
//! mx  = x[0]; for j in 1..c: if x[j] > mx { mx = x[j] }
//! s   = 0;  for j in 0..c: s = s + exp_fixed(x[j] - mx)
//! lse = log_fixed(s) + mx
//! dot = 0;  for j in 0..c: dot = mad(x[j], t[j], dot)
//! nll[i] = lse - dot                                        (forward, [m, 1])
//! r   = recip_fixed(s)
//! d[i, j] = mad(exp_fixed(x[j] - mx), r, -t[j]) * g[i]      (backward, [m, c])
//! ```
//!
//! `mad(a, b, c)` = fl(fl(a*b) + c); every read, product, sum and difference is flushed (`fl`,
//! `arith`'s subnormal rule) on both sides. CPU: threads over rows; GPU: one thread per row.
//! Dividing by the batch size and summing rows happen outside (`reduce::sum_rows`).

pub mod cpu;
pub mod gpu;
