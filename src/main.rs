//! `lockstep`: the command line over lockstep-core and lockstep-train.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use lockstep_core::config::BackendKind;
use lockstep_core::{load_config, sha256_hex};
use lockstep_train::checkpoint::Checkpoint;
use lockstep_train::workers::Workers;
use lockstep_train::{BuildInfo, RunOptions, RunSummary};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod workers;

#[derive(Parser)]
#[command(
    name = "lockstep",
    version,
    about = "Deterministic training on Burn: the same config and seed give the same bits."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train from a TOML config into a new run directory.
    Train {
        /// The job, e.g. configs/digits_mlp.toml.
        config: PathBuf,
        /// Run directory to create (default: runs/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// ndarray, flex or wgpu (default: the config's train.backend).
        #[arg(long)]
        backend: Option<String>,
        /// wgpu adapter: default, cpu, discrete:N, integrated:N, virtual:N.
        #[arg(long)]
        device: Option<String>,
        /// CPU threads (default: the config's train.threads; 0 = all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Stop after N optimizer steps, with a checkpoint there (continue with `resume`).
        #[arg(long)]
        max_steps: Option<u64>,
        /// Link --out to an identical finished run (same config, code, data, backend) instead of training.
        #[arg(long)]
        reuse: bool,
    },
    /// Continue a run from its newest checkpoint.
    Resume {
        run: PathBuf,
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long)]
        max_steps: Option<u64>,
    },
    /// Run every op on each backend and compare with the first (the reference) under the
    /// declared tolerance table; exit 1 if any op exceeds its bound or changes run to run.
    Conformance {
        /// Comma-separated backends; the first is the reference.
        #[arg(long, default_value = "ndarray,flex,wgpu")]
        backends: String,
        /// Print the rows as JSON.
        #[arg(long)]
        json: bool,
        /// Only cases whose op name or shape label contains this (e.g. `adam`, `underflow`).
        #[arg(long)]
        op: Option<String>,
    },
    /// Compare two runs: first differing metrics line, checkpoint step and tensor; exit 0 when
    /// identical (or, with --within-tolerance, inside the declared trajectory tolerance).
    Diff {
        a: PathBuf,
        b: PathBuf,
        #[arg(long)]
        within_tolerance: bool,
        #[arg(long)]
        json: bool,
    },
    /// Recompute the recorded evaluation scores from the final checkpoint and compare (the
    /// deployment check): exit 0 on match, 1 with a report of the first mismatches otherwise.
    Verify {
        run: PathBuf,
        #[arg(long)]
        backend: Option<String>,
        #[arg(long)]
        batch_size: Option<usize>,
        /// Data directory (IDX) or CSV file to use instead of the recorded one.
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long)]
        allow_data_change: bool,
        /// Verify this exported checkpoint (f16/bf16) instead of RUN/final.safetensors.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Score new inputs (IDX images, .npy, safetensors `x`, or CSV rows) with a finished run or
    /// a checkpoint/export file: one JSON line per input with its logits, class and class name —
    /// the numbers `verify` checks. Needs no training data (the checkpoint carries the
    /// normalisation).
    Predict {
        /// A run directory, a checkpoint, or a `lockstep export` file.
        run: PathBuf,
        input: PathBuf,
        #[arg(long)]
        backend: Option<String>,
    },
    /// Generate text with a trained language model (model.kind = "gpt"): the same text on every
    /// backend for the same run, prompt, seed, temperature and top-k.
    Sample {
        /// A run directory or a checkpoint.
        run: PathBuf,
        #[arg(long, default_value = "\n")]
        prompt: String,
        /// How many tokens to generate.
        #[arg(long, default_value_t = 200)]
        tokens: usize,
        /// Softmax temperature; 0 = greedy (always the most likely token).
        #[arg(long, default_value_t = 0.8)]
        temperature: f64,
        /// Sample only among the K most likely tokens.
        #[arg(long = "top-k")]
        top_k: Option<usize>,
        /// Names the random streams of the draws (`sample/<seed>/<i>`).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        backend: Option<String>,
    },
    /// Write an inference checkpoint with f16 or bf16 weights (round-to-nearest-even).
    Export {
        run: PathBuf,
        #[arg(long)]
        dtype: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Table of runs under DIR (default runs/); --compare A B diffs two runs' configs and metrics.
    Runs {
        dir: Option<PathBuf>,
        #[arg(long, num_args = 2, value_names = ["A", "B"])]
        compare: Option<Vec<PathBuf>>,
        #[arg(long)]
        json: bool,
    },
    /// Plot training loss and test accuracy (and validation loss) of one or more runs: a PNG, or
    /// an SVG when --out ends in .svg. Axes, ticks, title and a legend naming each run.
    Plot {
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        #[arg(long, default_value = "plot.png")]
        out: PathBuf,
    },
    /// Write a run in MLflow's file-store layout (read it with MLFLOW_ALLOW_FILE_STORE=true).
    ExportMlflow {
        run: PathBuf,
        #[arg(long)]
        to: PathBuf,
    },
    /// Print a shipped config (compiled into the binary), or list them without NAME:
    /// `lockstep configs fashion_cnn > my.toml`.
    Configs { name: Option<String> },
    /// Show a checkpoint's tensors, shapes, dtypes and metadata (and verify its checksum).
    Inspect {
        file: PathBuf,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Facts about this binary, fixed when it was built (build.rs): the git commit and whether the
/// `print!`/`println!` that return the write error instead of panicking, so a closed pipe
/// (`lockstep inspect F | head`) ends the command quietly (see `main`).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout(), $($t)*)?
    }};
}
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($t)*)?
    }};
}

/// tracked sources differed from it, the Cargo.lock hash, the compiler.
fn build_info() -> BuildInfo {
    let known = |s: &'static str| (!s.is_empty()).then(|| s.to_string());
    BuildInfo {
        git_sha: known(env!("LOCKSTEP_GIT_SHA")),
        git_dirty: known(env!("LOCKSTEP_GIT_DIRTY")).map(|d| d == "true"),
        cargo_lock_sha256: sha256_hex(include_bytes!("../Cargo.lock")),
        rustc: env!("LOCKSTEP_RUSTC_VERSION").to_string(),
    }
}

/// The shipped configs (`configs/`), compiled in so that a user (and `scripts/gpu-check.sh`) can
/// run them with nothing but the binary.
const SHIPPED_CONFIGS: &[(&str, &str)] = &[
    ("digits_mlp", include_str!("../configs/digits_mlp.toml")),
    ("fashion_mlp", include_str!("../configs/fashion_mlp.toml")),
    ("fashion_cnn", include_str!("../configs/fashion_cnn.toml")),
    (
        "digits_residual",
        include_str!("../configs/digits_residual.toml"),
    ),
    ("gpt_char", include_str!("../configs/gpt_char.toml")),
];

fn parse_backend(s: &str) -> Result<BackendKind> {
    BackendKind::parse(s)
        .with_context(|| format!("--backend {s:?} is not a backend; use ndarray, flex or wgpu"))
}

/// Size thread pools before any tensor work. matrixmultiply (ndarray's matmul) reads
/// MATMUL_NUM_THREADS once at its first use, so it is set here, single-threaded, at start-up.
fn set_threads(threads: usize) -> Result<()> {
    if threads > 0 {
        // SAFETY: called at the top of main before any other thread exists.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("MATMUL_NUM_THREADS", threads.min(4).to_string());
        }
    }
    lockstep_train::backend::configure_threads(threads)?;
    Ok(())
}

/// The end of a `train`/`resume` on this worker: rank 0 reports the run; an error that only
/// this rank of several found aborts the job (`workers::fail`).
fn finish(workers: &Workers, r: Result<RunSummary>) -> Result<()> {
    match r {
        Ok(s) if workers.writes() => report(&s),
        Ok(_) => Ok(()),
        Err(e) => Err(workers::fail(workers, e)),
    }
}

fn run(cli: Cli) -> Result<()> {
    let progress = std::io::stderr().is_terminal();
    // Train and resume size the pools themselves; every other command still honours
    // LOCKSTEP_CPU_FTZ=1 (the CPU as a stand-in for a GPU that flushes subnormals).
    if lockstep_kernels::ftz::requested()
        && !matches!(cli.command, Command::Train { .. } | Command::Resume { .. })
    {
        set_threads(0)?;
    }
    match cli.command {
        Command::Train {
            config,
            out,
            backend,
            device,
            threads,
            max_steps,
            reuse,
        } => {
            let cfg = load_config(&config)?;
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            let out = out.unwrap_or_else(|| Path::new("runs").join(&cfg.name));
            let backend = match backend {
                Some(b) => parse_backend(&b)?,
                None => cfg.train.backend,
            };
            let threads = threads.unwrap_or(cfg.train.threads);
            if max_steps == Some(0) {
                bail!("--max-steps 0 would take no step; use a positive number");
            }
            set_threads(threads)?;
            let workers = workers::start()?;
            let command = format!("train --out {} --max-steps {max_steps:?}", out.display());
            let opts = RunOptions {
                backend,
                device,
                threads,
                stop_at: max_steps,
                progress,
                build: build_info(),
                reuse,
                model: None,
                workers: workers.clone(),
            };
            let r = workers::agree_on_job(&workers, &command, Some(text.as_bytes()))
                .and_then(|()| Ok(lockstep_train::train(&cfg, &text, &out, &opts)?));
            finish(&workers, r)?;
        }
        Command::Resume {
            run,
            device,
            threads,
            max_steps,
        } => {
            let manifest = lockstep_train::run::read_manifest(&run)?;
            let threads = threads.unwrap_or(manifest.placement.threads);
            set_threads(threads)?;
            let workers = workers::start()?;
            let command = format!("resume {} --max-steps {max_steps:?}", run.display());
            let opts = RunOptions {
                backend: BackendKind::Ndarray,
                device,
                threads,
                stop_at: max_steps,
                progress,
                build: build_info(),
                reuse: false,
                model: None,
                workers: workers.clone(),
            };
            let r = workers::agree_on_job(&workers, &command, None)
                .and_then(|()| Ok(lockstep_train::resume(&run, &opts)?));
            finish(&workers, r)?;
        }
        Command::Configs { name } => match name {
            None => {
                for (n, _) in SHIPPED_CONFIGS {
                    outln!("{n}");
                }
            }
            Some(n) => match SHIPPED_CONFIGS.iter().find(|(k, _)| *k == n) {
                Some((_, text)) => out!("{text}"),
                None => bail!(
                    "no shipped config {n:?}; the shipped configs are: {}",
                    SHIPPED_CONFIGS
                        .iter()
                        .map(|(k, _)| *k)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        },
        Command::Inspect { file, json } => inspect(&file, json)?,
        Command::Sample {
            run,
            prompt,
            tokens,
            temperature,
            top_k,
            seed,
            backend,
        } => {
            let backend = backend.map(|b| parse_backend(&b)).transpose()?;
            let opts = lockstep_train::sample::SampleOptions {
                prompt,
                tokens,
                temperature,
                top_k,
                seed,
                backend,
            };
            let text = lockstep_train::sample::sample(&run, &opts)?;
            writeln!(std::io::stdout().lock(), "{text}")?;
        }
        Command::Predict {
            run,
            input,
            backend,
        } => {
            let backend = backend.map(|b| parse_backend(&b)).transpose()?;
            let p = lockstep_train::Predictor::load(&run, backend)?;
            if p.vocab().is_some() {
                bail!(
                    "{}: is a language model; generate text with `lockstep sample {}`",
                    run.display(),
                    run.display()
                );
            }
            let x = lockstep_train::predict::read_inputs(&input, p.input_spec().shape)?;
            let logits = p.logits(&x);
            let mut out = std::io::stdout().lock();
            for (i, row) in logits.chunks(p.classes()).enumerate() {
                let class = row
                    .iter()
                    .enumerate()
                    .fold(0, |b, (j, &v)| if v > row[b] { j } else { b });
                let mut line = serde_json::json!({"index": i, "class": class, "logits": row});
                if let Some(name) = p.class_name(class) {
                    line["label"] = name.into();
                }
                writeln!(out, "{line}")?;
            }
        }
        Command::Runs { dir, compare, json } => {
            if let Some(pair) = compare {
                out!("{}", lockstep_train::tracking::compare(&pair[0], &pair[1])?);
            } else {
                let root = dir.unwrap_or_else(|| PathBuf::from("runs"));
                if !root.is_dir() {
                    bail!(
                        "{}: not a directory of runs; pass the parent of your --out directories",
                        root.display()
                    );
                }
                let rows = lockstep_train::tracking::list_runs(&root);
                if json {
                    outln!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    out!("{}", lockstep_train::tracking::format_runs(&rows));
                }
            }
        }
        Command::Plot { runs, out } => {
            for r in &runs {
                lockstep_train::run::read_manifest(r)?;
            }
            lockstep_train::tracking::plot(&runs, &out)?;
            outln!("wrote {}", out.display());
        }
        Command::ExportMlflow { run, to } => {
            let d = lockstep_train::tracking::export_mlflow(&run, &to)?;
            outln!(
                "wrote MLflow run {} (read with MLFLOW_ALLOW_FILE_STORE=true, tracking URI file://{})",
                d.display(),
                to.display()
            );
        }
        Command::Verify {
            run,
            backend,
            batch_size,
            data,
            allow_data_change,
            checkpoint,
            json,
        } => {
            let backend = backend.map(|b| parse_backend(&b)).transpose()?;
            if batch_size == Some(0) {
                bail!("--batch-size 0 is not a batch size; use 1 or more");
            }
            let opts = lockstep_train::verify::VerifyOptions {
                backend,
                batch_size,
                data,
                allow_data_change,
                checkpoint,
                model: None,
            };
            let r = lockstep_train::verify::verify(&run, &opts)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                out!("{}", lockstep_train::verify::format_report(&r));
            }
            if !r.passed {
                bail!("verify failed: the recomputed scores do not match the recorded ones");
            }
        }
        Command::Export { run, dtype, out } => {
            let p = lockstep_train::export::Precision::parse(&dtype)
                .with_context(|| format!("--dtype {dtype:?}: use f16 or bf16"))?;
            lockstep_train::export::export(&run, p, &out)?;
            outln!(
                "wrote {} ({dtype} weights); check it with: lockstep verify {} --checkpoint {}",
                out.display(),
                run.display(),
                out.display()
            );
        }
        Command::Diff {
            a,
            b,
            within_tolerance,
            json,
        } => {
            let d = lockstep_train::diff::diff_runs(&a, &b)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                out!("{}", lockstep_train::diff::format_diff(&d));
            }
            if !(d.identical || (within_tolerance && d.within_tolerance)) {
                bail!(
                    "the runs differ{}",
                    if within_tolerance {
                        " beyond the declared trajectory tolerance"
                    } else {
                        ""
                    }
                );
            }
        }
        Command::Conformance { backends, json, op } => {
            let mut devs = Vec::new();
            for b in backends.split(',').map(str::trim).filter(|b| !b.is_empty()) {
                let kind = parse_backend(b)?;
                devs.push((
                    b.to_string(),
                    lockstep_train::backend::open(kind, 0, None)?.device,
                ));
            }
            if devs.is_empty() {
                bail!("--backends is empty; pass e.g. ndarray,flex,wgpu");
            }
            let cases: Vec<_> = lockstep_train::conformance::cases()
                .into_iter()
                .filter(|c| {
                    op.as_deref()
                        .is_none_or(|o| c.op.contains(o) || c.shape.contains(o))
                })
                .collect();
            let rows = lockstep_train::conformance::run(&cases, &devs);
            if json {
                outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                out!("{}", lockstep_train::conformance::format_table(&rows));
            }
            let failed = lockstep_train::conformance::failures(&rows).len();
            let known = rows
                .iter()
                .filter(|r| !r.passed && r.known_defect.is_some())
                .count();
            if failed > 0 {
                bail!(
                    "{failed} of {} conformance rows exceed the declared tolerance or change run to run",
                    rows.len()
                );
            }
            eprintln!(
                "conformance: {} rows within the declared tolerances; {known} listed stock-op defects reproduced",
                rows.len() - known
            );
        }
    }
    Ok(())
}

fn report(s: &lockstep_train::RunSummary) -> Result<()> {
    if s.finished {
        for e in &s.evals {
            outln!(
                "{}: accuracy {:.4}  loss {:.4}  ({} samples)",
                e.split,
                e.accuracy,
                e.loss,
                e.samples
            );
        }
        outln!(
            "finished {} steps -> {}/final.safetensors (sha256 {})",
            s.step,
            s.dir.display(),
            s.final_sha256.as_deref().unwrap_or("?")
        );
    } else {
        outln!(
            "stopped at step {}/{} with a checkpoint; continue with: lockstep resume {}",
            s.step,
            s.total_steps,
            s.dir.display()
        );
    }
    Ok(())
}

fn inspect(file: &Path, json: bool) -> Result<()> {
    let ck = Checkpoint::read(file)?;
    if json {
        let tensors: serde_json::Map<String, serde_json::Value> = ck
            .tensors
            .iter()
            .map(|(k, t)| {
                (
                    k.clone(),
                    serde_json::json!({"dtype": t.dtype.name(), "shape": t.shape}),
                )
            })
            .collect();
        let inference = ck.inference.as_ref().map(|i| {
            serde_json::json!({"spec": i.spec, "pixel_scale": i.pixel_scale, "mean": i.mean, "std": i.std})
        });
        let v = serde_json::json!({"file": file, "checksum": "ok", "state": ck.state, "identity": ck.identity, "inference": inference, "tensors": tensors});
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    outln!(
        "{}  (checksum ok, {} tensors)",
        file.display(),
        ck.tensors.len()
    );
    outln!(
        "config {} ({}), seed {}, lockstep {}",
        ck.identity.config.name,
        &ck.identity.config_hash[..16],
        ck.identity.seed,
        ck.identity.lockstep_version
    );
    outln!(
        "state: step {}/{}, epoch {}, batch {} of the epoch, last lr {}",
        ck.state.step,
        ck.state.total_steps,
        ck.state.epoch,
        ck.state.batch_in_epoch,
        ck.state.last_lr
    );
    for (name, h) in &ck.identity.datasets {
        outln!("data: {name} sha256 {}", &h[..16]);
    }
    match &ck.inference {
        Some(i) => outln!(
            "inference: input {:?} ({} pixels), {} (pixel_scale {}, mean {}, std {}), {} classes{}",
            i.spec.shape,
            i.spec.dtype,
            i.spec.normalize,
            i.pixel_scale,
            i.mean,
            i.std,
            i.spec.classes,
            if i.spec.class_names.is_empty() {
                String::new()
            } else {
                format!(" ({})", i.spec.class_names.join(", "))
            }
        ),
        None => outln!(
            "inference: none recorded (format v1: predict refits the normalisation on the training data)"
        ),
    }
    for (name, t) in &ck.tensors {
        outln!("  {name:<28} {:<5} {:?}", t.dtype.name(), t.shape);
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOCKSTEP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `lockstep predict RUN X | head`: the reader left; nothing more to say (like ripgrep).
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) if e.downcast_ref::<workers::Reported>().is_some() => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
