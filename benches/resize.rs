//! Pillow-exact BICUBIC resize speed: a 12 Mpx photo to the default 1024 px.
use criterion::{Criterion, criterion_group, criterion_main};
use image::RgbImage;
use rmac_native::image::resize::resize_bicubic;

fn resize(c: &mut Criterion) {
    let mut state = 0x1234_5678u32;
    let src = RgbImage::from_fn(4000, 3000, |x, y| {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        image::Rgb([(x / 16) as u8, (y / 12) as u8, (state >> 24) as u8])
    });
    let mut group = c.benchmark_group("resize");
    group.sample_size(10);
    group.bench_function("bicubic 4000x3000 -> 1024x768", |b| {
        b.iter(|| resize_bicubic(&src, 1024, 768))
    });
    group.finish();
}

criterion_group!(benches, resize);
criterion_main!(benches);
