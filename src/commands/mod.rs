//! What each subcommand does: resolve its flags ([`crate::cli::resolve`]),
//! call the library, print. `main` only maps the results to exit codes. One
//! file per subcommand.
mod bench;
mod convert;
mod dba;
mod dedup;
mod evaluate;
mod extract;
mod index;
mod knn;
mod locate;
mod neighbours;
mod pca_fit;
mod search;
mod serve;
mod weights;

pub use bench::bench;
pub use convert::convert;
pub use dba::dba;
pub use dedup::dedup;
pub use evaluate::evaluate;
pub use extract::extract;
pub use index::index;
pub use knn::knn;
pub use neighbours::neighbours;
pub use search::search;
pub use serve::serve;
pub use weights::{pca, weights};
