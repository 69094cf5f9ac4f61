//! The arithmetic profile: what a device does with `a * b + c`, `/`, `sqrt` and subnormals,
//! probed at start-up and recorded in the run manifest.
//!
//! - `native_mad`: a plainly written `a * b + c` kernel on inputs where one rounding and two
//!   roundings differ (`x*x - 1` with `x = 1 + 2^-12`): `fused` or `unfused`. CubeCL rewrites
//!   such code into `fma`, so this is what a real GPU driver does with `fma`; lavapipe is
//!   `unfused`, NVIDIA/AMD hardware `fused`. Stock burn ops are exposed to this.
//! - `lockstep_mad`: the same inputs through lockstep's matmul, which rounds every product
//!   (`arith::gpu::pin`): must be `unfused` everywhere — if it is not, lockstep's bitwise promise
//!   does not hold on this device, and the run says so.
//! - `lockstep_fma`: lockstep's matmul in the `fma` profile (`matmul_in(.., true)`) against a
//!   plain loop of `f32::mul_add` (IEEE's single rounding, flushed as `arith` says) on the same
//!   inputs: one pair where one and two roundings differ and 64 seeded rows of 97 terms.
//!   `fused` when every output is bitwise that loop's, `unfused` when the pair came out with two
//!   roundings (the device's `fma` is a multiply then an add: Vulkan only asks its precision to be
//!   that of the two), `wrong` otherwise. A `train.arith = "fma"` run needs `fused`; there is no
//!   fallback (`lockstep_train::backend::Backend::require_arith` refuses the job).
//! - `div_exact` / `sqrt_exact`: stock `/` and `sqrt` equal IEEE correctly rounded results on
//!   4096 seeded inputs. Information only: lockstep's kernels use neither (NVIDIA's Vulkan driver
//!   was measured `false` for both); the stock Adam update does.
//! - `ftz`: what stock arithmetic does with subnormals — `off` (gradual underflow, the CPU),
//!   `results` (a subnormal product becomes 0), `inputs` (a subnormal operand reads as 0) or
//!   `results+inputs` (NVIDIA's Vulkan driver; the CPU under `LOCKSTEP_CPU_FTZ=1`). Information
//!   only for lockstep's kernels, which flush in software (`arith`).
//! - `optim_exact`: lockstep's fused Adam kernel gives the CPU loop's bits on the same inputs,
//!   including ones whose intermediates underflow — i.e. this device's `+ - *` and the `pin`
//!   barriers behave as `arith` assumes.
//!
//! `lockstep_bitwise()` (lockstep's kernels give the CPU's bits here) needs `lockstep_mad`
//! unfused and `optim_exact` (and an `fma` run also `lockstep_fma` fused): a device may fuse
//! plain code, flush subnormals and approximate `sqrt`/`/` and still pass. Training with the lockstep kernels on a device without it warns
//! loudly; `resume` refuses a device whose deciding facts differ from the recorded ones
//! (`deciding_fact`), `verify` likewise for stock-kernel runs.

use crate::arith::flush;
use crate::ops;
use crate::optim::Decay;
use burn::tensor::{Device, Tensor, TensorData};
use lockstep_core::SeedStream;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArithmeticProfile {
    pub native_mad: &'static str,
    pub lockstep_mad: &'static str,
    pub lockstep_fma: &'static str,
    pub div_exact: bool,
    pub sqrt_exact: bool,
    pub ftz: &'static str,
    pub optim_exact: bool,
}

/// Whether the manifest fact `key` decides the bits of a run with lockstep's kernels
/// (`lockstep_kernels`, in the `fma` profile when `fused`) or with burn's stock ops: every
/// `arith.*` fact matters to stock ops; only `lockstep_mad` and `optim_exact` to lockstep's,
/// and `lockstep_fma` too in the `fma` profile.
pub fn deciding_fact(key: &str, lockstep_kernels: bool, fused: bool) -> bool {
    if lockstep_kernels {
        key == "arith.lockstep_mad"
            || key == "arith.optim_exact"
            || (fused && key == "arith.lockstep_fma")
    } else {
        key.starts_with("arith.")
    }
}

impl ArithmeticProfile {
    pub fn facts(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("arith.native_mad".to_string(), self.native_mad.to_string()),
            (
                "arith.lockstep_mad".to_string(),
                self.lockstep_mad.to_string(),
            ),
            (
                "arith.lockstep_fma".to_string(),
                self.lockstep_fma.to_string(),
            ),
            ("arith.div_exact".to_string(), self.div_exact.to_string()),
            ("arith.sqrt_exact".to_string(), self.sqrt_exact.to_string()),
            ("arith.ftz".to_string(), self.ftz.to_string()),
            (
                "arith.optim_exact".to_string(),
                self.optim_exact.to_string(),
            ),
        ])
    }

    /// Whether lockstep's kernels give the CPU's bits on this device.
    pub fn lockstep_bitwise(&self) -> bool {
        self.lockstep_mad == "unfused" && self.optim_exact
    }
}

fn t1(v: Vec<f32>, device: &Device) -> Tensor<1> {
    let n = v.len();
    Tensor::<1>::from_data(TensorData::new(v, [n]), device)
}

fn host(t: Tensor<1>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().expect("f32 read-back")
}

/// Probe `device` (plain, not autodiff).
pub fn probe(device: &Device) -> ArithmeticProfile {
    let x = 1.0 + f32::EPSILON * 2048.0;
    let native = host(ops::probe_mad(
        t1(vec![x], device),
        t1(vec![x], device),
        t1(vec![-1.0], device),
    ))[0];
    let unfused = x * x + -1.0;
    let native_mad = if native.to_bits() == unfused.to_bits() {
        "unfused"
    } else {
        "fused"
    };
    let a = Tensor::<2>::from_data(TensorData::new(vec![-1.0f32, x], [1, 2]), device);
    let b = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, x], [2, 1]), device);
    let ours = ops::matmul(a, b).try_into_vec_as::<f32>().expect("f32")[0];
    let lockstep_mad = if ours.to_bits() == (x * x + -1.0f32).to_bits() {
        "unfused"
    } else {
        "fused"
    };
    let lockstep_fma = probe_fma(device, x);
    let mut s = SeedStream::new(0, lockstep_core::streams::PROFILE_PROBE);
    let num: Vec<f32> = (0..4096)
        .map(|_| f32::from_bits(0x3f80_0000 | (s.next_u32() >> 9)) * 3.0 - 1.5)
        .collect();
    let den: Vec<f32> = (0..4096)
        .map(|_| f32::from_bits(0x3f80_0000 | (s.next_u32() >> 9)) + 0.25)
        .collect();
    let div = host(t1(num.clone(), device) / t1(den.clone(), device));
    let div_exact = div
        .iter()
        .zip(num.iter().zip(&den))
        .all(|(g, (n, d))| g.to_bits() == (n / d).to_bits());
    let sq = host(t1(den.clone(), device).sqrt());
    let sqrt_exact = sq
        .iter()
        .zip(&den)
        .all(|(g, d)| g.to_bits() == d.sqrt().to_bits());
    // A subnormal result (2^-70 * 2^-70 = 2^-140), and a subnormal operand (2^-140 * 2^20).
    let tiny = 2f32.powi(-70);
    let sub = f32::from_bits(0x0000_0400); // 2^-139
    let ftz_results = host(t1(vec![tiny], device) * t1(vec![tiny], device))[0] == 0.0;
    let ftz_inputs = host(t1(vec![sub], device) * t1(vec![2f32.powi(20)], device))[0] == 0.0;
    let ftz = match (ftz_results, ftz_inputs) {
        (false, false) => "off",
        (true, false) => "results",
        (false, true) => "inputs",
        (true, true) => "results+inputs",
    };
    // m = num, v = den, b1 = b2 = 1, the rest 0 or 1: w' = -(num * recip(sqrt(den))) through
    // the kernel; then 512 more elements whose updates land around MIN_POSITIVE (m ~ 2^-100,
    // v ~ 2^50: u ~ 2^-125), some flushed, some not, and a few subnormal inputs.
    let (mut num, mut den) = (num, den);
    for i in 0..512u32 {
        let frac = f32::from_bits(0x3f80_0000 | (s.next_u32() >> 9));
        let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
        num.push(if i % 61 == 0 {
            f32::from_bits(i + 1)
        } else {
            sign * frac * 2f32.powi(-100 - (i % 3) as i32)
        });
        den.push(frac * 2f32.powi(50));
    }
    let hp = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0];
    let zeros = vec![0f32; num.len()];
    let (want, _, _) = crate::optim::cpu::adam(&zeros, &zeros, &num, &den, hp, Decay::None);
    let (got, _, _) = ops::adam_step(
        t1(zeros.clone(), device),
        t1(zeros, device),
        t1(num, device),
        t1(den, device),
        hp,
        Decay::None,
    );
    let optim_exact = host(got)
        .iter()
        .zip(&want)
        .all(|(g, w)| g.to_bits() == w.to_bits());
    ArithmeticProfile {
        native_mad,
        lockstep_mad,
        lockstep_fma,
        div_exact,
        sqrt_exact,
        ftz,
        optim_exact,
    }
}

/// `arith.lockstep_fma` (module doc): lockstep's matmul in the `fma` profile against a plain
/// `mul_add` loop. `x = 1 + 2^-12`: `-1 + x*x` keeps `2^-24` only when fused.
fn probe_fma(device: &Device, x: f32) -> &'static str {
    let (m, k) = (64, 97);
    let mut s = SeedStream::new(0, lockstep_core::streams::PROFILE_FMA_PROBE);
    // Row 0: `-1*1` then `x*x` added to it (`[-1, x, 0, ...] . [1, x, ...]`); row 1 zeros.
    let mut a: Vec<f32> = vec![-1.0, x];
    a.resize(2 * k, 0.0);
    let mut b: Vec<f32> = vec![1.0, x];
    b.resize(k, 0.0);
    for _ in 0..m * k {
        a.push(s.uniform_range(-2.0, 2.0));
    }
    // Some products near the flush threshold, so the probe sees where the device rounds them.
    for (i, v) in a.iter_mut().enumerate().skip(2 * k) {
        if i % 13 == 0 {
            *v *= 2f32.powi(-60);
        }
    }
    for (i, v) in b.iter_mut().enumerate().skip(2) {
        *v = s.uniform_range(-2.0, 2.0) * if i % 11 == 0 { 2f32.powi(-63) } else { 1.0 };
    }
    let rows = a.len() / k;
    let got = crate::ops::matmul_in(
        Tensor::<2>::from_data(TensorData::new(a.clone(), [rows, k]), device),
        Tensor::<2>::from_data(TensorData::new(b.clone(), [k, 1]), device),
        true,
    )
    .try_into_vec_as::<f32>()
    .expect("f32 read-back");
    let want: Vec<f32> = (0..rows)
        .map(|r| {
            (0..k).fold(0.0f32, |acc, p| {
                let (u, v) = (flush(a[r * k + p]), flush(b[p]));
                flush(u.mul_add(v, acc))
            })
        })
        .collect();
    if got
        .iter()
        .zip(&want)
        .all(|(g, w)| g.to_bits() == w.to_bits())
    {
        "fused"
    } else if got[0].to_bits() == (x * x + -1.0f32).to_bits() {
        "unfused"
    } else {
        "wrong"
    }
}
