//! Decoding matches Pillow 13.0.0's `Image.open(p).convert("RGB")` byte for byte.
//! Fixtures: tests/reference/make_image_fixtures.py.

mod common;

use std::path::{Path, PathBuf};

fn fixture_dir() -> PathBuf {
    common::fixtures().join("image")
}

/// (differing pixels, max abs diff) between two RGB buffers of the same size.
fn diff_stats(a: &[u8], b: &[u8]) -> (usize, u8) {
    assert_eq!(a.len(), b.len());
    let mut n = 0;
    let mut m = 0u8;
    for (pa, pb) in a.chunks_exact(3).zip(b.chunks_exact(3)) {
        let d = pa
            .iter()
            .zip(pb)
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap();
        if d > 0 {
            n += 1;
            m = m.max(d);
        }
    }
    (n, m)
}

use rmac_native::image::decode::{DecodeError, DecodeLimits, decode_rgb, load_rgb};

fn index() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture_dir().join("index.json")).unwrap()).unwrap()
}

fn read_fixture(rel: &str) -> Vec<u8> {
    std::fs::read(fixture_dir().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    let idx = index();
    let c = idx["decode"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap();
    read_fixture(c["file"].as_str().unwrap())
}

#[test]
fn every_fixture_matches_pillow_byte_for_byte() {
    let idx = index();
    let mut failures = Vec::new();
    let cases = idx["decode"].as_array().unwrap();
    assert!(cases.len() >= 30);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let bytes = read_fixture(c["file"].as_str().unwrap());
        let want = read_fixture(c["expected"].as_str().unwrap());
        let (w, h) = (
            c["width"].as_u64().unwrap() as u32,
            c["height"].as_u64().unwrap() as u32,
        );
        match decode_rgb(&bytes, &DecodeLimits::default()) {
            Ok(img) if img.dimensions() != (w, h) => {
                failures.push(format!("{name}: {:?} instead of {w}x{h}", img.dimensions()))
            }
            Ok(img) => {
                let (n, m) = diff_stats(img.as_raw(), &want);
                if n > 0 {
                    failures.push(format!(
                        "{name} ({}): {n} px differ, max abs diff {m}",
                        c["mode"]
                    ));
                }
            }
            Err(e) => failures.push(format!("{name}: error {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn shared_sample_jpg_matches_pillow() {
    use sha2::Digest;
    let idx = index();
    let s = &idx["sample_jpg"];
    let path = Path::new(s["path"].as_str().unwrap());
    if !path.exists() {
        eprintln!("skipped: {} not present", path.display());
        return;
    }
    let img = load_rgb(path, &DecodeLimits::default()).unwrap();
    assert_eq!(u64::from(img.width()), s["width"].as_u64().unwrap());
    assert_eq!(u64::from(img.height()), s["height"].as_u64().unwrap());
    let hex: String = sha2::Sha256::digest(img.as_raw())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex, s["sha256"].as_str().unwrap());
}

#[test]
fn exif_orientation_is_ignored() {
    let img = decode_rgb(&fixture_bytes("jpeg_exif_rot6"), &DecodeLimits::default()).unwrap();
    assert_eq!(img.dimensions(), (37, 23));
}

#[test]
fn format_comes_from_content_not_extension() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("really_a_png.jpg");
    std::fs::write(&p, fixture_bytes("png_rgb")).unwrap();
    let img = load_rgb(&p, &DecodeLimits::default()).unwrap();
    assert_eq!(img.as_raw(), &read_fixture("decode/png_rgb.rgb"));
}

fn err_text(r: Result<image::RgbImage, DecodeError>) -> String {
    match r {
        Ok(img) => panic!("decoded a {:?} image instead of failing", img.dimensions()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn truncated_files_are_errors_never_partial_images() {
    let dir = tempfile::tempdir().unwrap();
    let limits = DecodeLimits::default();
    let names = [
        "jpeg_420",
        "jpeg_444",
        "jpeg_progressive",
        "jpeg_gray",
        "jpeg_cmyk",
        "jpeg_restart",
        "png_rgb",
        "png_palette",
        "png_gray16",
        "gif_trns",
        "bmp_rgb",
        "tiff_rgb",
        "tiff_lzw",
        "webp_lossless",
        "webp_lossy",
    ];
    let mut decoded = Vec::new();
    for name in names {
        let full = fixture_bytes(name);
        let n = full.len();
        // Cuts inside the pixel data. (A PNG cut inside IEND, or a multi-frame file cut in a
        // later frame, still has all of its first image: Pillow decodes those, and so may we.)
        let mut cuts = vec![1, 2, 10, n / 4, n / 2, 3 * n / 4, n - 40];
        if name.starts_with("jpeg") {
            cuts.extend([n - 3, n - 2]); // n - 2: only the EOI marker is missing
        }
        for cut in cuts {
            let p = dir.path().join(format!("{name}_{cut}.img"));
            std::fs::write(&p, &full[..cut]).unwrap();
            if let Ok(img) = load_rgb(&p, &limits) {
                decoded.push(format!(
                    "{name} cut at {cut}/{n} decoded to {:?}",
                    img.dimensions()
                ));
            }
        }
    }
    assert!(decoded.is_empty(), "{}", decoded.join("\n"));
}

#[test]
fn truncated_jpeg_error_says_what_to_do() {
    let full = fixture_bytes("jpeg_420_101x77");
    let msg = err_text(decode_rgb(
        &full[..full.len() / 2],
        &DecodeLimits::default(),
    ));
    assert!(msg.contains("truncated or corrupt JPEG"), "{msg}");
    assert!(msg.contains("re-download"), "{msg}");
}

#[test]
fn corrupt_data_is_an_error() {
    let limits = DecodeLimits::default();
    // A PNG with a damaged IDAT (CRC and zlib stream no longer agree).
    let mut png = fixture_bytes("png_rgb");
    let idat = png.windows(4).position(|w| w == b"IDAT").unwrap();
    for b in &mut png[idat + 20..idat + 60] {
        *b ^= 0x5a;
    }
    assert!(decode_rgb(&png, &limits).is_err());
    // A JPEG whose entropy-coded data is replaced by a marker-free run of 0xFF 0x00 pairs
    // ends in "corrupt data" warnings: an error, not a grey-filled image.
    let mut jpg = fixture_bytes("jpeg_420_101x77");
    let sos = jpg.windows(2).rposition(|w| w == [0xFF, 0xDA]).unwrap();
    let start = sos + 2 + usize::from(u16::from_be_bytes([jpg[sos + 2], jpg[sos + 3]]));
    let end = jpg.len() - 2;
    for (i, b) in jpg[start..end].iter_mut().enumerate() {
        *b = if i % 2 == 0 { 0xFF } else { 0x00 };
    }
    let msg = err_text(decode_rgb(&jpg, &limits));
    assert!(msg.contains("corrupt"), "{msg}");
    // Garbage right after the SOI marker.
    let mut bad = vec![0xFF, 0xD8, 0xFF];
    bad.extend(std::iter::repeat_n(0x17u8, 200));
    assert!(decode_rgb(&bad, &limits).is_err());
}

#[test]
fn empty_missing_and_non_image_files_have_helpful_errors() {
    let dir = tempfile::tempdir().unwrap();
    let limits = DecodeLimits::default();
    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let msg = err_text(load_rgb(&empty, &limits));
    assert!(msg.contains("empty file"), "{msg}");

    let text = dir.path().join("notes.jpg");
    std::fs::write(&text, b"hello, this is a text file\n").unwrap();
    let msg = err_text(load_rgb(&text, &limits));
    assert!(msg.contains("not a recognised image format"), "{msg}");
    assert!(msg.contains("\"hello, t\""), "{msg}");

    let missing = dir.path().join("nope.png");
    let msg = err_text(load_rgb(&missing, &limits));
    assert!(msg.contains("not found"), "{msg}");
    assert!(matches!(
        load_rgb(&missing, &limits),
        Err(DecodeError::NotFound)
    ));

    let binary = [0u8, 1, 2, 3, 250, 251, 252, 253, 254];
    let msg = err_text(decode_rgb(&binary, &limits));
    assert!(msg.contains("00 01 02 03 fa fb fc fd"), "{msg}");
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// The fixture PNG with its IHDR claiming `w`×`h` (CRC fixed).
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut png = fixture_bytes("png_rgb");
    png[16..20].copy_from_slice(&w.to_be_bytes());
    png[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// The fixture JPEG with its SOF claiming `w`×`h`.
fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let mut jpg = fixture_bytes("jpeg_420");
    let sof = jpg.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
    jpg[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    jpg[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    jpg
}

#[test]
fn decompression_bombs_are_refused_from_the_header() {
    let limits = DecodeLimits::default();
    assert_eq!(limits.max_pixels, 178_956_970);
    for (what, bytes) in [
        ("png", png_claiming(60000, 60000)),
        ("jpeg", jpeg_claiming(60000, 60000)),
    ] {
        let t = std::time::Instant::now();
        let r = decode_rgb(&bytes, &limits);
        assert!(
            matches!(
                r,
                Err(DecodeError::TooLarge {
                    width: 60000,
                    height: 60000,
                    ..
                })
            ),
            "{what}: {:?}",
            r.map(|i| i.dimensions())
        );
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.contains("60000×60000 = 3.6 Gpx, over the 179 Mpx limit (--max-pixels)"),
            "{msg}"
        );
        assert!(
            t.elapsed().as_millis() < 500,
            "{what}: took {:?}",
            t.elapsed()
        );
    }
    // Just over the default limit (13379×13377 = 178,970,883 px) is refused too.
    assert!(matches!(
        decode_rgb(&jpeg_claiming(13379, 13377), &limits),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn small_limit_refuses_a_normal_image() {
    let small = DecodeLimits {
        max_pixels: 500,
        ..DecodeLimits::default()
    };
    for name in [
        "png_rgb",
        "jpeg_420",
        "gif_anim",
        "webp_lossy",
        "tiff_rgb",
        "bmp_rgb",
    ] {
        let r = decode_rgb(&fixture_bytes(name), &small);
        assert!(
            matches!(
                r,
                Err(DecodeError::TooLarge {
                    max_pixels: 500,
                    ..
                })
            ),
            "{name}"
        );
    }
    // Exactly at the limit is accepted.
    let exact = DecodeLimits {
        max_pixels: 37 * 23,
        ..DecodeLimits::default()
    };
    assert!(decode_rgb(&fixture_bytes("jpeg_420"), &exact).is_ok());
    assert!(decode_rgb(&fixture_bytes("png_rgb"), &exact).is_ok());
}

/// The fuzz target (fuzz/fuzz_targets/decode_resize.rs) as a plain, deterministic test over
/// mutated fixtures: bit flips, byte overwrites and truncations must give an image or an error,
/// never a panic, a hang or an unbounded allocation.
#[test]
fn mutated_fixtures_never_panic() {
    use rmac_native::image::resize::{resize_bicubic, target_size};
    let limits = DecodeLimits {
        max_pixels: 4_000_000,
        ..DecodeLimits::default()
    };
    let idx = index();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut runs = 0;
    for c in idx["decode"].as_array().unwrap() {
        let orig = read_fixture(c["file"].as_str().unwrap());
        for round in 0..40 {
            let mut m = orig.clone();
            match round % 4 {
                0 => {
                    let i = (next() as usize) % m.len();
                    m[i] ^= 1 << (next() % 8);
                }
                1 => {
                    for _ in 0..1 + next() % 8 {
                        let i = (next() as usize) % m.len();
                        m[i] = next() as u8;
                    }
                }
                2 => {
                    // Header region: sizes, tables, chunk lengths.
                    let i = (next() as usize) % m.len().min(64);
                    m[i] = next() as u8;
                }
                _ => {
                    let cut = (next() as usize) % m.len();
                    m.truncate(cut);
                }
            }
            runs += 1;
            if let Ok(img) = decode_rgb(&m, &limits) {
                let (w, h) = target_size(img.width(), img.height(), 64);
                assert_eq!(resize_bicubic(&img, w, h).dimensions(), (w, h));
            }
        }
    }
    assert!(runs > 1000);
}
