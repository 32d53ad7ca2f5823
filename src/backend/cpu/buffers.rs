//! Activation buffers kept between layers and images.
//!
//! One 1024×768 image allocates ~600 MB of layer outputs in turn (conv2_1
//! alone: 100 MB). Fresh allocations that large are `mmap`ed and every 4 KiB
//! page faults (and is zeroed by the kernel) on first touch, then goes back to
//! the OS on free: ~150k page faults per image. The forward pass instead takes
//! its output buffers from this pool and returns its inputs to it, so after the
//! first image the same few buffers are reused, already mapped.
//!
//! A buffer handed out keeps whatever it held before: every layer writes every
//! element of its output (`tests/cpu_fast.rs` poisons the pool with NaN to check).

use std::sync::Mutex;

/// Buffers kept at most; the forward pass needs three at a time (block 1's
/// band input and conv1_1 output, pool1) plus one in flight.
const KEEP: usize = 4;

#[derive(Default)]
pub struct Buffers {
    free: Mutex<Vec<Vec<f32>>>,
}

impl Buffers {
    /// A buffer of exactly `len` floats with unspecified (initialised)
    /// contents: the smallest kept one that is large enough, else the largest
    /// grown, else a new one.
    pub fn take(&self, len: usize) -> Vec<f32> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let fit = (0..free.len())
            .filter(|&i| free[i].capacity() >= len)
            .min_by_key(|&i| free[i].capacity());
        let pick = fit.or_else(|| (0..free.len()).max_by_key(|&i| free[i].capacity()));
        let mut v = match pick {
            Some(i) => free.swap_remove(i),
            None => Vec::new(),
        };
        drop(free);
        if v.len() >= len {
            v.truncate(len);
        } else {
            v.resize(len, 0.0);
        }
        v
    }

    /// Returns a buffer for reuse; the smallest is dropped when more than
    /// [`KEEP`] are held.
    pub fn give(&self, v: Vec<f32>) {
        if v.capacity() == 0 {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.push(v);
        if free.len() > KEEP {
            let smallest = (0..free.len())
                .min_by_key(|&i| free[i].capacity())
                .expect("non-empty");
            free.swap_remove(smallest);
        }
    }

    /// Fills every kept buffer with `value` (tests: NaN shows any output
    /// element a layer forgets to write).
    pub fn poison(&self, value: f32) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        for v in free.iter_mut() {
            v.fill(value);
        }
    }

    /// Bytes held for reuse.
    pub fn held_bytes(&self) -> usize {
        let free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.iter().map(|v| v.capacity() * 4).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_the_smallest_buffer_that_fits() {
        let b = Buffers::default();
        b.give(vec![1.0; 100]);
        b.give(vec![2.0; 10]);
        let v = b.take(8);
        assert_eq!((v.len(), v[0]), (8, 2.0));
        let w = b.take(200);
        assert_eq!(w.len(), 200);
        assert_eq!(w[0], 1.0, "the largest kept buffer is grown");
        assert_eq!(b.held_bytes(), 0);
        for n in 0..10 {
            b.give(vec![0.0; 10 + n]);
        }
        assert_eq!(b.free.lock().unwrap().len(), KEEP);
    }
}
