//! Words for people: counts with the right plural.

/// `n` and the noun, singular for one (`1 image`, `2 images`, `0 images`).
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_is_singular_everything_else_plural() {
        assert_eq!(super::plural(1, "image"), "1 image");
        assert_eq!(super::plural(0, "image"), "0 images");
        assert_eq!(super::plural(2, "thread"), "2 threads");
    }
}
