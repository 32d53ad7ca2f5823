//! A self-contained HTML contact sheet of search results: per query, the
//! query image and its results as thumbnails (JPEG data URIs, so the file can
//! be mailed or opened anywhere), each with its rank, score and path.

use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;

/// One query's row of the sheet.
pub struct SheetRow {
    /// What the query was (image path, indexed path or "vector").
    pub label: String,
    /// An image to show for the query, when there is one.
    pub image: Option<String>,
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

/// A thumbnail of the image at `path` (longest side `size`) as a data URI.
fn thumbnail(path: &str, size: u32) -> Result<String> {
    let img = image::open(path).with_context(|| format!("cannot open {path}"))?;
    let thumb = img.thumbnail(size, size).to_rgb8();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85).encode_image(&thumb)?;
    Ok(format!("data:image/jpeg;base64,{}", base64(&jpeg)))
}

fn cell(out: &mut String, path: Option<&str>, caption: &str, size: u32, title: &str, class: &str) {
    let img = match path.map(|p| thumbnail(p, size)) {
        Some(Ok(uri)) => format!("<img src=\"{uri}\" alt=\"{}\">", escape(title)),
        Some(Err(e)) => format!("<div class=\"missing\">{}</div>", escape(&format!("{e:#}"))),
        None => "<div class=\"missing\">(a vector)</div>".to_owned(),
    };
    let _ = write!(
        out,
        "<figure class=\"{class}\" title=\"{}\">{img}<figcaption>{caption}</figcaption></figure>",
        escape(title)
    );
}

/// Writes the sheet; thumbnails are `size` pixels on their longest side.
pub fn write_contact_sheet(out: &Path, rows: &[SheetRow], size: u32) -> Result<()> {
    let mut h = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>rmac-native search</title><style>\n\
         body{font-family:sans-serif;margin:1em;background:#fafafa}\
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
    for r in rows {
        let _ = write!(
            h,
            "<section><h2>query: {}</h2><div class=\"row\">",
            escape(&r.label)
        );
        cell(
            &mut h,
            r.image.as_deref(),
            "<b>query</b>",
            size,
            &r.label,
            "query",
        );
        for (rank, (path, score)) in r.hits.iter().enumerate() {
            let caption = format!("#{} &nbsp; {score:.4}<br>{}", rank + 1, escape(path));
            cell(&mut h, Some(path), &caption, size, path, "hit");
        }
        h.push_str("</div></section>\n");
    }
    h.push_str("</body></html>\n");
    std::fs::write(out, h)
        .with_context(|| format!("cannot write the contact sheet {}", out.display()))
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
