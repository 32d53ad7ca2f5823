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
