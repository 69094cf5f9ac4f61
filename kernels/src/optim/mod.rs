//! `optim`: fused optimizer updates, one pass per parameter tensor, element-wise (no reductions).
//!
//! Per element, in this order on both sides, every product rounded before it is added (`mad`
//! below is `round(round(a*b) + c)`), mirroring the stock tensor-op path in
//! `lockstep_train::optim` operation for operation, so both give the same bits:
//!
//! ```text
//! SGD     g1 = decay ? mad(w, wd, g) : g
//!         buf = mad(buf, mu, g1)
//!         w  = w - buf*lr
//! Adam(W) g1 = coupled ? mad(w, wd, g) : g                      (Adam's L2 term)
//!         m  = m*b1 + g1*(1-b1)                                  (two rounded products, one add)
//!         v  = v*b2 + (g1*g1)*(1-b2)
//!         u  = (m*c1) / (sqrt(v*c2) + eps)                       c1 = 1/(1-b1^t), c2 = 1/(1-b2^t)
//!         w  = decoupled ? w - w*(lr*wd) : w                     (AdamW's decay, applied first)
//!         w  = w - u*lr
//! ```
//!
//! The scalars (`1-b1`, `c1`, `lr*wd`, ...) are computed on the host exactly as the stock path
//! does (f64 then one rounding to f32, or one f32 product). `sqrt` and `/` are the only operations
//! outside `+ - *`: they are IEEE correctly rounded on the CPU, and the device must be too — the
//! arithmetic profile (`profile`) probes both and records the answer in the run's manifest.
//! CPU: threads over fixed chunks of elements; GPU: one thread per element.

pub mod cpu;
pub mod gpu;

/// Weight-decay mode (the GPU kernels take it as a comptime code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decay {
    /// No decay.
    None = 0,
    /// `g += wd * w` before the update (SGD, Adam).
    Coupled = 1,
    /// `w -= lr * wd * w` before the update (AdamW).
    Decoupled = 2,
}

/// SGD hyper-parameters as the kernels read them: `[lr, wd, mu]`.
pub type SgdHyper = [f32; 3];

/// Adam hyper-parameters as the kernels read them:
/// `[lr, wd, b1, b2, 1-b1, 1-b2, c1, c2, eps, lr*wd]`.
pub type AdamHyper = [f32; 10];
