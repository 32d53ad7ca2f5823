//! docs/contract.md#pipeline, step 1: bytes → 8-bit RGB exactly as Pillow 13.0.0's
//! `Image.open(p).convert("RGB")`.
//!
//! * JPEG goes through libjpeg-turbo's decoder (the `mozjpeg-sys` crate builds it
//!   from source and links it statically): ISLOW IDCT, fancy upsampling, block
//!   smoothing, the same defaults Pillow's bundled libjpeg-turbo uses, so the
//!   pixels are the same bytes. CMYK/YCCK JPEGs are converted with Pillow's
//!   rules (Adobe-inverted CMYK, then `cmyk2rgb`). The image crate's own JPEG
//!   decoder (zune-jpeg) is *not* byte-exact with libjpeg-turbo (see
//!   tests/image_decode.rs, `jpeg_matrix_*`).
//! * Every other format goes through the image crate, mapped to Pillow's modes:
//!   gray replicated, palette expanded (the palette colour of a transparent
//!   index is kept), alpha dropped (not composited), 16-bit gray clipped to 255
//!   (Pillow's `I;16` → `RGB`), other 16-bit data reduced to its most
//!   significant byte (Pillow's `RGB;16B`/`RGBA;16B`/`LA;16B` unpackers).
//! * EXIF orientation is ignored; multi-frame files give their first frame.
//! * Truncated or corrupt data is an error, never a partial image; the pixel
//!   count is checked against [`DecodeLimits`] from the header, before any pixel
//!   buffer exists. A JPEG that lacks only its final EOI marker is an error too:
//!   Pillow 13.0.0 rejects it ("image file is truncated") for 12 of the 13 JPEG
//!   fixtures (tests/image_decode.rs). A progressive JPEG with more than
//!   [`MAX_JPEG_SCANS`] scans is refused (a CPU bomb).
//! * Reading a file ([`load_rgb`]) is bounded too: it is opened without blocking
//!   (a FIFO named `x.jpg` cannot stall the run), must be a regular file (not a
//!   FIFO, device, socket or folder), may hold at most
//!   [`DecodeLimits::max_file_bytes`], and its first [`HEAD_BYTES`] are read and
//!   the image size checked before the rest is read.
//!
//! Peak memory for one input at the default limits: the file (≤ 512 MiB), the
//! decoder's buffer (3–4 bytes per pixel for 8-bit data, up to 8 for 16-bit, of
//! at most `max_pixels` = 179 Mpx) and the RGB copy (3 bytes per pixel): at most
//! about 1.3 GB for a 179 Mpx 8-bit RGBA image (2 GB for 16-bit), whatever its
//! file size. Measured with the model loaded (tests/faults.rs and README): a
//! 3 GB file 353 MiB peak RSS, a 41-byte GIF claiming 13000² 423 MiB, a real
//! 13000² RGB PNG 741 MiB.

use std::io::{Cursor, Read};
use std::path::Path;

use image::{DynamicImage, ImageFormat, ImageReader, RgbImage};

/// Pillow's `Image.MAX_IMAGE_PIXELS`: above this Pillow warns (DecompressionBombWarning).
pub const PILLOW_WARN_PIXELS: u64 = 89_478_485;
/// `2 * MAX_IMAGE_PIXELS`: above this Pillow refuses (DecompressionBombError).
pub const PILLOW_MAX_PIXELS: u64 = 2 * PILLOW_WARN_PIXELS;

/// The default [`DecodeLimits::max_file_bytes`]: 512 MiB (a 179 Mpx image is
/// ~540 MB uncompressed in 8-bit RGB; compressed files are far smaller).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 512 << 20;

/// Bytes read before the image size is checked (the rest is read only after).
pub const HEAD_BYTES: usize = 64 << 10;

/// Progressive JPEG scans accepted (real files have about 10; each scan costs a
/// pass over the whole coefficient buffer).
pub const MAX_JPEG_SCANS: i32 = 1000;

/// How large an image may be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest width × height accepted (checked from the header, before decoding).
    pub max_pixels: u64,
    /// Largest file read (checked before reading; `--max-file-bytes`).
    pub max_file_bytes: u64,
    /// How long reading, decoding and resizing one image may take before the
    /// batch gives up on it (`--decode-timeout`; enforced by the run's pipeline,
    /// which cannot be stalled by a file system that never answers).
    pub max_time: std::time::Duration,
}

/// The default [`DecodeLimits::max_time`]: far beyond the ~2 s the largest
/// accepted image takes here, short enough that a stuck file is noticed.
pub const DEFAULT_DECODE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_pixels: PILLOW_MAX_PIXELS,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_time: DEFAULT_DECODE_TIMEOUT,
        }
    }
}

/// Why an image could not be decoded. The caller adds the path.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("file not found")]
    NotFound,
    #[error(
        "not a regular file (it is {kind}); rmac-native reads image files only — list the file itself"
    )]
    NotRegular { kind: &'static str },
    #[error(
        "the file is {} bytes, over the {}-byte limit (--max-file-bytes); refusing to read it",
        bytes,
        max
    )]
    FileTooLarge { bytes: u64, max: u64 },
    #[error("cannot read the file: {0}")]
    Io(#[source] std::io::Error),
    #[error("empty file (0 bytes); re-export or re-download it")]
    Empty,
    #[error("not a recognised image format (the file starts with {head}; is it really an image?)")]
    UnknownFormat { head: String },
    #[error("unsupported image type: {0}; convert it to PNG or JPEG first")]
    Unsupported(String),
    #[error(
        "image is {width}×{height} = {}, over the {} limit (--max-pixels); refusing to decode",
        fmt_pixels(u64::from(*width) * u64::from(*height)),
        fmt_pixels(*max_pixels)
    )]
    TooLarge {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    #[error("image has a zero width or height ({width}×{height})")]
    ZeroSize { width: u32, height: u32 },
    #[error("truncated or corrupt {format} data: {detail}; re-export or re-download the file")]
    Corrupt {
        format: &'static str,
        detail: String,
    },
}

/// "3.6 Gpx", "179 Mpx", "12 kpx", "100 px".
fn fmt_pixels(n: u64) -> String {
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.1} Gpx", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.0} Mpx", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.0} kpx", f / 1e3)
    } else {
        format!("{n} px")
    }
}

/// The first bytes of a file, for an error message: printable ASCII as text, else hex.
fn describe_head(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(8)];
    if head.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("\"{}\"", String::from_utf8_lossy(head))
    } else {
        head.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Gif => "GIF",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Tiff => "TIFF",
        ImageFormat::WebP => "WebP",
        _ => "image",
    }
}

fn check_size(width: u32, height: u32, limits: &DecodeLimits) -> Result<(), DecodeError> {
    if width == 0 || height == 0 {
        return Err(DecodeError::ZeroSize { width, height });
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(DecodeError::TooLarge {
            width,
            height,
            max_pixels: limits.max_pixels,
        });
    }
    Ok(())
}

/// Reads `path` and decodes it with [`decode_rgb`] (the format is taken from the content,
/// not the extension).
pub fn load_rgb(path: &Path, limits: &DecodeLimits) -> Result<RgbImage, DecodeError> {
    let bytes = read_image_file(path, limits)?;
    decode_rgb(&bytes, limits)
}

/// The bytes of an image file, read safely: opened without blocking, a regular
/// file, at most `max_file_bytes`, and its size checked from the first
/// [`HEAD_BYTES`] before the rest is read.
pub fn read_image_file(path: &Path, limits: &DecodeLimits) -> Result<Vec<u8>, DecodeError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => DecodeError::NotFound,
        _ => DecodeError::Io(e),
    };
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if let Some(kind) = crate::files::non_regular_kind(meta.file_type()) {
        return Err(DecodeError::NotRegular { kind });
    }
    let max = limits.max_file_bytes;
    if meta.len() > max {
        return Err(DecodeError::FileTooLarge {
            bytes: meta.len(),
            max,
        });
    }
    let mut bytes = Vec::with_capacity((meta.len() as usize).min(HEAD_BYTES));
    (&mut file)
        .take(HEAD_BYTES as u64)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() == HEAD_BYTES {
        if let Some((w, h)) = header_size(&bytes) {
            check_size(w, h, limits)?;
        }
        // At most one byte past the limit: a file that grew while being read is refused.
        (&mut file)
            .take(max + 1 - HEAD_BYTES as u64)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > max {
            return Err(DecodeError::FileTooLarge {
                bytes: bytes.len() as u64,
                max,
            });
        }
    }
    Ok(bytes)
}

/// The image size from the first bytes of a file, when they hold it.
fn header_size(head: &[u8]) -> Option<(u32, u32)> {
    match image::guess_format(head).ok()? {
        ImageFormat::Jpeg => jpeg_sof_size(head),
        f @ (ImageFormat::Png
        | ImageFormat::Gif
        | ImageFormat::Bmp
        | ImageFormat::Tiff
        | ImageFormat::WebP) => ImageReader::with_format(Cursor::new(head), f)
            .into_dimensions()
            .ok(),
        _ => None,
    }
}

/// (width, height) from a JPEG's SOF marker, if it is within `head`.
fn jpeg_sof_size(head: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2;
    while i + 4 <= head.len() {
        if head[i] != 0xFF {
            return None;
        }
        let marker = head[i + 1];
        if marker == 0xFF {
            i += 1; // fill byte
            continue;
        }
        let len = usize::from(u16::from_be_bytes([head[i + 2], head[i + 3]]));
        let sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if sof {
            let b = head.get(i + 5..i + 9)?;
            let h = u32::from(u16::from_be_bytes([b[0], b[1]]));
            let w = u32::from(u16::from_be_bytes([b[2], b[3]]));
            return Some((w, h));
        }
        if marker == 0xDA || len < 2 {
            return None; // scan data before any SOF: malformed, the decoder will say so
        }
        i += 2 + len;
    }
    None
}

/// Decodes an image file's bytes to 8-bit RGB with Pillow's `open(…).convert("RGB")` semantics.
pub fn decode_rgb(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let format = image::guess_format(bytes).map_err(|_| DecodeError::UnknownFormat {
        head: describe_head(bytes),
    })?;
    match format {
        ImageFormat::Jpeg => jpeg::decode(bytes, limits),
        ImageFormat::Png
        | ImageFormat::Gif
        | ImageFormat::Bmp
        | ImageFormat::Tiff
        | ImageFormat::WebP => decode_other(bytes, format, limits),
        other => Err(DecodeError::Unsupported(format!(
            "{} files",
            other
                .extensions_str()
                .first()
                .map_or("this kind of".to_owned(), |e| e.to_uppercase())
        ))),
    }
}

fn image_error(format: ImageFormat, e: image::ImageError) -> DecodeError {
    match e {
        image::ImageError::Unsupported(u) => DecodeError::Unsupported(u.to_string()),
        image::ImageError::Limits(l) => {
            DecodeError::Unsupported(format!("over a decoder limit: {l}"))
        }
        other => DecodeError::Corrupt {
            format: format_name(format),
            detail: other.to_string(),
        },
    }
}

/// PNG IHDR: (bit depth, colour type), if `bytes` is a PNG with a readable IHDR.
fn png_ihdr(bytes: &[u8]) -> Option<(u8, u8)> {
    (bytes.len() >= 26 && &bytes[12..16] == b"IHDR").then(|| (bytes[24], bytes[25]))
}

fn decode_other(
    bytes: &[u8],
    format: ImageFormat,
    limits: &DecodeLimits,
) -> Result<RgbImage, DecodeError> {
    let err = |e| image_error(format, e);
    // Header only: no pixel buffer yet.
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(err)?;
    check_size(width, height, limits)?;

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut l = image::Limits::default();
    l.max_image_width = Some(width);
    l.max_image_height = Some(height);
    // Up to 16-bit RGBA (8 bytes per pixel) plus slack; the pixel count is already bounded.
    l.max_alloc = Some((u64::from(width) * u64::from(height) * 8 + (64 << 20)).max(512 << 20));
    reader.limits(l);
    // A decoder panic on hostile input is an error for this image, not a crash of the run.
    let img = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.decode()))
        .map_err(|_| DecodeError::Corrupt {
            format: format_name(format),
            detail: "the decoder panicked".into(),
        })?
        .map_err(err)?;

    // 16-bit grayscale PNG opens in Pillow as I;16 (even with tRNS, which the image crate
    // turns into an alpha channel) and I;16 → RGB clips to 255.
    let gray16_png = format == ImageFormat::Png && png_ihdr(bytes) == Some((16, 0));
    to_rgb_like_pillow(img, gray16_png)
}

fn to_rgb_like_pillow(img: DynamicImage, gray16_png: bool) -> Result<RgbImage, DecodeError> {
    let (w, h) = (img.width(), img.height());
    let n = w as usize * h as usize;
    let mut out = Vec::with_capacity(n * 3);
    let clip16 = |v: u16| v.min(255) as u8;
    let msb16 = |v: u16| (v >> 8) as u8;
    match img {
        DynamicImage::ImageRgb8(im) => return Ok(im),
        DynamicImage::ImageRgba8(im) => {
            for p in im.as_raw().chunks_exact(4) {
                out.extend_from_slice(&p[..3]);
            }
        }
        DynamicImage::ImageLuma8(im) => {
            for &v in im.as_raw() {
                out.extend_from_slice(&[v, v, v]);
            }
        }
        DynamicImage::ImageLumaA8(im) => {
            for p in im.as_raw().chunks_exact(2) {
                out.extend_from_slice(&[p[0], p[0], p[0]]);
            }
        }
        DynamicImage::ImageLuma16(im) => {
            // Pillow: I;16 → RGB clips (16-bit gray PNG and TIFF).
            for &v in im.as_raw() {
                let v = clip16(v);
                out.extend_from_slice(&[v, v, v]);
            }
        }
        DynamicImage::ImageLumaA16(im) => {
            for p in im.as_raw().chunks_exact(2) {
                // 16-bit gray + tRNS PNG is I;16 in Pillow (clip); 16-bit gray+alpha
                // PNG is RGBA via LA;16B (most significant byte).
                let v = if gray16_png {
                    clip16(p[0])
                } else {
                    msb16(p[0])
                };
                out.extend_from_slice(&[v, v, v]);
            }
        }
        DynamicImage::ImageRgb16(im) => {
            out.extend(im.as_raw().iter().map(|&v| msb16(v)));
        }
        DynamicImage::ImageRgba16(im) => {
            for p in im.as_raw().chunks_exact(4) {
                out.extend_from_slice(&[msb16(p[0]), msb16(p[1]), msb16(p[2])]);
            }
        }
        other => {
            return Err(DecodeError::Unsupported(format!(
                "{:?} pixels",
                other.color()
            )));
        }
    }
    Ok(RgbImage::from_raw(w, h, out).expect("buffer size matches"))
}

/// JPEG through libjpeg-turbo (statically linked via `mozjpeg-sys`), configured as Pillow's
/// `JpegDecode.c` configures it.
mod jpeg {
    use super::{DecodeError, DecodeLimits, MAX_JPEG_SCANS, check_size};
    use image::RgbImage;
    use mozjpeg_sys::*;
    use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

    /// Payload of the unwind started by `error_exit`.
    struct JpegFatal(String);

    fn corrupt(detail: String) -> DecodeError {
        DecodeError::Corrupt {
            format: "JPEG",
            detail,
        }
    }

    /// libjpeg's message text for the error manager's current code.
    unsafe fn message(cinfo: &mut jpeg_common_struct) -> String {
        let buf = [0u8; 80];
        // SAFETY: err points at our live error manager; format_message writes < 80 bytes.
        unsafe {
            if let Some(f) = (*cinfo.err).format_message {
                f(cinfo, &buf);
            }
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    }

    unsafe extern "C-unwind" fn error_exit(cinfo: &mut jpeg_common_struct) {
        // SAFETY: called by libjpeg with a valid cinfo.
        let msg = unsafe { message(cinfo) };
        // resume_unwind: no panic hook, no message on stderr.
        resume_unwind(Box::new(JpegFatal(msg)));
    }

    /// Warnings that mean pixels were lost or invented: truncation ("Premature end of JPEG
    /// file") and corrupt entropy data ("Corrupt JPEG data: bad Huffman code", "… premature end
    /// of data segment", "… found marker … instead of RST…", bad arithmetic code). Matched on the
    /// text because the numeric codes depend on libjpeg's build options. Extraneous bytes between
    /// markers and odd JFIF/Adobe/ICC markers are ignored, as Pillow ignores all warnings.
    fn is_data_loss(msg: &str) -> bool {
        (msg.starts_with("Corrupt JPEG data") && !msg.contains("extraneous bytes"))
            || msg.starts_with("Premature end of JPEG file")
            || msg.starts_with("Invalid SOS parameters")
    }

    /// Warnings are checked with `is_data_loss`; trace messages (level > 0) are dropped.
    unsafe extern "C-unwind" fn emit_message(cinfo: &mut jpeg_common_struct, level: c_int) {
        if level < 0 {
            // SAFETY: cinfo.err points at the `Err` below (repr(C), jpeg_error_mgr first).
            let msg = unsafe { message(cinfo) };
            let err = cinfo.err as *mut Err;
            unsafe {
                (*err).mgr.num_warnings += 1;
                if is_data_loss(&msg) && (*err).first_loss.is_none() {
                    (*err).first_loss = Some(msg);
                }
            }
        }
    }

    /// Refuses a file with more than [`MAX_JPEG_SCANS`] scans (libjpeg calls this
    /// between scans while it absorbs a progressive file).
    unsafe extern "C-unwind" fn progress_monitor(cinfo: &mut jpeg_common_struct) {
        if cinfo.is_decompressor == 0 {
            return;
        }
        // SAFETY: a decompressor's common struct is the first field of its jpeg_decompress_struct.
        let scans = unsafe {
            (*(cinfo as *mut jpeg_common_struct as *mut jpeg_decompress_struct)).input_scan_number
        };
        if scans > MAX_JPEG_SCANS {
            resume_unwind(Box::new(JpegFatal(format!(
                "more than {MAX_JPEG_SCANS} progressive scans (real files have about 10); refusing a decoding bomb"
            ))));
        }
    }

    #[repr(C)]
    struct Err {
        mgr: jpeg_error_mgr,
        first_loss: Option<String>,
    }

    struct Decompress {
        cinfo: Box<jpeg_decompress_struct>,
        err: Box<Err>,
        _progress: Box<jpeg_progress_mgr>,
    }

    impl Drop for Decompress {
        fn drop(&mut self) {
            // SAFETY: created by jpeg_create_decompress; destroy never calls error_exit.
            unsafe { jpeg_destroy_decompress(&mut self.cinfo) };
        }
    }

    pub(super) fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, DecodeError> {
        // SAFETY: plain-old-data C structs, initialised by jpeg_std_error / jpeg_create_decompress.
        let mut err: Box<Err> = Box::new(Err {
            mgr: unsafe { std::mem::zeroed() },
            first_loss: None,
        });
        unsafe { jpeg_std_error(&mut err.mgr) };
        err.mgr.error_exit = Some(error_exit);
        err.mgr.emit_message = Some(emit_message);
        let mut cinfo: Box<jpeg_decompress_struct> = Box::new(unsafe { std::mem::zeroed() });
        cinfo.common.err = &mut err.mgr;
        // SAFETY: plain-old-data; the box lives in `Decompress` as long as cinfo.
        let mut progress: Box<jpeg_progress_mgr> = Box::new(unsafe { std::mem::zeroed() });
        progress.progress_monitor = Some(progress_monitor);
        let created = catch_unwind(AssertUnwindSafe(|| unsafe {
            jpeg_create_decompress(&mut *cinfo)
        }));
        if let Err(p) = created {
            return Err(corrupt(payload_text(p)));
        }
        // After jpeg_create_decompress, which zeroes everything but the error manager.
        cinfo.common.progress = &mut *progress;
        let mut d = Decompress {
            cinfo,
            err,
            _progress: progress,
        };
        match catch_unwind(AssertUnwindSafe(|| run(&mut d, bytes, limits))) {
            Ok(r) => r,
            Err(p) => Err(corrupt(payload_text(p))),
        }
    }

    fn payload_text(p: Box<dyn std::any::Any + Send>) -> String {
        match p.downcast::<JpegFatal>() {
            Ok(f) => f.0,
            Err(p) => match p.downcast::<String>() {
                Ok(s) => *s,
                Err(p) => p
                    .downcast::<&str>()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|_| "decoder panic".into()),
            },
        }
    }

    fn check_loss(d: &Decompress) -> Result<(), DecodeError> {
        match &d.err.first_loss {
            Some(m) => Err(corrupt(m.clone())),
            None => Ok(()),
        }
    }

    fn run(
        d: &mut Decompress,
        bytes: &[u8],
        limits: &DecodeLimits,
    ) -> Result<RgbImage, DecodeError> {
        let cinfo = &mut *d.cinfo;
        // SAFETY: `bytes` outlives the decompressor use inside this function.
        unsafe {
            jpeg_mem_src(cinfo, bytes.as_ptr(), bytes.len() as c_ulong);
            jpeg_read_header(cinfo, 1);
        }
        check_loss(d)?;
        let cinfo = &mut *d.cinfo;
        let (w, h) = (cinfo.image_width, cinfo.image_height);
        check_size(w, h, limits)?;
        // Pillow: 1 layer → L, 3 → RGB, 4 → CMYK with rawmode "CMYK;I"; libjpeg picks the
        // source colour space (JFIF/Adobe markers) as Pillow leaves jpeg_color_space alone.
        let comps = cinfo.num_components;
        cinfo.out_color_space = match comps {
            1 => JCS_GRAYSCALE,
            3 => JCS_RGB,
            4 => JCS_CMYK,
            n => {
                return Err(DecodeError::Unsupported(format!(
                    "JPEG with {n} colour components"
                )));
            }
        };
        // libjpeg defaults, as Pillow (no draft mode) leaves them.
        cinfo.dct_method = J_DCT_METHOD::JDCT_ISLOW;
        cinfo.do_fancy_upsampling = 1;
        cinfo.scale_num = 1;
        cinfo.scale_denom = 1;
        unsafe { jpeg_start_decompress(cinfo) };
        check_loss(d)?;
        let cinfo = &mut *d.cinfo;
        let (ow, oh) = (cinfo.output_width, cinfo.output_height);
        let nc = cinfo.output_components as usize;
        if (ow, oh) != (w, h) || nc != comps as usize {
            return Err(corrupt(format!("unexpected decoder output {ow}×{oh}×{nc}")));
        }
        let row = ow as usize * nc;
        let mut raw = vec![0u8; row * oh as usize];
        while cinfo.output_scanline < oh {
            let y = cinfo.output_scanline as usize;
            let mut ptr = raw[y * row..].as_mut_ptr();
            let got = unsafe { jpeg_read_scanlines(cinfo, &mut ptr, 1) };
            if got != 1 {
                return Err(corrupt("decoder produced no scanline".into()));
            }
        }
        check_loss(d)?;
        unsafe { jpeg_finish_decompress(&mut d.cinfo) };
        check_loss(d)?;
        Ok(match nc {
            3 => RgbImage::from_raw(ow, oh, raw).expect("size"),
            1 => {
                let mut out = Vec::with_capacity(raw.len() * 3);
                for &v in &raw {
                    out.extend_from_slice(&[v, v, v]);
                }
                RgbImage::from_raw(ow, oh, out).expect("size")
            }
            _ => RgbImage::from_raw(ow, oh, cmyk_inverted_to_rgb(&raw)).expect("size"),
        })
    }

    /// Pillow: unpack "CMYK;I" (invert every channel), then `cmyk2rgb` (Convert.c):
    /// `nk = 255 - k; out = CLIP8(nk - MULDIV255(c, nk))`, MULDIV255(a, b) = ((a*b + 128) + ((a*b + 128) >> 8)) >> 8.
    pub(super) fn cmyk_inverted_to_rgb(raw: &[u8]) -> Vec<u8> {
        let muldiv255 = |a: i32, b: i32| {
            let t = a * b + 128;
            ((t >> 8) + t) >> 8
        };
        let mut out = Vec::with_capacity(raw.len() / 4 * 3);
        for p in raw.chunks_exact(4) {
            let (c, m, y, k) = (
                255 - i32::from(p[0]),
                255 - i32::from(p[1]),
                255 - i32::from(p[2]),
                255 - i32::from(p[3]),
            );
            let nk = 255 - k;
            for v in [c, m, y] {
                out.push((nk - muldiv255(v, nk)).clamp(0, 255) as u8);
            }
        }
        out
    }
}
