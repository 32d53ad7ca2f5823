//! Images in: decoding with Pillow's `convert("RGB")` semantics, Pillow-exact
//! BICUBIC resizing, and the float preprocessing VGG16 expects.
pub mod decode;
pub mod preprocess;
pub mod resize;
