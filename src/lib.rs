//! rmac-native: R-MAC descriptors (keras_rmac-compatible) from a hand-written VGG16.
//!
//! The data flows one way, one module per stage:
//! paths → [`image`] (decode, resize, preprocess) → [`backend`] (VGG16 to pool5)
//! → [`rmac`] (regions, pooling, PCA, L2) → [`sink`] (JSONL …).
pub mod backend;
pub mod extractor;
pub mod image;
pub mod rmac;
pub mod tensor;
pub mod vgg16;

pub use extractor::{ExtractConfig, ExtractError, Extractor};
pub mod bench;
pub mod cli;
pub mod commands;
pub mod evaluate;
pub mod run;
pub mod search;
pub mod sink;
