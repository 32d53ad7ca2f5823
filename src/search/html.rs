//! A self-contained HTML contact sheet of search results: per query, the
//! query image and its results as thumbnails (JPEG data URIs, so the file can
//! be mailed or opened anywhere), each with its rank, score and path and
//! linked to the original; a header says what was searched and how; a file
//! that cannot be shown is marked in its tile and reported to the caller.

use crate::image::decode::DecodeLimits;
use crate::video::{Cursors, parse_frame_key};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One query's row of the sheet.
pub struct SheetRow {
    /// What the query was (image path, indexed path or "vector").
    pub label: String,
    /// The image to show for the query, when there is one: (its name, the
    /// file; an image query's own file, an indexed path already located).
    pub image: Option<(String, PathBuf)>,
    /// (path, score), best first.
    pub hits: Vec<(String, f32)>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Standard base64 (RFC 4648) with padding.
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= c.len() {
                T[(n >> shift) as usize & 63] as char
            } else {
                '='
            });
        }
    }
    out
}

/// The picture a path of the index names: an image file, or a video frame
/// (`VIDEO#t=SECONDS`, decoded as `extract` decodes it).
fn picture(file: &Path) -> Result<image::DynamicImage> {
    if let Some(key) = file.to_str().and_then(parse_frame_key) {
        let frame = Cursors::default()
            .frame(key.video, key, false, &DecodeLimits::default())
            .map_err(|e| anyhow::anyhow!("{}: {e}", key.video))?;
        return Ok(image::DynamicImage::ImageRgb8(frame));
    }
    image::open(file).with_context(|| format!("cannot open {}", file.display()))
}

/// Where a tile links: the image file, or a video at the frame's time (a
/// media fragment, which browsers seek to).
fn link(file: &Path) -> String {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or(p.to_path_buf());
    match file.to_str().and_then(parse_frame_key) {
        Some(key) => format!(
            "{}#t={}.{:03}",
            file_url(&absolute(Path::new(key.video))),
            key.t_ms / 1000,
            key.t_ms % 1000
        ),
        None => file_url(&absolute(file)),
    }
}

/// The file behind a path of the index (a frame's video), to say whether it is there.
fn source(file: &Path) -> &Path {
    match file.to_str().and_then(parse_frame_key) {
        Some(key) => Path::new(key.video),
        None => file,
    }
}

/// A thumbnail of the image (or video frame) at `file` (longest side `size`) as a data URI.
fn thumbnail(file: &Path, size: u32) -> Result<String> {
    let img = picture(file)?;
    Ok(format!(
        "data:image/jpeg;base64,{}",
        base64(&jpeg_thumbnail(&img, size)?)
    ))
}

/// A JPEG (quality 85) of `img` shrunk to fit `size` × `size` (pages and `serve`).
pub fn jpeg_thumbnail(img: &image::DynamicImage, size: u32) -> Result<Vec<u8>> {
    let thumb = img.thumbnail(size, size).to_rgb8();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85).encode_image(&thumb)?;
    Ok(jpeg)
}

/// A `file://` URL of an absolute path, each byte outside the unreserved set
/// percent-encoded (RFC 3986), so that spaces, `#` and `?` stay in the path.
pub fn file_url(path: &Path) -> String {
    let mut url = String::from("file://");
    for &b in path.to_string_lossy().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            url.push(b as char);
        } else {
            let _ = write!(url, "%{b:02X}");
        }
    }
    url
}

/// The sheet's header and how the paths of the index lead to files.
pub struct SheetHeader {
    /// Lines of `name: value` (index, k, QE, settings, …).
    pub facts: Vec<(String, String)>,
}

/// What could not be shown: (path as stored, why).
#[derive(Debug, Default)]
pub struct SheetReport {
    pub tiles: usize,
    pub missing: Vec<(String, String)>,
}

struct Tiles<'a> {
    html: String,
    size: u32,
    locate: &'a dyn Fn(&str) -> PathBuf,
    report: SheetReport,
}

impl Tiles<'_> {
    /// One tile: the thumbnail linked to the original, or a marked gap saying
    /// what is missing.
    fn cell(&mut self, shown: Option<(&str, PathBuf)>, caption: &str, class: &str) {
        self.report.tiles += 1;
        let path = shown.as_ref().map(|(p, _)| *p);
        let body = match shown {
            None => "<div class=\"missing\">(a vector)</div>".to_owned(),
            Some((p, file)) => match thumbnail(&file, self.size) {
                Ok(uri) => format!(
                    "<a href=\"{}\"><img src=\"{uri}\" alt=\"{}\"></a>",
                    escape(&link(&file)),
                    escape(p)
                ),
                Err(e) => {
                    let why = if source(&file).exists() {
                        format!("{e:#}")
                    } else {
                        format!("not found at {}", source(&file).display())
                    };
                    let shown = format!("missing: {why}");
                    self.report.missing.push((p.to_owned(), why));
                    format!("<div class=\"missing\">{}</div>", escape(&shown))
                }
            },
        };
        let title = path.unwrap_or("a vector");
        let _ = write!(
            self.html,
            "<figure class=\"{class}\" title=\"{}\">{body}<figcaption>{caption}</figcaption></figure>",
            escape(title)
        );
    }
}

/// Writes the sheet; thumbnails are `size` pixels on their longest side;
/// `locate` turns a path of the index into the file to show. Returns what
/// could not be shown (the caller reports it).
pub fn write_contact_sheet(
    out: &Path,
    header: &SheetHeader,
    rows: &[SheetRow],
    size: u32,
    locate: &dyn Fn(&str) -> PathBuf,
) -> Result<SheetReport> {
    let mut h = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>rmac-native search</title><style>\n\
         body{font-family:sans-serif;margin:1em;background:#fafafa}\
         header{margin-bottom:1.5em}header dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px}\
         header dt{font-weight:bold}header dd{margin:0;word-break:break-all}\
         section{margin-bottom:2em}h2{font-size:1em;word-break:break-all}\
         .row{display:flex;flex-wrap:wrap;gap:8px}\
         figure{margin:0;width:",
    );
    let _ = writeln!(
        h,
        "{w}px;background:#fff;border:1px solid #ddd;padding:4px}}\
         figure.query{{border:2px solid #c33}}img{{max-width:{w}px;max-height:{w}px;display:block;margin:auto}}\
         figcaption{{font-size:11px;word-break:break-all}}.missing{{height:{w}px;color:#a00;font-size:11px;overflow:hidden}}\
         </style></head><body>",
        w = size
    );
    h.push_str("<header><h1>rmac-native search</h1><dl>");
    for (name, value) in &header.facts {
        let _ = write!(h, "<dt>{}</dt><dd>{}</dd>", escape(name), escape(value));
    }
    h.push_str("</dl></header>\n");
    let mut tiles = Tiles {
        html: h,
        size,
        locate,
        report: SheetReport::default(),
    };
    for r in rows {
        let _ = write!(
            tiles.html,
            "<section><h2>query: {}</h2><div class=\"row\">",
            escape(&r.label)
        );
        let query = r.image.as_ref().map(|(p, f)| (p.as_str(), f.clone()));
        tiles.cell(query, "<b>query</b>", "query");
        for (rank, (path, score)) in r.hits.iter().enumerate() {
            let caption = format!("#{} &nbsp; {score:.4}<br>{}", rank + 1, escape(path));
            let file = (tiles.locate)(path);
            tiles.cell(Some((path, file)), &caption, "hit");
        }
        tiles.html.push_str("</div></section>\n");
    }
    tiles.html.push_str("</body></html>\n");
    crate::files::write_atomically(out, tiles.html.as_bytes())
        .with_context(|| format!("cannot write the contact sheet {}", out.display()))?;
    Ok(tiles.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
