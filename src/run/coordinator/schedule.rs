//! Dynamic scheduling: the coordinator hands out the pending images in small
//! chunks, on request, so a rank that drew expensive images simply asks less
//! often. Chunks shrink as the list runs out ("guided" scheduling), so the
//! ranks finish close together.

use std::ops::Range;

/// The largest chunk handed out at once.
pub const MAX_CHUNK: usize = 16;

/// The bytes of paths in one chunk message (a chunk stops early when its paths
/// would exceed this; one path alone may take up to [`MAX_PATH_BYTES`]).
pub const MAX_CHUNK_BYTES: usize = 16 * 1024;

/// Paths longer than this are failed by the coordinator without being sent
/// anywhere (no file system opens a path this long).
pub const MAX_PATH_BYTES: usize = 8 * 1024;

/// Hands out positions `0..len` of the pending list in order, in chunks.
#[derive(Debug)]
pub struct Scheduler {
    next: usize,
    len: usize,
    workers: usize,
}

impl Scheduler {
    /// `workers`: how many ranks pull work (the coordinator's own pipeline included).
    pub fn new(len: usize, workers: usize) -> Self {
        Scheduler {
            next: 0,
            len,
            workers: workers.max(1),
        }
    }

    pub fn remaining(&self) -> usize {
        self.len - self.next
    }

    pub fn is_exhausted(&self) -> bool {
        self.next >= self.len
    }

    /// How many images the next chunk holds: a quarter of a fair share of what
    /// is left, between 1 and [`MAX_CHUNK`].
    pub fn chunk_len(&self) -> usize {
        self.remaining()
            .div_ceil(4 * self.workers)
            .clamp(1, MAX_CHUNK)
            .min(self.remaining())
    }

    /// The next chunk (empty when everything is handed out). `bytes(i)` is the
    /// size of position `i`'s path: the chunk stops before [`MAX_CHUNK_BYTES`]
    /// (but always holds at least one position).
    pub fn next_chunk(&mut self, bytes: impl Fn(usize) -> usize) -> Range<usize> {
        let start = self.next;
        let want = self.chunk_len();
        let mut end = start;
        let mut total = 0;
        while end < start + want {
            let b = bytes(end);
            if end > start && total + b > MAX_CHUNK_BYTES {
                break;
            }
            total += b;
            end += 1;
        }
        self.next = end;
        start..end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_every_position_once_in_shrinking_chunks() {
        let mut s = Scheduler::new(1000, 3);
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        loop {
            let c = s.next_chunk(|_| 10);
            if c.is_empty() {
                break;
            }
            sizes.push(c.len());
            seen.extend(c);
        }
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        assert_eq!(sizes[0], MAX_CHUNK);
        assert_eq!(*sizes.last().unwrap(), 1);
        assert!(sizes.windows(2).all(|w| w[1] <= w[0]), "{sizes:?}");
        assert!(s.is_exhausted());
    }

    #[test]
    fn long_paths_make_short_chunks_but_never_empty_ones() {
        let mut s = Scheduler::new(10, 1);
        assert_eq!(s.next_chunk(|_| MAX_CHUNK_BYTES / 3).len(), 3);
        assert_eq!(s.next_chunk(|_| MAX_PATH_BYTES * 4).len(), 1);
        assert_eq!(s.remaining(), 6);
    }
}
