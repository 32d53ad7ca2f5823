//! What each subcommand does, on top of the library; `main` only maps the
//! results to exit codes. One file per subcommand.
mod bench;
mod evaluate;
mod pca_fit;
mod extract;
mod neighbours;
mod search;
mod convert;
mod index;
mod weights;

pub use bench::bench;
pub use evaluate::evaluate;
pub use extract::extract;
pub use neighbours::neighbours;
pub use search::search;
pub use convert::convert;
pub use index::index;
pub use weights::{pca, weights};
