//! Running a batch: the input list, the pipeline loop, progress, and the
//! distribution over MPI ranks (scheduling, streaming, resume settings), and
//! the lock that keeps two runs off one output.
pub mod inputs;
pub mod job;
pub mod local;
pub mod lock;
pub mod mpi;
pub mod protocol;
pub mod schedule;
pub mod settings;
