//! rmac-native: R-MAC descriptors (keras_rmac-compatible) from a hand-written VGG16.
//!
//! The data flows one way, one module per stage (README.md, "Architecture"),
//! and a module only calls the ones declared before it. Settings come in as
//! typed values: the library never reads flags or the environment.

// Plain values, file helpers and message words every stage uses.
pub mod files;
pub mod tensor;
pub mod text;

// Paths in: a list file or a folder.
pub mod inputs;

// 8-bit RGB, exactly as Pillow decodes and resizes it.
pub mod image;

// Videos in: frame listing and sampling, frame keys, FFmpeg decoding to 8-bit RGB.
pub mod video;

// The model: the 13 layers, weights files, importers.
pub mod vgg16;

// VGG16 to pool5 on a device (CPU kernels, WGSL on wgpu).
pub mod backend;

// pool5 to the vector: regions, pooling, PCA (+ its file and its fit), L2.
pub mod rmac;

// One loaded model: image → vector.
pub mod extractor;

// Vectors out and back in: JSONL, NPY, PostgreSQL; companion files, settings, locks.
pub mod store;

// Batches: the decode-ahead pipeline, the MPI coordinator, `extract`.
pub mod run;

// Using the vectors: top-k and query expansion, retrieval quality, timing.
pub mod search;
// Every vector against every other: the exact kNN graph and near-duplicate groups.
pub mod knn;
// Search as a service: the index and the model held in memory behind HTTP and a page.
pub mod serve;

pub mod evaluate;

pub mod bench;

pub use extractor::{ExtractConfig, ExtractError, Extractor};
