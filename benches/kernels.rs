//! Benchmarks, each printing a ratio against a named baseline measured in the same run
//! (A/B interleaved, medians; this machine is noisy, ±20% between identical runs):
//!
//! - `matmul/<shape>`: lockstep's fixed-order CPU matmul (both profiles) vs burn-ndarray's stock matmul
//!   (matrixmultiply) and burn-flex's (gemm), at the Fashion-MNIST MLP's training shapes.
//! - `conv2d`: lockstep's im2col + fixed-order matmul vs burn's stock conv2d, forward, at the
//!   Fashion-MNIST CNN's two conv layers, on burn-ndarray and burn-flex.
//! - `train_step/<MLP|CNN>/<backend>`: one full training step (batch 128: forward, backward,
//!   optimizer) of the shipped `fashion_mlp` and `fashion_cnn` models with `kernels = "lockstep"`
//!   vs `kernels = "burn"` on the same backend.
//! - `wgpu (lavapipe)`: correctness only (a software driver's speed means nothing): three steps
//!   of each model from the same init on ndarray and on wgpu, how many parameters differ (0 for
//!   lockstep kernels) and the ms/step.
//! - `train_step MLP 784-2048-2048-10 b512`: the large MLP's step on flex, lockstep's kernels in
//!   the `unfused` and `fma` arithmetic profiles vs burn's stock ops.
//! - `wgpu matmul`: lockstep's tiled GPU matmul (both profiles; `fma` is only meaningful where
//!   the adapter's fma fuses) vs burn-wgpu's stock matmul on the default adapter, TFLOP/s.
//! - `peak`: this machine's FP32 multiply+add peak (a register-resident microbenchmark), and the
//!   lockstep matmul's GFLOP/s as a fraction of it.
//!
//! Run: `cargo bench --bench kernels` (add `-- --quick` for a shorter run).

#![allow(clippy::unwrap_used)]

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use criterion::Criterion;
use lockstep_core::SeedStream;
use lockstep_core::config::{Arith, KernelSet, load_config};
use lockstep_train::model::{Model, conv2d_im2col, cross_entropy, one_hot, upload};
use std::hint::black_box;
use std::time::Instant;

fn seeded(n: usize, name: &str) -> Vec<f32> {
    let mut s = SeedStream::new(1, name);
    (0..n).map(|_| s.uniform_range(-1.0, 1.0)).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Interleaved A/B timing: returns (median A, median B) seconds per call.
fn ab(reps: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    a();
    b();
    let (mut ta, mut tb) = (vec![], vec![]);
    for _ in 0..reps {
        let t = Instant::now();
        a();
        ta.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        b();
        tb.push(t.elapsed().as_secs_f64());
    }
    (median(ta), median(tb))
}

const SHAPES: &[(&str, usize, usize, usize)] = &[
    ("fwd 128x784x256", 128, 784, 256),
    ("fwd 128x256x128", 128, 256, 128),
    ("dW 784x128x256", 784, 128, 256),
    ("dX 128x256x784", 128, 256, 784),
];

fn t2(v: &[f32], s: [usize; 2], d: &Device) -> Tensor<2> {
    Tensor::<2>::from_data(TensorData::new(v.to_vec(), s), d)
}

fn train_step(
    model: &Model,
    params: &mut [Tensor<1>],
    slots: &mut [Vec<Tensor<1>>],
    x: &[f32],
    y: &[u32],
    d: &Device,
    cfg: &lockstep_core::config::OptimizerConfig,
) {
    let ad = d.clone().autodiff();
    let leaves: Vec<Tensor<1>> = params
        .iter()
        .map(|p| Tensor::from_inner(p.clone()).require_grad())
        .collect();
    let batch = y.len();
    let logits = model.forward(&leaves, t2(x, [batch, 784], &ad), None);
    let loss = cross_entropy(model.kernels, logits, t2(&one_hot(y, 10), [batch, 10], &ad));
    let grads = loss.backward();
    for i in 0..params.len() {
        let g = leaves[i].grad(&grads).expect("grad");
        params[i] = lockstep_train::optim::update(
            cfg,
            model.kernels,
            1e-3,
            1,
            params[i].clone(),
            g,
            &mut slots[i],
        );
    }
    let _ = params[0].clone().try_into_vec_as::<f32>();
}

/// A model with its initial parameters and zeroed optimizer slots on `dev`.
fn setup(
    cfg: &lockstep_core::config::Config,
    ks: KernelSet,
    dev: &Device,
) -> (Model, Vec<Tensor<1>>, Vec<Vec<Tensor<1>>>) {
    let model = Model::new(&cfg.model, ks, [1, 28, 28], 10);
    let params: Vec<Tensor<1>> = model
        .init_params(cfg.seed)
        .into_iter()
        .map(|v| upload(v, dev))
        .collect();
    let slots: Vec<Vec<Tensor<1>>> = model
        .specs
        .iter()
        .map(|s| (0..2).map(|_| upload(vec![0.0; s.numel()], dev)).collect())
        .collect();
    (model, params, slots)
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().expect("f32")
}

fn main() {
    // As `lockstep train` does: this thread becomes worker 0 of the rayon pool, so the parallel
    // loops of both sides start here rather than being handed to a sleeping pool thread.
    lockstep_train::backend::configure_threads(0).expect("sizing the thread pool");
    let mut c = Criterion::default().configure_from_args().sample_size(10);
    #[allow(deprecated)]
    let (nd, fx) = (Device::ndarray(), Device::flex());
    let mut summary = Vec::new();
    for &(name, m, k, n) in SHAPES {
        let (a, b) = (seeded(m * k, "a"), seeded(k * n, "b"));
        let (ta, tb) = (t2(&a, [m, k], &nd), t2(&b, [k, n], &nd));
        let (fa, fb) = (t2(&a, [m, k], &fx), t2(&b, [k, n], &fx));
        let mut g = c.benchmark_group(format!("matmul/{name}"));
        g.bench_function("lockstep-cpu", |bch| {
            bch.iter(|| {
                black_box(lockstep_kernels::matmul::cpu::matmul(
                    &a, &b, m, k, n, false,
                ))
            })
        });
        g.bench_function("burn-ndarray", |bch| {
            bch.iter(|| black_box(ta.clone().matmul(tb.clone())))
        });
        g.finish();
        let (tl, tn) = ab(
            30,
            || {
                drop(black_box(lockstep_kernels::matmul::cpu::matmul(
                    &a, &b, m, k, n, false,
                )))
            },
            || drop(black_box(ta.clone().matmul(tb.clone()))),
        );
        let (tfma, tf) = ab(
            30,
            || {
                drop(black_box(lockstep_kernels::matmul::cpu::matmul(
                    &a, &b, m, k, n, true,
                )))
            },
            || drop(black_box(fa.clone().matmul(fb.clone()))),
        );
        let flops = 2.0 * (m * k * n) as f64;
        summary.push(format!("matmul {name:<18} lockstep unfused {:6.1} GFLOP/s, fma {:6.1} GFLOP/s | unfused vs burn-ndarray {:.2}x, vs burn-flex {:.2}x | fma vs burn-flex {:.2}x", flops / tl / 1e9, flops / tfma / 1e9, tn / tl, tf / tl, tf / tfma));
    }
    // conv2d forward at the Fashion-MNIST CNN's two layers (same padding, k = 3): lockstep's
    // im2col + fixed-order matmul vs burn's stock conv2d.
    for (name, [n, ci, h, co]) in [
        ("conv1 128x1x28x28->8", [128, 1, 28, 8]),
        ("conv2 128x8x14x14->16", [128, 8, 14, 16]),
    ] {
        let xv = seeded(n * ci * h * h, "conv-x");
        let (wv, bv) = (seeded(co * ci * 9, "conv-w"), seeded(co, "conv-b"));
        let mut line = format!("conv2d {name:<22}");
        for (bname, dev) in [("ndarray", nd.clone()), ("flex", fx.clone())] {
            let x = Tensor::<4>::from_data(TensorData::new(xv.clone(), [n, ci, h, h]), &dev);
            let w = Tensor::<4>::from_data(TensorData::new(wv.clone(), [co, ci, 3, 3]), &dev);
            let b = Tensor::<1>::from_data(TensorData::new(bv.clone(), [co]), &dev);
            let (tl, tb) = ab(
                15,
                || drop(host(conv2d_im2col(x.clone(), w.clone(), b.clone(), 1))),
                || {
                    drop(host(conv2d(
                        x.clone(),
                        w.clone(),
                        Some(b.clone()),
                        ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
                    )))
                },
            );
            line += &format!(
                " | {bname}: lockstep {:6.2} ms, burn {:6.2} ms, {:.2}x",
                tl * 1e3,
                tb * 1e3,
                tb / tl
            );
        }
        summary.push(line);
    }
    // One full training step (forward, backward, Adam), batch 128, of the shipped Fashion-MNIST
    // MLP and CNN: lockstep kernels vs stock ops on the same backend.
    let (x, y): (Vec<f32>, Vec<u32>) = (seeded(128 * 784, "x"), (0..128).map(|i| i % 10).collect());
    for (mname, file, reps) in [
        ("MLP", "fashion_mlp.toml", 15),
        ("CNN", "fashion_cnn.toml", 5),
    ] {
        let cfg = load_config(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("configs")
                .join(file),
        )
        .expect("config");
        for (bname, dev) in [("ndarray", nd.clone()), ("flex", fx.clone())] {
            let (ml, mut pl, mut sl) = setup(&cfg, KernelSet::Lockstep, &dev);
            let (mb, mut pb, mut sb) = setup(&cfg, KernelSet::Burn, &dev);
            let (tl, tb) = ab(
                reps,
                || train_step(&ml, &mut pl, &mut sl, &x, &y, &dev, &cfg.optimizer),
                || train_step(&mb, &mut pb, &mut sb, &x, &y, &dev, &cfg.optimizer),
            );
            let mut g = c.benchmark_group(format!("train_step/{mname}/{bname}"));
            g.bench_function("lockstep", |bch| {
                bch.iter(|| train_step(&ml, &mut pl, &mut sl, &x, &y, &dev, &cfg.optimizer))
            });
            g.bench_function("burn", |bch| {
                bch.iter(|| train_step(&mb, &mut pb, &mut sb, &x, &y, &dev, &cfg.optimizer))
            });
            g.finish();
            summary.push(format!("train_step {mname} b128 on {bname:<8} lockstep {:7.2} ms | burn stock {:7.2} ms | ratio (burn/lockstep) {:.2}x", tl * 1e3, tb * 1e3, tb / tl));
        }
        // GPU (lavapipe, a software driver): correctness, not speed. Three steps from the same
        // init on ndarray and on wgpu: lockstep kernels must give the same bits.
        if lockstep_train::backend::wgpu_available() {
            let gpu = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
            let mut line = format!("wgpu (lavapipe) {mname} 3 steps:");
            for ks in [KernelSet::Lockstep, KernelSet::Burn] {
                let run = |dev: &Device| {
                    let (m, mut p, mut sl) = setup(&cfg, ks, dev);
                    let t = Instant::now();
                    for _ in 0..3 {
                        train_step(&m, &mut p, &mut sl, &x, &y, dev, &cfg.optimizer);
                    }
                    let secs = t.elapsed().as_secs_f64() / 3.0;
                    let v: Vec<f32> = p.into_iter().flat_map(host).collect();
                    (v, secs)
                };
                let ((cpu, _), (gv, secs)) = (run(&nd), run(&gpu));
                let differ = cpu
                    .iter()
                    .zip(&gv)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                let max_d = cpu
                    .iter()
                    .zip(&gv)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                line += &format!(
                    " | {ks:?}: {:.0} ms/step, {differ} of {} params differ from ndarray (max |d| {max_d:.1e})",
                    secs * 1e3,
                    cpu.len()
                );
            }
            summary.push(line);
        } else {
            summary.push(format!("wgpu {mname}: skipped (no Vulkan adapter)"));
        }
    }
    // The large MLP (784-2048-2048-10, batch 512, Adam) on flex: lockstep's kernels in both
    // arithmetic profiles against burn's stock ops (the fastest configuration of the same
    // engine on this device, nondeterministic across backends) in one interleaved run.
    {
        let mut cfg = load_config(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("configs")
                .join("fashion_mlp.toml"),
        )
        .expect("config");
        cfg.model.hidden = vec![2048, 2048];
        let (x, y): (Vec<f32>, Vec<u32>) = (
            seeded(512 * 784, "x512"),
            (0..512).map(|i| i % 10).collect(),
        );
        let dev = fx.clone();
        let (mu, mut pu, mut su) = setup(&cfg, KernelSet::Lockstep, &dev);
        let (mut mf, mut pf, mut sf) = setup(&cfg, KernelSet::Lockstep, &dev);
        mf.arith = Arith::Fma;
        let (mb, mut pb, mut sb) = setup(&cfg, KernelSet::Burn, &dev);
        let (tu, tb) = ab(
            8,
            || train_step(&mu, &mut pu, &mut su, &x, &y, &dev, &cfg.optimizer),
            || train_step(&mb, &mut pb, &mut sb, &x, &y, &dev, &cfg.optimizer),
        );
        let (tf, tb2) = ab(
            8,
            || train_step(&mf, &mut pf, &mut sf, &x, &y, &dev, &cfg.optimizer),
            || train_step(&mb, &mut pb, &mut sb, &x, &y, &dev, &cfg.optimizer),
        );
        let flops = 6.0 * 512.0 * (784.0 * 2048.0 + 2048.0 * 2048.0 + 2048.0 * 10.0);
        let tb = tb.min(tb2);
        summary.push(format!("train_step MLP 784-2048-2048-10 b512 on flex: lockstep unfused {:.2} steps/s ({:.0} GFLOP/s), fma {:.2} steps/s ({:.0} GFLOP/s), burn stock {:.2} steps/s | lockstep/burn: unfused {:.2}x, fma {:.2}x", 1.0 / tu, flops / tu / 1e9, 1.0 / tf, flops / tf / 1e9, 1.0 / tb, tb / tu, tb / tf));
    }
    // GPU matmul: lockstep's tiled fixed-order kernel vs burn-wgpu's stock matmul on the default
    // adapter (a software driver such as lavapipe: its speed says nothing about a GPU; only the
    // ratio to burn's kernels on the same adapter is printed for it). 4096^3 on a GPU, 512^3 on a
    // CPU adapter.
    if lockstep_train::backend::wgpu_available() {
        let adapter = lockstep_train::backend::adapters()
            .into_iter()
            .next()
            .map(|a| format!("{} ({})", a.name, a.device_type))
            .unwrap_or_else(|| "?".into());
        let software = adapter.contains("Cpu") || adapter.contains("llvmpipe");
        let size = if software { 512 } else { 4096 };
        let gpu = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
        let (a, b) = (seeded(size * size, "ga"), seeded(size * size, "gb"));
        let (ta, tb) = (t2(&a, [size, size], &gpu), t2(&b, [size, size], &gpu));
        let sync = |t: Tensor<2>| drop(t.slice([0..1, 0..1]).try_into_vec_as::<f32>());
        let reps = if software { 3 } else { 10 };
        let (tl, tb_) = ab(
            reps,
            || sync(lockstep_kernels::ops::matmul(ta.clone(), tb.clone())),
            || sync(ta.clone().matmul(tb.clone())),
        );
        let (tf, _) = ab(
            reps,
            || {
                sync(lockstep_kernels::ops::matmul_in(
                    ta.clone(),
                    tb.clone(),
                    true,
                ))
            },
            || (),
        );
        let flops = 2.0 * (size as f64).powi(3);
        summary.push(format!("wgpu matmul {size}^3 on {adapter}: lockstep tiled unfused {:.3} TFLOP/s, fma {:.3} TFLOP/s, burn stock {:.3} TFLOP/s | lockstep/burn {:.2}x{}", flops / tl / 1e12, flops / tf / 1e12, flops / tb_ / 1e12, tb_ / tl, if software { " (software adapter: only the ratio means anything)" } else { "" }));
    } else {
        summary.push("wgpu matmul: skipped (no Vulkan adapter)".into());
    }
    // FP32 peak: independent register-resident chains per thread, all threads; once as mul-then-add
    // (two roundings, what lockstep's kernels compute) and once as FMA (what matrixmultiply and
    // gemm use), both at the widest vector width this CPU has (the one the lockstep matmul runs).
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // ~0.1 s per thread at the AVX-512 peak: long enough that starting the threads does not count.
    let iters = 50_000_000usize;
    let run_peak = |fused: bool| {
        let t = Instant::now();
        let flops: f64 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| s.spawn(move || peak_chains(iters, fused).1))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        flops / t.elapsed().as_secs_f64() / 1e9
    };
    let (peak, peak_fma) = (run_peak(false), run_peak(true));
    let width = peak_chains(1, false).0;
    // The lockstep matmul's GFLOP/s on one shape (median of `reps`).
    let gflops = |(m, k, n): (usize, usize, usize), fused: bool, reps: usize| {
        let (a, b) = (seeded(m * k, "a"), seeded(k * n, "b"));
        let (t, _) = ab(
            reps,
            || {
                drop(black_box(lockstep_kernels::matmul::cpu::matmul(
                    &a, &b, m, k, n, fused,
                )))
            },
            || (),
        );
        2.0 * (m * k * n) as f64 / t / 1e9
    };
    let (gf, gff) = (
        gflops((128, 784, 256), false, 30),
        gflops((128, 784, 256), true, 30),
    );
    // The large MLP's hidden-layer product, `fma`.
    let (bm, bk, bn) = (512, 2048, 2048);
    let gbig = gflops((bm, bk, bn), true, 10);
    summary.push(format!("peak ({threads} threads, {width}): mul+add {peak:.1} GFLOP/s, FMA {peak_fma:.1} GFLOP/s; lockstep matmul 128x784x256 unfused {gf:.1} GFLOP/s = {:.0}% of the mul+add peak, fma {gff:.1} GFLOP/s = {:.0}% of the FMA peak; {bm}x{bk}x{bn} fma {gbig:.1} GFLOP/s = {:.0}% of the FMA peak", 100.0 * gf / peak, 100.0 * gff / peak_fma, 100.0 * gbig / peak_fma));
    println!("\n=== ratios (A/B interleaved medians, same run) ===");
    for l in summary {
        println!("{l}");
    }
}

/// Register-resident chains at the widest vector width this CPU has (the one the lockstep
/// matmul is dispatched to): returns the width's name and the flops done.
fn peak_chains(iters: usize, fused: bool) -> (&'static str, f64) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the features `chains_avx512` is compiled for were just detected.
            #[allow(unsafe_code)]
            return unsafe {
                black_box(if fused {
                    chains_avx512::<true>(iters)
                } else {
                    chains_avx512::<false>(iters)
                });
                ("AVX-512", (iters * 12 * 16 * 2) as f64)
            };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the features `chains_avx2` is compiled for were just detected.
            #[allow(unsafe_code)]
            return unsafe {
                black_box(if fused {
                    chains_avx2::<true>(iters)
                } else {
                    chains_avx2::<false>(iters)
                });
                ("AVX2", (iters * 12 * 8 * 2) as f64)
            };
        }
    }
    black_box(if fused {
        chains::<true, 8, 8>(iters)
    } else {
        chains::<false, 8, 8>(iters)
    });
    ("portable", (iters * 8 * 8 * 2) as f64)
}

/// `$c = step($c)` for each named accumulator, `$iters` times: separate locals, not an array.
/// With an array (20 chains), rustc kept most accumulators on the stack and rotated the rest
/// through registers, and this "peak" came out at half the CPU's: 128 of 226 GFLOP/s per core
/// on a Zen 5 EPYC, below what the matmul itself reached.
macro_rules! unrolled {
    ($iters:expr, $init:expr, |$v:ident| $step:expr, [$($c:ident),+]) => {{
        $(let mut $c = $init;)+
        for _ in 0..$iters {
            $($c = {
                let $v = $c;
                $step
            };)+
        }
        [$($c),+]
    }};
}

/// 12 chains of 16 lanes in ZMM registers (12 x 4 cycles of FMA latency covers two FMA units),
/// written with explicit vector instructions: left to the compiler, the AVX-512 copy of `chains`
/// ran as scalar code on an AVX-512 Xeon (~6 GFLOP/s), as lockstep's own tiles once did.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[allow(unsafe_code)]
unsafe fn chains_avx512<const FUSED: bool>(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    // SAFETY (whole body): the caller checked AVX-512F and FMA; stores go to a local array.
    unsafe {
        let (m, a) = (
            _mm512_set1_ps(black_box(0.999_999f32)),
            _mm512_set1_ps(black_box(1e-7f32)),
        );
        let acc = unrolled!(
            iters,
            _mm512_set1_ps(0.5),
            |v| if FUSED {
                _mm512_fmadd_ps(v, m, a)
            } else {
                _mm512_add_ps(_mm512_mul_ps(v, m), a)
            },
            [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11]
        );
        let mut lanes = [0f32; 16];
        let mut sum = 0f32;
        for v in acc {
            _mm512_storeu_ps(lanes.as_mut_ptr(), v);
            sum += lanes.iter().sum::<f32>();
        }
        sum
    }
}

/// 12 chains of 8 lanes: 12 of the 16 YMM registers (explicit vector instructions, as above).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
unsafe fn chains_avx2<const FUSED: bool>(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    // SAFETY (whole body): the caller checked AVX2 and FMA; stores go to a local array.
    unsafe {
        let (m, a) = (
            _mm256_set1_ps(black_box(0.999_999f32)),
            _mm256_set1_ps(black_box(1e-7f32)),
        );
        let acc = unrolled!(
            iters,
            _mm256_set1_ps(0.5),
            |v| if FUSED {
                _mm256_fmadd_ps(v, m, a)
            } else {
                _mm256_add_ps(_mm256_mul_ps(v, m), a)
            },
            [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11]
        );
        let mut lanes = [0f32; 8];
        let mut sum = 0f32;
        for v in acc {
            _mm256_storeu_ps(lanes.as_mut_ptr(), v);
            sum += lanes.iter().sum::<f32>();
        }
        sum
    }
}

/// `C` independent accumulators of `L` lanes (enough chains to cover the multiply-then-add
/// latency, few enough that nothing spills), each step one multiply and one add of every lane
/// (or one FMA): `iters * C * L * 2` flops.
#[inline(always)]
fn chains<const FUSED: bool, const L: usize, const C: usize>(iters: usize) -> f32 {
    let mut acc = [[0.5f32; L]; C];
    let (m, a) = (black_box(0.999_999f32), black_box(1e-7f32));
    // Plain index loops: a closure (`array::map`) is not always inlined into the AVX2/AVX-512
    // copies, and the chains then ran ~20x below the peak depending on how the rest of this
    // file happened to compile.
    for _ in 0..iters {
        for c in acc.iter_mut() {
            for v in c.iter_mut() {
                *v = if FUSED { v.mul_add(m, a) } else { *v * m + a };
            }
        }
    }
    acc.iter().flatten().sum()
}
