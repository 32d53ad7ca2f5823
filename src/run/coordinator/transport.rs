//! Point-to-point messages between ranks: MPI ([`super::mpi::Mpi`]) or, for
//! one process, [`NoTransport`].

use super::protocol::Tag;
use anyhow::{Result, bail, ensure};

/// Point-to-point messages between ranks (MPI, or nothing for one rank).
pub trait Transport {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// A message that has arrived, if any: (source rank, tag, bytes). Never blocks.
    fn poll(&mut self) -> Result<Option<(usize, Tag, Vec<u8>)>>;
    /// Sends without waiting for the receiver to post a receive.
    fn send(&mut self, to: usize, tag: Tag, bytes: &[u8]) -> Result<()>;
}

/// One rank, no one to talk to.
pub struct NoTransport;

impl Transport for NoTransport {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn poll(&mut self) -> Result<Option<(usize, Tag, Vec<u8>)>> {
        Ok(None)
    }
    fn send(&mut self, to: usize, _tag: Tag, _bytes: &[u8]) -> Result<()> {
        bail!("no rank {to} in a one-process run")
    }
}

/// Waits (polling, not spinning) for one message with `tag` from rank 0.
pub fn wait_for<T: Transport + ?Sized>(t: &mut T, tag: Tag) -> Result<Vec<u8>> {
    loop {
        if let Some((from, got, bytes)) = t.poll()? {
            ensure!(
                from == 0 && got == tag,
                "unexpected message (tag {got}) from rank {from} while waiting for tag {tag}"
            );
            return Ok(bytes);
        }
        std::thread::sleep(super::POLL_MAX);
    }
}
