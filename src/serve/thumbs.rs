//! Thumbnails of indexed paths, and only of those: the caller looks the path
//! up in the index first; here it becomes a file (under `--images-root`, which
//! it may not leave — no `..`, no absolute path elsewhere, no symlink out —
//! or as `search --html` finds it), which is read with the decoder's bounds
//! (a regular file, a size limit, the pixel limit) and re-encoded as a JPEG,
//! so no byte of any file is ever sent as it is. Made thumbnails are kept in
//! a cache of bounded size, the oldest dropped first.

use crate::image::decode::{DecodeError, DecodeLimits, decode_rgb, read_image_file};
use crate::search::html::jpeg_thumbnail;
use std::collections::{HashMap, VecDeque};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why an indexed path has no thumbnail.
#[derive(Debug, thiserror::Error)]
pub enum ThumbError {
    #[error("{0} resolves outside --images-root; only files under it are shown")]
    Outside(String),
    #[error("the image of {path} is not at {file}")]
    NotFound { path: String, file: String },
    #[error("the image of {path} cannot be shown: {why}")]
    Unreadable { path: String, why: String },
}

/// Turns an indexed path into the file to show.
pub struct Resolver {
    /// `--images-root`, canonical.
    root: Option<PathBuf>,
    /// Without a root: where `search --html` would look.
    locate: Box<dyn Fn(&str) -> PathBuf + Send + Sync>,
}

impl Resolver {
    /// `root`: `--images-root` (must exist); `locate`: the fallback without one.
    pub fn new(
        root: Option<&Path>,
        locate: Box<dyn Fn(&str) -> PathBuf + Send + Sync>,
    ) -> std::io::Result<Resolver> {
        let root = root.map(std::fs::canonicalize).transpose()?;
        Ok(Resolver { root, locate })
    }

    /// The file of indexed `path`.
    pub fn file(&self, path: &str) -> Result<PathBuf, ThumbError> {
        let wanted = match &self.root {
            Some(root) => {
                let p = Path::new(path);
                if p.components().any(|c| matches!(c, Component::ParentDir)) {
                    return Err(ThumbError::Outside(path.to_owned()));
                }
                // An absolute path is accepted only when it lies under the root.
                root.join(p)
            }
            None => (self.locate)(path),
        };
        let real = std::fs::canonicalize(&wanted).map_err(|_| ThumbError::NotFound {
            path: path.to_owned(),
            file: wanted.display().to_string(),
        })?;
        if let Some(root) = &self.root
            && !real.starts_with(root)
        {
            return Err(ThumbError::Outside(path.to_owned()));
        }
        Ok(real)
    }
}

/// A JPEG thumbnail of `file`, longest side `size`.
pub fn render(
    path: &str,
    file: &Path,
    size: u32,
    limits: &DecodeLimits,
) -> Result<Vec<u8>, ThumbError> {
    let unreadable = |why: String| ThumbError::Unreadable {
        path: path.to_owned(),
        why,
    };
    let bytes = read_image_file(file, limits).map_err(|e| match e {
        DecodeError::NotFound => ThumbError::NotFound {
            path: path.to_owned(),
            file: file.display().to_string(),
        },
        e => unreadable(e.to_string()),
    })?;
    let img = decode_rgb(&bytes, limits).map_err(|e| unreadable(e.to_string()))?;
    jpeg_thumbnail(&image::DynamicImage::ImageRgb8(img), size)
        .map_err(|e| unreadable(format!("{e:#}")))
}

/// Thumbnails by (index row, size), within a byte budget, oldest out first.
pub struct ThumbCache {
    inner: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    map: HashMap<(usize, u32), Arc<Vec<u8>>>,
    order: VecDeque<(usize, u32)>,
    bytes: usize,
    budget: usize,
}

impl ThumbCache {
    pub fn new(budget: usize) -> ThumbCache {
        ThumbCache {
            inner: Mutex::new(Cache {
                budget,
                ..Cache::default()
            }),
        }
    }

    pub fn get(&self, key: (usize, u32)) -> Option<Arc<Vec<u8>>> {
        let c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        c.map.get(&key).cloned()
    }

    pub fn put(&self, key: (usize, u32), jpeg: Arc<Vec<u8>>) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if jpeg.len() > c.budget || c.map.contains_key(&key) {
            return;
        }
        c.bytes += jpeg.len();
        c.map.insert(key, jpeg);
        c.order.push_back(key);
        while c.bytes > c.budget {
            let Some(old) = c.order.pop_front() else {
                break;
            };
            if let Some(v) = c.map.remove(&old) {
                c.bytes -= v.len();
            }
        }
    }

    /// (bytes, entries) held.
    pub fn usage(&self) -> (usize, usize) {
        let c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (c.bytes, c.map.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_its_budget_dropping_the_oldest() {
        let cache = ThumbCache::new(10);
        cache.put((0, 1), Arc::new(vec![0; 4]));
        cache.put((1, 1), Arc::new(vec![0; 4]));
        cache.put((2, 1), Arc::new(vec![0; 4]));
        assert_eq!(cache.usage(), (8, 2));
        assert!(cache.get((0, 1)).is_none());
        assert!(cache.get((2, 1)).is_some());
        cache.put((3, 1), Arc::new(vec![0; 11]));
        assert_eq!(cache.usage(), (8, 2), "larger than the budget: not kept");
    }
}
