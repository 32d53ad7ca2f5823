//! VGG16: the layer table, weights files and their importers.
#[cfg(feature = "h5")]
pub mod import_h5;
pub mod import_onnx;
pub mod keras_file;
pub mod spec;
pub mod synthetic;
pub mod weights;
