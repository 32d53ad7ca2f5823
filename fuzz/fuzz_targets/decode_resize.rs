//! decode_rgb → target_size(…, 64) → resize_bicubic on arbitrary bytes.
//! Run: `cargo +nightly fuzz run decode_resize fuzz/corpus/decode_resize ../tests/fixtures/image/decode`
//! (from fuzz/'s parent). Decoding is bounded to 4 Mpx so no input can allocate without limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmac_native::image::decode::{DecodeLimits, decode_rgb};
use rmac_native::image::resize::{resize_bicubic, target_size};

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits {
        max_pixels: 4_000_000,
        ..DecodeLimits::default()
    };
    if let Ok(img) = decode_rgb(data, &limits) {
        assert!(img.width() > 0 && img.height() > 0);
        assert!(u64::from(img.width()) * u64::from(img.height()) <= limits.max_pixels);
        let (w, h) = target_size(img.width(), img.height(), 64);
        // ceil(S / max * max) may overshoot S by one (the contract keeps that).
        assert!(w.max(h) <= 65 && w > 0 && h > 0, "{:?} -> {w}x{h}", img.dimensions());
        let out = resize_bicubic(&img, w, h);
        assert_eq!(out.dimensions(), (w, h));
    }
});
