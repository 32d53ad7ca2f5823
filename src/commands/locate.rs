//! Where the image of a path stored in an index is, for the pages that show
//! thumbnails (`search --html`, `dedup --html`).

use rmac_native::store::Target;
use rmac_native::store::settings::RunSettings;
use rmac_native::video::parse_frame_key;
use std::path::{Path, PathBuf};

/// Where the file of a path in the index is (see `--root`): an absolute path
/// as it is; a relative one under `--root`, else under the folder the index was
/// made from, else the index's folder, else the current folder — the first
/// where it exists.
pub fn locator(
    root: Option<&Path>,
    index: &Target,
    made: Option<&RunSettings>,
) -> impl Fn(&str) -> PathBuf + Send + Sync + use<> {
    let bases: Vec<PathBuf> = match root {
        Some(root) => vec![root.to_path_buf()],
        None => made
            .and_then(|m| m.base.as_ref().map(PathBuf::from))
            .into_iter()
            .chain(index.file().and_then(|f| f.parent()).map(Path::to_path_buf))
            .collect(),
    };
    let only_root = root.is_some();
    move |p: &str| {
        let path = Path::new(p);
        if path.is_absolute() {
            return path.to_path_buf();
        }
        // A video frame (`VIDEO#t=S`) is where its video is.
        let file = parse_frame_key(p).map_or(p, |k| k.video);
        bases
            .iter()
            .find(|b| b.join(file).exists())
            .map(|b| b.join(path))
            .unwrap_or_else(|| match (only_root, bases.first()) {
                (true, Some(root)) => root.join(path),
                _ => path.to_path_buf(),
            })
    }
}
