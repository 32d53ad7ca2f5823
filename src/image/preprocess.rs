//! 8-bit RGB → the float32 BGR tensor VGG16 was trained on (docs/contract.md#pipeline, step 3).

use crate::tensor::Tensor3;

/// How the mean is subtracted (docs/contract.md#pipeline, step 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preprocess {
    /// keras_rmac's own order: subtract 103.939, 116.779, 123.68 from R, G, B, then reverse to BGR.
    #[default]
    Keras,
    /// Caffe/Keras-applications order: to BGR first, then subtract B 103.939, G 116.779, R 123.68.
    Caffe,
}

impl Preprocess {
    pub const ALL: [Preprocess; 2] = [Preprocess::Keras, Preprocess::Caffe];

    /// The name the command line and the settings files use.
    pub fn name(self) -> &'static str {
        match self {
            Preprocess::Keras => "keras",
            Preprocess::Caffe => "caffe",
        }
    }

    pub fn parse(name: &str) -> Option<Preprocess> {
        Preprocess::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// The three means, in the order they are subtracted from channels 0, 1, 2 of
/// the RGB image, for each mode.
fn rgb_means(mode: Preprocess) -> [f32; 3] {
    match mode {
        // keras_rmac subtracts 103.939 from R (its channel 0) — a quirk we keep.
        Preprocess::Keras => [103.939, 116.779, 123.68],
        // R gets 123.68, G 116.779, B 103.939.
        Preprocess::Caffe => [123.68, 116.779, 103.939],
    }
}

/// HWC float32 in BGR order with the means subtracted.
pub fn to_bgr_tensor(img: &image::RgbImage, mode: Preprocess) -> Tensor3 {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let [mr, mg, mb] = rgb_means(mode);
    let mut data = Vec::with_capacity(w * h * 3);
    for px in img.as_raw().chunks_exact(3) {
        data.push(f32::from(px[2]) - mb);
        data.push(f32::from(px[1]) - mg);
        data.push(f32::from(px[0]) - mr);
    }
    Tensor3::from_vec(h, w, 3, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keras_mode_subtracts_in_rgb_order_then_reverses() {
        let img = image::RgbImage::from_raw(1, 1, vec![200, 100, 50]).unwrap();
        let t = to_bgr_tensor(&img, Preprocess::Keras);
        assert_eq!(
            t.data,
            vec![50.0 - 123.68, 100.0 - 116.779, 200.0 - 103.939]
        );
    }

    #[test]
    fn caffe_mode_reverses_then_subtracts_bgr_means() {
        let img = image::RgbImage::from_raw(1, 1, vec![200, 100, 50]).unwrap();
        let t = to_bgr_tensor(&img, Preprocess::Caffe);
        assert_eq!(
            t.data,
            vec![50.0 - 103.939, 100.0 - 116.779, 200.0 - 123.68]
        );
    }
}
