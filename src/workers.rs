//! The worker processes of a `train`/`resume`: one, or the ranks of an MPI launch.
//!
//! `mpirun -n N lockstep train ...` (or `srun`) is detected from the launcher's environment
//! (`OMPI_COMM_WORLD_SIZE`, `PMIX_RANK`, `PMI_SIZE`); only then is MPI initialised, so a plain
//! `lockstep train` never touches MPI. MPI moves bytes only (`MPI_Allgather` of `u8`): the
//! gradient arithmetic and its order are lockstep's (`lockstep_train::workers`).
//!
//! At start every rank compares, with the others, the lockstep build (version, commit,
//! Cargo.lock and the SHA-256 of the executable's bytes) and the command (the config file's
//! bytes, the run directory, the step limit): ranks that disagree all stop with the same error
//! before anything is written.

use anyhow::{Result, bail};
use lockstep_train::workers::Workers;

/// The launcher variable that says this process is one rank of an MPI job, if any.
pub fn launched_by() -> Option<(&'static str, String)> {
    ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"]
        .into_iter()
        .find_map(|k| std::env::var(k).ok().map(|v| (k, v)))
}

/// The job's workers: MPI's world when launched by `mpirun`/`srun`, else this process alone.
pub fn start() -> Result<Workers> {
    match launched_by() {
        None => Ok(Workers::default()),
        Some((var, value)) => mpi_world(var, &value),
    }
}

#[cfg(feature = "mpi")]
fn mpi_world(var: &str, value: &str) -> Result<Workers> {
    use mpi::environment::Threading;
    let Some((universe, _)) = mpi::initialize_with_threading(Threading::Funneled) else {
        bail!(
            "launched under MPI ({var}={value}) but MPI could not be initialised\n  fix: launch with the mpirun of the Open MPI this lockstep was built against (`mpirun --version`)"
        );
    };
    let library = mpi::environment::library_version()
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("MPI")
        .trim()
        .to_string();
    Ok(Workers(std::sync::Arc::new(Mpi { universe, library })))
}

#[cfg(not(feature = "mpi"))]
fn mpi_world(var: &str, value: &str) -> Result<Workers> {
    bail!(
        "launched under MPI ({var}={value}) but this lockstep was built without MPI support\n  fix: build with the default features (`cargo build --release`, after scripts/setup.sh installs Open MPI), or run without mpirun"
    )
}

/// MPI's world communicator. The universe finalises MPI when the last handle drops.
#[cfg(feature = "mpi")]
struct Mpi {
    universe: mpi::environment::Universe,
    library: String,
}

#[cfg(feature = "mpi")]
impl lockstep_train::workers::Transport for Mpi {
    fn rank(&self) -> usize {
        use mpi::traits::Communicator;
        self.universe.world().rank() as usize
    }
    fn size(&self) -> usize {
        use mpi::traits::Communicator;
        self.universe.world().size() as usize
    }
    fn all_gather(&self, mine: &[u8]) -> Vec<u8> {
        use mpi::traits::{Communicator, CommunicatorCollectives};
        let world = self.universe.world();
        let mut all = vec![0u8; mine.len() * world.size() as usize];
        world.all_gather_into(mine, &mut all[..]);
        all
    }
    fn describe(&self) -> String {
        self.library.clone()
    }
    fn abort(&self, code: i32) {
        use mpi::traits::Communicator;
        self.universe.world().abort(code)
    }
}

/// Every rank compares the build and the command with the others (collective; one process:
/// nothing to compare).
pub fn agree_on_job(workers: &Workers, command: &str, config: Option<&[u8]>) -> Result<()> {
    if workers.size() == 1 {
        return Ok(());
    }
    // The executable's own bytes too: two builds of one commit (a dirty tree, other flags)
    // can compute differently.
    let exe = std::env::current_exe()
        .and_then(std::fs::read)
        .map(|b| lockstep_core::sha256_hex(&b)[..16].to_string())
        .unwrap_or_else(|e| format!("unreadable: {e}"));
    let build = format!(
        "lockstep {} (git {}, Cargo.lock {}, executable {exe})",
        env!("CARGO_PKG_VERSION"),
        option_env!("LOCKSTEP_GIT_SHA").unwrap_or("?"),
        &lockstep_core::sha256_hex(include_bytes!("../Cargo.lock"))[..12]
    );
    workers.agree(
        "the lockstep build",
        &build,
        "launch the same lockstep binary on every rank",
    )?;
    if let Some(bytes) = config {
        workers.agree(
            "the config file (SHA-256 of its bytes)",
            &lockstep_core::sha256_hex(bytes),
            "give every rank the same config file",
        )?;
    }
    workers.agree(
        "the command",
        command,
        "launch every rank with the same subcommand, run directory and --max-steps",
    )?;
    Ok(())
}

/// An error already printed on this rank (`fail`): `main` exits non-zero without printing it
/// again.
#[derive(Debug)]
pub struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reported above")
    }
}

impl std::error::Error for Reported {}

/// End a job of several ranks after `e`. A collective error (every rank found it: a
/// disagreement, an error every rank met alike, a non-finite loss — the same bits on every
/// rank) is printed by every rank, which then wait for each other before exiting: `mpirun`
/// kills the remaining ranks as soon as one exits non-zero, and each must have said it first.
/// Any other error on one rank aborts the job (`MPI_Abort`), since the other ranks would
/// otherwise wait for it in their next exchange forever. One process: `e` as it is.
pub fn fail(workers: &Workers, e: anyhow::Error) -> anyhow::Error {
    if workers.size() == 1 {
        return e;
    }
    let collective = matches!(
        e.downcast_ref::<lockstep_train::TrainError>(),
        Some(
            lockstep_train::TrainError::Workers { .. }
                | lockstep_train::TrainError::Everywhere(_)
                | lockstep_train::TrainError::NonFinite { .. }
        )
    );
    if collective {
        eprintln!("error: {e:#}");
        workers.0.all_gather(&[1]);
        return Reported.into();
    }
    eprintln!(
        "error (rank {} of {}): {e:#}\n  the job is aborted: the other ranks cannot go on without this one",
        workers.rank(),
        workers.size()
    );
    workers.0.abort(1);
    Reported.into()
}
