//! Per-region max-pooling of the pool5 map (keras_rmac's RoiPooling, pool_list [1]).

use super::regions::Region;
use crate::tensor::Tensor3;

/// Per-channel max over rows `y .. y + h` and columns `x .. x + w`, clipped to
/// the map (as slicing clips in the reference). pool5 values are ReLU outputs
/// (≥ 0), so an empty region would give zeros.
pub fn region_max(map: &Tensor3, r: &Region) -> Vec<f32> {
    let (y1, x1) = (r.y.min(map.h), r.x.min(map.w));
    let (y2, x2) = ((r.y + r.h).min(map.h), (r.x + r.w).min(map.w));
    let mut out = vec![0.0f32; map.c];
    for y in y1..y2 {
        for x in x1..x2 {
            for (o, &v) in out.iter_mut().zip(map.pixel(y, x)) {
                *o = o.max(v);
            }
        }
    }
    out
}
