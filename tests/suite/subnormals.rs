//! lockstep's subnormal contract (`lockstep_kernels::arith`): every kernel's CPU loop gives the
//! same bits with the CPU's flush-to-zero / denormals-are-zero modes on and off (the CPU standing
//! in for a GPU that flushes, `LOCKSTEP_CPU_FTZ`), and every backend gives those bits, on inputs
//! holding subnormals, `±MIN_POSITIVE`, zeros and values whose products and sums underflow.
//! Training runs with the switch on and off write byte-identical checkpoints.

use crate::harness::{assert_same_files, bin, config, short_digits, write_config};
use crate::kernels_bitwise::{assert_bitwise, devices, host};
use burn::tensor::{Device, Tensor, TensorData};
use lockstep_kernels::arith::{self, Unary};
use lockstep_kernels::ops as det;
use lockstep_kernels::optim::Decay;
use lockstep_kernels::pool::Pool;
use lockstep_kernels::{bias, ftz, im2col, matmul, mul, optim, pool, reduce, softmax, xent};
use lockstep_train::conformance::underflow_values as u;

fn tn<const D: usize>(v: &[f32], shape: [usize; D], d: &Device) -> Tensor<D> {
    Tensor::<D>::from_data(TensorData::new(v.to_vec(), shape), d)
}

/// `cpu` with the CPU's FTZ/DAZ modes off and on (they must agree bit for bit), then `dev` on
/// every backend (each must give those bits).
fn check(
    what: &str,
    devs: &[(&'static str, Device)],
    cpu: impl Fn() -> Vec<f32> + Sync,
    dev: impl Fn(&Device) -> Vec<f32>,
) {
    let off = ftz::run_with(false, &cpu);
    let on = ftz::run_with(true, &cpu);
    assert_bitwise(&format!("{what}: CPU with FTZ/DAZ on vs off"), &off, &on);
    for (name, d) in devs {
        assert_bitwise(&format!("{what} on {name}"), &off, &dev(d));
    }
}

/// Gradient of `sum(f(x) * g)` with respect to `x` on `d`.
fn grad<const D: usize>(
    x: &[f32],
    shape: [usize; D],
    g: &[f32],
    gshape: [usize; D],
    d: &Device,
    f: impl Fn(Tensor<D>) -> Tensor<D>,
) -> Vec<f32> {
    let ad = d.clone().autodiff();
    let xt = tn(x, shape, &ad).require_grad();
    let gs = (f(xt.clone()) * tn(g, gshape, &ad)).sum().backward();
    host(xt.grad(&gs).expect("x takes part"))
}

#[test]
fn the_ftz_switch_really_flushes() {
    assert!(ftz::run_with(true, ftz::this_thread_flushes));
    assert!(!ftz::run_with(false, ftz::this_thread_flushes));
    let x = u(4096, "inputs", -60);
    assert!(arith::needs_flush(&x), "the inputs hold subnormals");
}

#[test]
fn matmul_reductions_bias_and_mul_on_subnormals_match_with_cpu_ftz_and_on_every_backend() {
    let devs = devices();
    let (m, k, n) = (13, 70, 11);
    let (a, b) = (u(m * k, "t-a", -60), u(k * n, "t-b", -62));
    assert_bitwise(
        "matmul vs the flushed reference loop",
        &matmul::cpu::matmul_reference(&a, &b, m, k, n),
        &matmul::cpu::matmul(&a, &b, m, k, n, false),
    );
    let underflowing_products = (0..m * k)
        .flat_map(|i| (0..n).map(move |j| (i, j)))
        .filter(|&(i, j)| {
            let p = a[i] as f64 * b[(i % k) * n + j] as f64;
            p != 0.0 && p.abs() <= f32::MIN_POSITIVE as f64
        })
        .count();
    assert!(
        underflowing_products > 100,
        "{underflowing_products} underflowing products"
    );
    check(
        "matmul",
        &devs,
        || matmul::cpu::matmul(&a, &b, m, k, n, false),
        |d| host(det::matmul(tn(&a, [m, k], d), tn(&b, [k, n], d))),
    );
    let g = u(m * n, "t-g", -64);
    let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
    let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
    check(
        "matmul dA",
        &devs,
        || matmul::cpu::matmul(&g, &bt, m, n, k, false),
        |d| {
            grad(&a, [m, k], &g, [m, n], d, |x| {
                det::matmul(x, tn(&b, [k, n], d))
            })
        },
    );
    check(
        "matmul dB",
        &devs,
        || matmul::cpu::matmul(&at, &g, k, m, n, false),
        |d| {
            grad(&b, [k, n], &g, [m, n], d, |y| {
                det::matmul(tn(&a, [m, k], d), y)
            })
        },
    );
    let (r, c) = (37, 19);
    let (x, bv) = (u(r * c, "t-rx", -124), u(c, "t-rb", -124));
    check(
        "sum_rows",
        &devs,
        || reduce::cpu::sum_rows(&x, r, c),
        |d| host(det::sum_rows(tn(&x, [r, c], d))),
    );
    check(
        "sum_all",
        &devs,
        || vec![reduce::cpu::sum_all(&x)],
        |d| host(det::sum_all(tn(&x, [r, c], d))),
    );
    check(
        "add_bias",
        &devs,
        || bias::cpu::add_bias(&x, &bv, r, c),
        |d| host(det::add_bias(tn(&x, [r, c], d), tn(&bv, [1, c], d))),
    );
    let (p, q) = (u(999, "t-p", -63), u(999, "t-q", -63));
    check(
        "mul",
        &devs,
        || mul::cpu::mul(&p, &q),
        |d| host(det::mul(tn(&p, [999], d), tn(&q, [999], d))),
    );
}

#[test]
fn element_wise_ops_and_their_backward_on_subnormals_match_with_cpu_ftz_and_on_every_backend() {
    let devs = devices();
    let mut x = u(2000, "t-act", -60);
    x.extend((0..64).map(|i| -86.0 - i as f32 * 0.05));
    let n = x.len();
    let g = u(n, "t-actg", -100);
    let cpu_map = |op: Unary, v: &[f32]| -> Vec<f32> { v.iter().map(|&a| op.cpu()(a)).collect() };
    type Act = fn(Tensor<1>) -> Tensor<1>;
    let acts: [(&str, Unary, Act); 4] = [
        ("exp", Unary::Exp, det::exp::<1>),
        ("sigmoid", Unary::Sigmoid, det::sigmoid::<1>),
        ("tanh", Unary::Tanh, det::tanh::<1>),
        ("gelu", Unary::Gelu, det::gelu::<1>),
    ];
    for (name, op, f) in acts {
        check(name, &devs, || cpu_map(op, &x), |d| host(f(tn(&x, [n], d))));
        // The backward passes as `ops` defines them: g times exp's output, s * (1 - s), 1 - t*t,
        // gelu'(x); `1 - v` is one IEEE subtraction of a value in [0, 1] (never subnormal).
        let local = |y: &[f32]| -> Vec<f32> {
            match op {
                Unary::Exp => y.to_vec(),
                Unary::Sigmoid => {
                    let one_minus: Vec<f32> = y.iter().map(|s| 1.0 + -s).collect();
                    mul::cpu::mul(y, &one_minus)
                }
                Unary::Tanh => mul::cpu::mul(y, y).iter().map(|s| 1.0 + -s).collect(),
                _ => cpu_map(Unary::GeluGrad, &x),
            }
        };
        check(
            &format!("{name} backward"),
            &devs,
            || mul::cpu::mul(&g, &local(&cpu_map(op, &x))),
            |d| grad(&x, [n], &g, [n], d, f),
        );
    }
    let lx: Vec<f32> = u(2000, "t-log", -100)
        .iter()
        .map(|v| v.abs().max(f32::from_bits(0x0100_0000)))
        .collect();
    check(
        "log",
        &devs,
        || cpu_map(Unary::Log, &lx),
        |d| host(det::log(tn(&lx, [2000], d))),
    );
    let lg = u(2000, "t-logg", -20);
    check(
        "log backward (g * recip_fixed(x))",
        &devs,
        || mul::cpu::mul(&lg, &cpu_map(Unary::Recip, &lx)),
        |d| grad(&lx, [2000], &lg, [2000], d, det::log::<1>),
    );
}

#[test]
fn softmax_and_cross_entropy_on_underflowing_rows_match_with_cpu_ftz_and_on_every_backend() {
    let devs = devices();
    let (m, c) = (6, 12);
    let x = lockstep_train::conformance::underflow_logits(m, c);
    let dy = u(m * c, "t-sdy", -30);
    for log in [false, true] {
        let name = if log { "log_softmax" } else { "softmax" };
        let f = move |t: Tensor<2>| {
            if log {
                det::log_softmax(t)
            } else {
                det::softmax(t)
            }
        };
        check(
            name,
            &devs,
            || softmax::cpu::forward(&x, m, c, log),
            |d| host(f(tn(&x, [m, c], d))),
        );
        check(
            &format!("{name} backward"),
            &devs,
            || softmax::cpu::backward(&softmax::cpu::forward(&x, m, c, log), &dy, m, c, log),
            |d| grad(&x, [m, c], &dy, [m, c], d, f),
        );
    }
    let targets: Vec<f32> = (0..m * c)
        .map(|i| {
            if i % c == (i / c * 5 + 1) % c {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let g = u(m, "t-xg", -110);
    check(
        "cross_entropy",
        &devs,
        || xent::cpu::forward(&x, &targets, m, c),
        |d| {
            host(det::cross_entropy_nll(
                tn(&x, [m, c], d),
                tn(&targets, [m, c], d),
            ))
        },
    );
    check(
        "cross_entropy backward",
        &devs,
        || xent::cpu::backward(&x, &targets, &g, m, c),
        |d| {
            let tt = tn(&targets, [m, c], &d.clone().autodiff());
            grad(&x, [m, c], &g, [m, 1], d, |t| {
                det::cross_entropy_nll(t, tt.clone())
            })
        },
    );
}

#[test]
fn pooling_im2col_and_optimizers_on_subnormals_match_with_cpu_ftz_and_on_every_backend() {
    let devs = devices();
    let (nb, ch, h, w) = (2, 3, 8, 6);
    let x = u(nb * ch * h * w, "t-px", -124);
    let gy = u(nb * ch * (h / 2) * (w / 2), "t-pg", -124);
    for kind in [Pool::Max, Pool::Avg] {
        let f = move |t: Tensor<4>| match kind {
            Pool::Max => det::max_pool2d(t, 2),
            Pool::Avg => det::avg_pool2d(t, 2),
        };
        check(
            &format!("{kind:?} pool"),
            &devs,
            || pool::cpu::forward(&x, nb * ch, h, w, 2, kind),
            |d| host(f(tn(&x, [nb, ch, h, w], d))),
        );
        check(
            &format!("{kind:?} pool backward"),
            &devs,
            || pool::cpu::backward(&x, &gy, nb * ch, h, w, 2, kind),
            |d| grad(&x, [nb, ch, h, w], &gy, [nb, ch, h / 2, w / 2], d, f),
        );
    }
    let dims = [nb, ch, h, w];
    let cols = u(nb * h * w * ch * 9, "t-cols", -124);
    check(
        "im2col",
        &devs,
        || im2col::cpu::im2col(&x, dims, 3, 1),
        |d| host(det::im2col(tn(&x, dims, d), 3, 1)),
    );
    check(
        "col2im",
        &devs,
        || im2col::cpu::col2im(&cols, dims, 3, 1),
        |d| {
            let ad = d.clone().autodiff();
            let xt = tn(&x, dims, &ad).require_grad();
            let y = det::im2col(xt.clone(), 3, 1);
            let gs = (y * tn(&cols, [nb * h * w, ch * 9], &ad)).sum().backward();
            host(xt.grad(&gs).expect("grad"))
        },
    );
    let on = 3001;
    let (wv, gv, mv) = (u(on, "t-ow", -110), u(on, "t-og", -62), u(on, "t-om", -120));
    let vv: Vec<f32> = u(on, "t-ov", -125).iter().map(|v| v.abs()).collect();
    for decay in [Decay::None, Decay::Coupled] {
        let hp = [1e-2, 0.01, 0.9];
        check(
            &format!("sgd {decay:?}"),
            &devs,
            || {
                let (w, b) = optim::cpu::sgd(&wv, &gv, &mv, hp, decay);
                [w, b].concat()
            },
            |d| {
                let (w, b) = det::sgd_step(
                    tn(&wv, [on], d),
                    tn(&gv, [on], d),
                    tn(&mv, [on], d),
                    hp,
                    decay,
                );
                [host(w), host(b)].concat()
            },
        );
    }
    for decay in [Decay::None, Decay::Coupled, Decay::Decoupled] {
        let (lr, wd) = (1e-3f32, 0.01f32);
        let hp = [lr, wd, 0.9, 0.999, 0.1, 1e-3, 3.69, 334.0, 1e-8, lr * wd];
        check(
            &format!("adam {decay:?}"),
            &devs,
            || {
                let (w, m, v) = optim::cpu::adam(&wv, &gv, &mv, &vv, hp, decay);
                [w, m, v].concat()
            },
            |d| {
                let (w, m, v) = det::adam_step(
                    tn(&wv, [on], d),
                    tn(&gv, [on], d),
                    tn(&mv, [on], d),
                    tn(&vv, [on], d),
                    hp,
                    decay,
                );
                [host(w), host(m), host(v)].concat()
            },
        );
    }
}

/// Train the config at `cfg` (stopping after `steps` steps when given, on ndarray) into `out`
/// with `LOCKSTEP_CPU_FTZ` set or unset.
fn train_ftz(cfg: &std::path::Path, out: &std::path::Path, steps: Option<u64>, ftz_on: bool) {
    let mut c = bin();
    c.args(["train", cfg.to_str().expect("utf-8"), "--out"])
        .arg(out)
        .args(["--backend", "ndarray"]);
    if let Some(s) = steps {
        c.args(["--max-steps", &s.to_string()]);
    }
    if ftz_on {
        c.env(ftz::ENV, "1");
    } else {
        c.env_remove(ftz::ENV);
    }
    let o = c.output().expect("lockstep runs");
    assert!(
        o.status.success(),
        "train {} ftz={ftz_on}: {}",
        cfg.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The digits MLP and its GELU twin (whole short runs), and the shipped Fashion-MNIST MLP and CNN
/// (stopped after a few steps) train to byte-identical checkpoints and metrics with the CPU's
/// FTZ/DAZ modes on and off; the manifest records what the probe found.
#[test]
fn training_gives_identical_checkpoints_with_cpu_ftz_on_and_off() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let gelu = short_digits("").replace("activation = \"relu\"", "activation = \"gelu\"");
    assert!(gelu.contains("activation = \"gelu\""));
    let whole = [
        "metrics.jsonl",
        "final.safetensors",
        "scores.json",
        "eval/test.safetensors",
    ];
    let jobs = [
        (
            "digits",
            write_config(tmp.path(), "digits.toml", &short_digits("")),
            None,
        ),
        ("gelu", write_config(tmp.path(), "gelu.toml", &gelu), None),
        ("fashion_mlp", config("fashion_mlp.toml"), Some(12)),
        ("fashion_cnn", config("fashion_cnn.toml"), Some(4)),
    ];
    for (name, cfg, steps) in jobs {
        let (a, b) = (
            tmp.path().join(format!("{name}-off")),
            tmp.path().join(format!("{name}-on")),
        );
        train_ftz(&cfg, &a, steps, false);
        train_ftz(&cfg, &b, steps, true);
        match steps {
            None => assert_same_files(&a, &b, &whole),
            Some(s) => assert_same_files(
                &a,
                &b,
                &[
                    "metrics.jsonl",
                    &format!("checkpoints/step-{s:07}.safetensors"),
                ],
            ),
        }
        let ftz_fact = |d: &std::path::Path| {
            let text = std::fs::read_to_string(d.join("manifest.json")).expect("manifest");
            let m: serde_json::Value = serde_json::from_str(&text).expect("json");
            m["placement"]["device"]["arith.ftz"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(ftz_fact(&a), "off", "{name}");
        assert_eq!(ftz_fact(&b), "results+inputs", "{name}");
    }
}
