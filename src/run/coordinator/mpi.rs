//! MPI: start-up, the launcher/library guard, threads per rank, and the
//! [`Transport`](super::transport::Transport) over `MPI_COMM_WORLD`.
//!
//! Built with the `mpi` feature. Without it (or when started without a
//! launcher, as an MPI singleton) the run is one rank; a launcher that started
//! several copies of a binary that cannot talk to each other is refused, since
//! the copies would each do the whole list into the same file.

use anyhow::{Result, bail};

/// Environment variables by which launchers announce the number of processes
/// they started (Open MPI, MPICH/Intel MPI hydra and Slurm PMI-2, PMIx, MVAPICH, srun).
pub const LAUNCHER_SIZE_VARS: [&str; 5] = [
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
    "PMIX_SIZE",
    "MV2_COMM_WORLD_SIZE",
    "SLURM_STEP_NUM_TASKS",
];

/// Environment variables by which launchers announce this process's rank among
/// the ranks on its node (Open MPI, MPICH/Hydra, PMI, Slurm).
pub const LOCAL_RANK_VARS: [&str; 4] = [
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "MPI_LOCALRANKID",
    "PMI_LOCAL_RANK",
    "SLURM_LOCALID",
];

/// Further variables only a launcher sets: with none of these and none of the
/// above, the process was not started by one, and MPI is not initialised at
/// all (its start-up — hwloc reading every PCI device — costs up to seconds).
pub const LAUNCHER_PRESENCE_VARS: [&str; 6] = [
    "OMPI_COMM_WORLD_RANK",
    "PMI_RANK",
    "PMI_FD",
    "PMIX_RANK",
    "PMI_PORT",
    "SLURM_PROCID",
];

/// What the launcher announced in its environment variables, read once by
/// the caller (the command line's settings layer): the library never reads
/// the environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Launcher {
    /// The first of [`LAUNCHER_SIZE_VARS`] that says more than one process
    /// was started, and its value.
    pub size: Option<(&'static str, usize)>,
    /// This process's rank among the ranks on its node ([`LOCAL_RANK_VARS`]);
    /// ranks on one node spread over its GPUs by it.
    pub local_rank: Option<usize>,
    /// Whether any launcher variable is set at all (see [`LAUNCHER_PRESENCE_VARS`]).
    pub present: bool,
}

/// Refuses to run as one of several independent copies (docs/toolchain.md, pitfall 2).
pub fn guard_launcher(world_size: usize, launcher: &Launcher) -> Result<()> {
    if world_size == 1
        && let Some((var, n)) = launcher.size
    {
        let why = if cfg!(feature = "mpi") {
            "this binary's MPI library is not the one the launcher belongs to (e.g. built with MPICH, started by Open MPI's mpiexec)"
        } else {
            "this binary was built without MPI (cargo feature `mpi`)"
        };
        bail!(
            "the launcher started {n} processes ({var}={n}) but each of them sees a world of 1: {why}. \
                 They would each do the whole list into the same output. Use the mpiexec of the MPI the binary was built with \
                 (`ldd $(which rmac-native) | grep mpi`), or rebuild with `--features mpi` against the cluster's MPI"
        );
    }
    Ok(())
}

/// The CPUs this process may run on (`Cpus_allowed_list` of /proc/self/status), as text.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
fn cpu_set() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Cpus_allowed_list:")
                    .map(|v| v.trim().to_owned())
            })
        })
        .unwrap_or_default()
}

/// Default CPU threads per rank: the cores this process may use, divided among
/// the ranks on this node that share the same CPU set. A launcher that binds
/// each rank to its own cores (Open MPI's default for -np ≤ 2, Slurm's
/// task/affinity) has already divided them; unbound ranks share the node.
/// So ranks × threads never exceeds the cores.
pub fn default_threads(sharing_ranks: usize) -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (cores / sharing_ranks.max(1)).max(1)
}

#[cfg(feature = "mpi")]
pub use with_mpi::Mpi;

#[cfg(feature = "mpi")]
mod with_mpi {
    use super::*;
    use crate::run::coordinator::protocol::Tag;
    use crate::run::coordinator::schedule::{MAX_CHUNK_BYTES, MAX_PATH_BYTES};
    use crate::run::coordinator::transport::Transport;
    use mpi::Threading;
    use mpi::environment::Universe;
    use mpi::topology::{Communicator, SimpleCommunicator};
    use mpi::traits::*;

    /// `MPI_COMM_WORLD`, initialised for one communication thread per rank.
    pub struct Mpi {
        world: SimpleCommunicator,
        rank: usize,
        size: usize,
        // Dropped last: finalises MPI (after the buffered sends have left).
        universe: Universe,
    }

    impl Mpi {
        /// Initialises MPI (as a singleton without a launcher) and checks the launcher.
        pub fn init(launcher: &Launcher) -> Result<Self> {
            let Some((mut universe, _level)) = mpi::initialize_with_threading(Threading::Funneled)
            else {
                bail!("MPI was already initialised");
            };
            let world = universe.world();
            let (rank, size) = (world.rank() as usize, world.size() as usize);
            guard_launcher(size, launcher)?;
            if rank == 0 && size > 1 {
                // Rank 0 never waits on a send: each worker has at most one chunk in flight,
                // plus the START and FINISH words.
                let per_worker = MAX_CHUNK_BYTES.max(MAX_PATH_BYTES + 16) + 4096;
                universe.set_buffer_size((size - 1) * per_worker);
            }
            Ok(Mpi {
                world,
                rank,
                size,
                universe,
            })
        }

        /// Ranks on this node that share this rank's CPU set (for [`default_threads`]).
        pub fn sharing_ranks(&self) -> usize {
            if self.size == 1 {
                return 1;
            }
            let node = self.world.split_shared(self.rank as i32);
            let mine = fnv1a(cpu_set().as_bytes());
            let mut all = vec![0u64; node.size() as usize];
            node.all_gather_into(&mine, &mut all[..]);
            all.iter().filter(|&&h| h == mine).count()
        }

        /// Ranks on this node.
        pub fn node_ranks(&self) -> usize {
            self.world.split_shared(self.rank as i32).size() as usize
        }

        pub fn host(&self) -> String {
            mpi::environment::processor_name()
                .unwrap_or_default()
                .trim_end_matches('\0')
                .to_owned()
        }

        pub fn library(&self) -> String {
            let v = mpi::environment::library_version().unwrap_or_default();
            v.trim_end_matches('\0')
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        }

        /// Ends the whole job now (every rank), with `code`.
        pub fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }

        /// Keeps the universe alive until `self` is dropped.
        pub fn universe(&self) -> &Universe {
            &self.universe
        }
    }

    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        })
    }

    impl Transport for Mpi {
        fn rank(&self) -> usize {
            self.rank
        }

        fn size(&self) -> usize {
            self.size
        }

        fn poll(&mut self) -> Result<Option<(usize, Tag, Vec<u8>)>> {
            // Only this thread talks MPI, so a plain probe followed by the receive is race-free.
            let Some(status) = self.world.any_process().immediate_probe() else {
                return Ok(None);
            };
            let from = status.source_rank();
            let (bytes, _) = self
                .world
                .process_at_rank(from)
                .receive_vec_with_tag::<u8>(status.tag());
            Ok(Some((from as usize, status.tag(), bytes)))
        }

        fn send(&mut self, to: usize, tag: Tag, bytes: &[u8]) -> Result<()> {
            let dest = self.world.process_at_rank(to as i32);
            if self.rank == 0 {
                // Buffered: the coordinator never waits for a worker to post its receive
                // (a worker may be sending a result to us at the same moment).
                dest.buffered_send_with_tag(bytes, tag);
            } else {
                dest.send_with_tag(bytes, tag);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_divide_the_shared_cores() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(default_threads(1), cores);
        assert_eq!(default_threads(cores * 4), 1);
    }

    #[test]
    fn cpu_set_is_read() {
        assert!(!cpu_set().is_empty());
    }
}
