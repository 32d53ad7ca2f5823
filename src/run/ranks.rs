//! Running a command as one process or as rank k of N: MPI start-up when a
//! launcher started us, the one way a rank's error or panic ends the job, and
//! what a rank knows about its place. Shared by every distributed command
//! (`extract`, `knn`).

use crate::run::coordinator::mpi::Launcher;
use crate::run::coordinator::transport::Transport;
use anyhow::Result;

/// What this process knows about its place in the job.
pub struct Place {
    pub host: String,
    /// Ranks on this node sharing this rank's CPUs (divides the default threads).
    pub sharing_ranks: usize,
    pub node_ranks: usize,
    pub library: String,
}

/// How a rank's part ended.
pub enum RankEnd<R> {
    /// Rank 0, the job ran.
    Coordinator(R),
    /// Rank 0, the job could not start (the other ranks were told to stop).
    Stopped(anyhow::Error),
    /// Another rank: done (the code is rank 0's exit status; the rank itself exits 0).
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    Worker(i32),
}

/// Runs `body` as a plain process (no launcher: MPI is not initialised), an
/// MPI singleton, or rank k of N; returns rank 0's result. Other ranks exit
/// the process when their part is done.
pub fn on_ranks<R, F>(launcher: &Launcher, mut body: F) -> Result<R>
where
    F: FnMut(&mut dyn Transport, &Place) -> Result<RankEnd<R>>,
{
    #[cfg(feature = "mpi")]
    if launcher.present {
        use crate::run::coordinator::transport::Transport as _;
        use std::panic::{AssertUnwindSafe, catch_unwind};
        let mut mpi = crate::run::coordinator::mpi::Mpi::init(launcher)?;
        let size = mpi.size();
        let place = Place {
            host: mpi.host(),
            sharing_ranks: mpi.sharing_ranks(),
            node_ranks: mpi.node_ranks(),
            library: mpi.library(),
        };
        let ended = catch_unwind(AssertUnwindSafe(|| body(&mut mpi, &place)));
        return match ended {
            Ok(Ok(RankEnd::Coordinator(result))) => Ok(result),
            Ok(Ok(RankEnd::Stopped(e))) => Err(e),
            Ok(Ok(RankEnd::Worker(code))) => {
                drop(mpi); // MPI_Finalize
                // Rank 0 carries the job's exit status (mpiexec returns the first non-zero one).
                // A worker exiting non-zero first could make the launcher kill rank 0 before
                // it has printed why the job stopped or how it ended.
                let _ = code;
                std::process::exit(0)
            }
            // With other ranks waiting on this one, an error or a panic must end the whole
            // job (docs/toolchain.md, pitfall 1: unwinding into MPI_Finalize would hang it).
            Ok(Err(e)) if size > 1 => {
                eprintln!(
                    "error: rank {} of {size} ({}): {e:#}; stopping the job (rerun the same command to resume)",
                    mpi.rank(),
                    place.host
                );
                mpi.abort(1)
            }
            Err(_) if size > 1 => {
                eprintln!(
                    "error: rank {} of {size} ({}) panicked (message above); stopping the job",
                    mpi.rank(),
                    place.host
                );
                mpi.abort(101)
            }
            Ok(Err(e)) => Err(e),
            Err(panic) => std::panic::resume_unwind(panic),
        };
    }
    crate::run::coordinator::mpi::guard_launcher(1, launcher)?;
    let place = Place {
        host: String::new(),
        sharing_ranks: 1,
        node_ranks: 1,
        library: String::new(),
    };
    match body(&mut crate::run::coordinator::transport::NoTransport, &place)? {
        RankEnd::Coordinator(result) => Ok(result),
        RankEnd::Stopped(e) => Err(e),
        RankEnd::Worker(_) => unreachable!("one process is rank 0"),
    }
}
