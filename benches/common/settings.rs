//! The benchmarks' settings, read from the environment at their edge (the
//! library never reads it).

/// `name`'s value, or `default` when it is not set.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// `name`'s comma-separated numbers, or `default`'s.
pub fn list(name: &str, default: &str) -> Vec<usize> {
    env_or(name, default)
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}: comma-separated numbers"))
        })
        .collect()
}
