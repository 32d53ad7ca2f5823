//! Running a batch: the [`pipeline`] that turns jobs into vectors on one
//! process (decode ahead → backend → head; reused by every batch command),
//! the [`coordinator`] that spreads jobs over MPI ranks and writes every
//! result once (scheduling, transport, stats, progress), and the [`extract`]
//! orchestration on top (preflight, rank dispatch, summary).
pub mod coordinator;
pub mod extract;
pub mod pipeline;
