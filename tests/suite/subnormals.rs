//! lockstep's subnormal contract (`lockstep_kernels::arith`): on inputs holding subnormals,
//! `±MIN_POSITIVE`, zeros and values whose products and sums underflow, every op gives the
//! reference's bits on every backend, and the CPU backends give them with the CPU's
//! flush-to-zero / denormals-are-zero modes on and off alike (the CPU standing in for a GPU that
//! flushes, `LOCKSTEP_CPU_FTZ`). The references are the suite's own (`reference`: the documented
//! loops with the flush rule written out, bit for bit; `log` and the ops built on it against
//! their f64 definitions' bounds, `kernels_bitwise`), never `lockstep_kernels`' CPU code.
//! Training runs with the switch on and off write byte-identical checkpoints.

use crate::harness::{assert_same_files, bin, config, short_digits, write_config};
use crate::kernels_bitwise::{
    assert_bitwise, assert_log_softmax_within_bound, assert_log_within_bound,
    assert_xent_nll_within_bound, devices, host,
};
use crate::reference::{
    adam_loop, add_bias_loop, col2im_loop, exp_loop, fmul, gelu_grad_loop, gelu_loop, im2col_loop,
    matmul_loop, mul_loop, pool_reference, recip_loop, sgd_loop, sigmoid_loop,
    softmax_backward_loop, softmax_loop, sum_all_loop, sum_rows_loop, tanh_loop, transpose,
    xent_backward_loop,
};
use burn::tensor::{Device, Tensor, TensorData};
use lockstep_kernels::ftz;
use lockstep_kernels::ops as det;
use lockstep_kernels::optim::Decay;
use lockstep_train::conformance::underflow_values as u;

fn tn<const D: usize>(v: &[f32], shape: [usize; D], d: &Device) -> Tensor<D> {
    Tensor::<D>::from_data(TensorData::new(v.to_vec(), shape), d)
}

/// What every run of an op must give.
enum Want<'a> {
    /// The reference loop's bits.
    Bits(Vec<f32>),
    /// Within an f64 definition's bound (`log` and the ops built on it), checked by the closure
    /// (given the run's name and output).
    Bound(&'a dyn Fn(&str, &[f32])),
}

/// `dev` on every backend — on the CPU backends (whose lockstep ops run the CPU loops) once with
/// the CPU's FTZ/DAZ modes off and once on — each run against `want` and bit for bit against the
/// first run.
fn check(
    what: &str,
    devs: &[(&'static str, Device)],
    want: Want,
    dev: impl Fn(&Device) -> Vec<f32> + Sync,
) {
    let mut first: Option<(String, Vec<f32>)> = None;
    for (name, d) in devs {
        let runs: Vec<(String, Vec<f32>)> = if *name == "wgpu" {
            vec![(name.to_string(), dev(d))]
        } else {
            [false, true]
                .into_iter()
                .map(|on| {
                    let mode = if on { "on" } else { "off" };
                    let got = ftz::run_with(on, || dev(d));
                    (format!("{name} with CPU FTZ/DAZ {mode}"), got)
                })
                .collect()
        };
        for (run, got) in runs {
            match &want {
                Want::Bits(w) => assert_bitwise(&format!("{what} on {run} vs the loop"), w, &got),
                Want::Bound(f) => f(&format!("{what} on {run}"), &got),
            }
            match &first {
                None => first = Some((run, got)),
                Some((f, w)) => assert_bitwise(&format!("{what} on {run} vs {f}"), w, &got),
            }
        }
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
    assert!(
        x.iter().any(|v| v.is_subnormal()),
        "the inputs hold subnormals"
    );
}

#[test]
fn matmul_reductions_bias_and_mul_on_subnormals_match_with_cpu_ftz_and_on_every_backend() {
    let devs = devices();
    let (m, k, n) = (13, 70, 11);
    let (a, b) = (u(m * k, "t-a", -60), u(k * n, "t-b", -62));
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
        Want::Bits(matmul_loop(&a, &b, m, k, n)),
        |d| host(det::matmul(tn(&a, [m, k], d), tn(&b, [k, n], d))),
    );
    let g = u(m * n, "t-g", -64);
    check(
        "matmul dA",
        &devs,
        Want::Bits(matmul_loop(&g, &transpose(&b, k, n), m, n, k)),
        |d| {
            grad(&a, [m, k], &g, [m, n], d, |x| {
                det::matmul(x, tn(&b, [k, n], d))
            })
        },
    );
    check(
        "matmul dB",
        &devs,
        Want::Bits(matmul_loop(&transpose(&a, m, k), &g, k, m, n)),
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
        Want::Bits(sum_rows_loop(&x, r, c)),
        |d| host(det::sum_rows(tn(&x, [r, c], d))),
    );
    check("sum_all", &devs, Want::Bits(vec![sum_all_loop(&x)]), |d| {
        host(det::sum_all(tn(&x, [r, c], d)))
    });
    check("add_bias", &devs, Want::Bits(add_bias_loop(&x, &bv)), |d| {
        host(det::add_bias(tn(&x, [r, c], d), tn(&bv, [1, c], d)))
    });
    let (p, q) = (u(999, "t-p", -63), u(999, "t-q", -63));
    check("mul", &devs, Want::Bits(mul_loop(&p, &q)), |d| {
        host(det::mul(tn(&p, [999], d), tn(&q, [999], d)))
    });
}

#[test]
fn element_wise_ops_and_their_backward_on_subnormals_match_with_cpu_ftz_and_on_every_backend() {
    let devs = devices();
    let mut x = u(2000, "t-act", -60);
    x.extend((0..64).map(|i| -86.0 - i as f32 * 0.05));
    let n = x.len();
    let g = u(n, "t-actg", -100);
    // (name, the loop, the op)
    type Act = (&'static str, fn(f32) -> f32, fn(Tensor<1>) -> Tensor<1>);
    let acts: [Act; 4] = [
        ("exp", exp_loop, det::exp::<1>),
        ("sigmoid", sigmoid_loop, det::sigmoid::<1>),
        ("tanh", tanh_loop, det::tanh::<1>),
        ("gelu", gelu_loop, det::gelu::<1>),
    ];
    for (name, f_loop, f) in acts {
        let y: Vec<f32> = x.iter().map(|&v| f_loop(v)).collect();
        // The backward passes as `ops` defines them: g times exp's output, s * (1 - s), 1 - t*t,
        // gelu'(x); `1 - v` is one IEEE subtraction of a value in [0, 1] (never subnormal).
        let local: Vec<f32> = match name {
            "exp" => y.clone(),
            "sigmoid" => y.iter().map(|&s| fmul(s, 1.0 - s)).collect(),
            "tanh" => y.iter().map(|&t| 1.0 - fmul(t, t)).collect(),
            _ => x.iter().map(|&v| gelu_grad_loop(v)).collect(),
        };
        check(name, &devs, Want::Bits(y), |d| host(f(tn(&x, [n], d))));
        check(
            &format!("{name} backward"),
            &devs,
            Want::Bits(mul_loop(&g, &local)),
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
        Want::Bound(&|what, got| assert_log_within_bound(what, &lx, got)),
        |d| host(det::log(tn(&lx, [2000], d))),
    );
    let lg = u(2000, "t-logg", -20);
    let recip: Vec<f32> = lx.iter().map(|&v| recip_loop(v)).collect();
    check(
        "log backward (g * recip_fixed(x))",
        &devs,
        Want::Bits(mul_loop(&lg, &recip)),
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
        let fwd = |d: &Device| host(f(tn(&x, [m, c], d)));
        let y = if log {
            check(
                name,
                &devs,
                Want::Bound(&|what, got| assert_log_softmax_within_bound(what, &x, c, got)),
                fwd,
            );
            // log-softmax's forward has only a bound: its backward's reference starts from the
            // first backend's output (which `check` just held to the bound and every other run
            // to its bits)
            fwd(&devs[0].1)
        } else {
            let y = softmax_loop(&x, c);
            check(name, &devs, Want::Bits(y.clone()), fwd);
            y
        };
        check(
            &format!("{name} backward"),
            &devs,
            Want::Bits(softmax_backward_loop(&y, &dy, c, log)),
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
        Want::Bound(&|what, got| assert_xent_nll_within_bound(what, &x, &targets, c, got)),
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
        Want::Bits(xent_backward_loop(&x, &targets, &g, c)),
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
    let dims = [nb, ch, h, w];
    let x = u(nb * ch * h * w, "t-px", -124);
    let gy = u(nb * ch * (h / 2) * (w / 2), "t-pg", -124);
    for max in [true, false] {
        let kind = if max { "max" } else { "avg" };
        let f = move |t: Tensor<4>| {
            if max {
                det::max_pool2d(t, 2)
            } else {
                det::avg_pool2d(t, 2)
            }
        };
        let (want_y, want_dx) = pool_reference(&x, &gy, dims, 2, max);
        check(&format!("{kind} pool"), &devs, Want::Bits(want_y), |d| {
            host(f(tn(&x, dims, d)))
        });
        check(
            &format!("{kind} pool backward"),
            &devs,
            Want::Bits(want_dx),
            |d| grad(&x, dims, &gy, [nb, ch, h / 2, w / 2], d, f),
        );
    }
    let cols = u(nb * h * w * ch * 9, "t-cols", -124);
    check(
        "im2col",
        &devs,
        Want::Bits(im2col_loop(&x, dims, 3, 1)),
        |d| host(det::im2col(tn(&x, dims, d), 3, 1)),
    );
    check(
        "col2im",
        &devs,
        Want::Bits(col2im_loop(&cols, dims, 3, 1)),
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
        let (want_w, want_b) = sgd_loop(&wv, &gv, &mv, hp, decay);
        check(
            &format!("sgd {decay:?}"),
            &devs,
            Want::Bits([want_w, want_b].concat()),
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
        let (want_w, want_m, want_v) = adam_loop(&wv, &gv, &mv, &vv, hp, decay);
        check(
            &format!("adam {decay:?}"),
            &devs,
            Want::Bits([want_w, want_m, want_v].concat()),
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
