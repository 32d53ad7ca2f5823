//! A plain HWC float32 feature map: the value that flows between the stages.

/// Height × width × channels, row-major with channels innermost (NHWC without N).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor3 {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: Vec<f32>,
}

impl Tensor3 {
    pub fn zeros(h: usize, w: usize, c: usize) -> Self {
        Tensor3 {
            h,
            w,
            c,
            data: vec![0.0; h * w * c],
        }
    }

    /// An `h×w×c` tensor in `storage`, reused as it is: elements it already
    /// holds keep their values (the caller overwrites them all), new ones are 0.
    pub fn reuse(h: usize, w: usize, c: usize, mut storage: Vec<f32>) -> Self {
        let n = h * w * c;
        if storage.len() >= n {
            storage.truncate(n);
        } else {
            storage.resize(n, 0.0);
        }
        Tensor3 {
            h,
            w,
            c,
            data: storage,
        }
    }

    /// Wraps `data` (length must be `h·w·c`).
    pub fn from_vec(h: usize, w: usize, c: usize, data: Vec<f32>) -> Self {
        assert_eq!(
            data.len(),
            h * w * c,
            "tensor data length does not match {h}×{w}×{c}"
        );
        Tensor3 { h, w, c, data }
    }

    /// Value at row `y`, column `x`, channel `ch`.
    #[inline]
    pub fn at(&self, y: usize, x: usize, ch: usize) -> f32 {
        self.data[(y * self.w + x) * self.c + ch]
    }

    /// The `c` channels of pixel (`y`, `x`).
    #[inline]
    pub fn pixel(&self, y: usize, x: usize) -> &[f32] {
        let at = (y * self.w + x) * self.c;
        &self.data[at..at + self.c]
    }
}
