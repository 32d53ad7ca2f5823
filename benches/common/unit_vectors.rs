//! The synthetic unit vectors the `serve` benchmarks share (`benches/serve.rs`
//! writes them as the server's index, `benches/serve_pass.rs` scans them in
//! memory): the same seed gives the same vectors in both.

/// xorshift64*, in −1..1.
pub struct Rng(pub u64);

impl Rng {
    pub fn f(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    /// A vector of `dim` uniform values scaled to unit length (in f64).
    pub fn unit(&mut self, dim: usize) -> Vec<f32> {
        let v: Vec<f64> = (0..dim).map(|_| self.f() as f64).collect();
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter().map(|x| (x / n) as f32).collect()
    }
}
