//! Writes the inputs of benches/mpi-scaling.sh into
//! `$RMAC_BENCH_DIR`: synthetic weights, `RMAC_BENCH_IMAGES` PNGs of 160–320 px
//! listed in list.txt, and ten times as many 40–70 px ones in tiny.txt.
use std::path::Path;

fn main() {
    let dir = std::env::var("RMAC_BENCH_DIR").expect("set RMAC_BENCH_DIR to the folder to write");
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir.join("img")).unwrap();
    let n: u32 = std::env::var("RMAC_BENCH_IMAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(48);
    rmac_native::vgg16::synthetic::vgg16(1)
        .save(&dir.join("vgg16.safetensors"))
        .unwrap();
    rmac_native::rmac::pca::synthetic(1)
        .save(&dir.join("pca.safetensors"))
        .unwrap();
    let (mut list, mut tiny) = (String::new(), String::new());
    for i in 0..10 * n {
        for (big, out) in [(true, &mut list), (false, &mut tiny)] {
            if big && i >= n {
                continue;
            }
            let (w, h) = if big {
                (160 + (i * 37) % 161, 160 + (i * 53) % 161)
            } else {
                (40 + (i * 7) % 31, 40 + (i * 13) % 31)
            };
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([
                    ((x * 7 + y * 3 + i) % 256) as u8,
                    ((x * y + i * 5) % 256) as u8,
                    ((x ^ y) % 256) as u8,
                ])
            });
            let p = dir
                .join("img")
                .join(format!("{}{i:04}.png", if big { "b" } else { "t" }));
            img.save(&p).unwrap();
            out.push_str(&format!("{}\n", p.display()));
        }
    }
    std::fs::write(dir.join("list.txt"), list).unwrap();
    std::fs::write(dir.join("tiny.txt"), tiny).unwrap();
}
