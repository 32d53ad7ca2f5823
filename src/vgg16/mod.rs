//! VGG16: the layer table, weights files and their importers.
pub mod import_h5;
pub mod import_onnx;
pub mod spec;
pub mod synthetic;
pub mod weights;
