//! Running a batch: the [`pipeline`] that turns jobs into vectors on one
//! process (decode ahead → backend → head; reused by every batch command),
//! the [`coordinator`] that spreads jobs over MPI ranks and writes every
//! result once (scheduling, transport, stats, progress), and the [`extract`]
//! orchestration on top (preflight, rank dispatch, summary); [`ranks`] starts
//! any distributed command as one process or rank k of N, and [`knn`] is the
//! all-pairs job over ranks with checkpoints.
pub mod coordinator;
pub mod extract;
pub mod knn;
pub mod pipeline;
pub mod ranks;
