//! The image list: a text file with one path per line, or a folder searched
//! recursively (docs/contract.md#inputs).

use anyhow::{Context, Result, bail};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// File name endings picked up from a folder (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp"];

/// The input paths, each exactly as listed (or as found under the folder),
/// duplicates removed (first occurrence kept).
#[derive(Debug)]
pub struct InputList {
    pub paths: Vec<String>,
    /// How many repeated lines were dropped.
    pub duplicates: usize,
    /// Entries of a folder that cannot become a job — a name that is not UTF-8,
    /// a subfolder that cannot be listed — as (path as far as it can be shown,
    /// why): each gets an error record, and the rest of the folder goes on.
    pub rejected: Vec<Rejected>,
}

/// A folder entry that cannot be a job: (its path as far as it can be shown, why).
pub type Rejected = (String, String);

/// Reads `--input`: a folder is scanned, a file with an image extension is
/// that one image, `-` is a list on standard input, anything else is read as a
/// list file.
pub fn read_inputs(input: &Path) -> Result<InputList> {
    if input == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
            .context("cannot read the image list from standard input")?;
        return Ok(unique(list_paths(bytes, "standard input")?, Vec::new()));
    }
    let meta = std::fs::metadata(input).with_context(|| {
        format!("cannot read the input {}: it does not exist or is not readable (pass a list file with one image path per line, or a folder)", input.display())
    })?;
    let (paths, rejected) = if meta.is_dir() {
        scan_folder(input)?
    } else if has_video_extension(input) && !cfg!(feature = "video") {
        bail!(
            "--input {} is a video, and this rmac-native was built without video support: rebuild it \
             with the cargo feature `video` (on by default), or cut frames first (e.g. \
             `ffmpeg -i {} -vf fps=1 frames/%06d.png`) and pass the folder",
            input.display(),
            input.display()
        );
    } else if has_image_extension(input) || has_video_extension(input) {
        let one = input.to_str().with_context(|| {
            format!("the file name {} is not UTF-8; rename it", input.display())
        })?;
        (vec![one.to_owned()], Vec::new())
    } else {
        (read_list(input)?, Vec::new())
    };
    Ok(unique(paths, rejected))
}

/// Removes repeated paths (the first occurrence is kept).
fn unique(paths: Vec<String>, rejected: Vec<Rejected>) -> InputList {
    let mut seen = HashSet::with_capacity(paths.len());
    let mut unique = Vec::with_capacity(paths.len());
    let mut duplicates = 0;
    for p in paths {
        if seen.insert(p.clone()) {
            unique.push(p);
        } else {
            duplicates += 1;
        }
    }
    InputList {
        paths: unique,
        duplicates,
        rejected,
    }
}

/// One path per line; blank lines skipped, one trailing CR stripped, nothing
/// else trimmed (paths may start or end with spaces).
fn read_list(list: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(list)
        .with_context(|| format!("cannot read the image list {}", list.display()))?;
    list_paths(bytes, &list.display().to_string())
}

/// The paths of a list's bytes (`what` names the list in errors).
fn list_paths(bytes: Vec<u8>, what: &str) -> Result<Vec<String>> {
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        anyhow::anyhow!(
            "the image list {what} is not UTF-8 text (line {line}); write the paths as UTF-8 \
             (an image given as --input must end in one of: {})",
            IMAGE_EXTENSIONS.join(", ")
        )
    })?;
    // A byte-order mark (Windows editors write one) is not part of the first path.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    Ok(text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

fn has_image_extension(path: &Path) -> bool {
    has_extension(path, &IMAGE_EXTENSIONS)
}

/// Video containers (compared case-insensitively): each listed or found video
/// becomes its sampled frames ([`crate::video`]).
pub const VIDEO_EXTENSIONS: [&str; 12] = [
    "mp4", "m4v", "mov", "mkv", "webm", "avi", "mpg", "mpeg", "ts", "mts", "wmv", "flv",
];

/// Whether `path` ends in a video extension (any case).
pub fn has_video_extension(path: &Path) -> bool {
    has_extension(path, &VIDEO_EXTENSIONS)
}

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Every entry with an image extension under `root` (recursively), in byte
/// order of the paths. Symlinked folders are not followed (no cycles). Entries
/// that are not regular files — FIFOs, devices, sockets, dangling or looping
/// links — are kept, so that each gets an error record saying what it is
/// rather than vanishing; names that are not UTF-8 and folders that cannot be
/// listed are returned as rejected entries.
fn scan_folder(root: &Path) -> Result<(Vec<String>, Vec<Rejected>)> {
    let mut found: Vec<PathBuf> = Vec::new();
    let mut rejected = Vec::new();
    let mut skipped = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if dir == root => {
                return Err(e).with_context(|| format!("cannot list the folder {}", dir.display()));
            }
            Err(e) => {
                rejected.push((
                    dir.to_string_lossy().into_owned(),
                    format!("cannot list this folder ({e}); its images were not read — check its permissions"),
                ));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    rejected.push((
                        dir.to_string_lossy().into_owned(),
                        format!(
                            "cannot read an entry of this folder ({e}); the rest of it was read"
                        ),
                    ));
                    continue;
                }
            };
            let path = entry.path();
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir {
                stack.push(path);
            } else if has_image_extension(&path) || has_video_extension(&path) {
                found.push(path);
            } else {
                let ext = path.extension().map_or("no extension".to_owned(), |e| {
                    format!(".{}", e.to_string_lossy().to_lowercase())
                });
                *skipped.entry(ext).or_insert(0usize) += 1;
            }
        }
    }
    let mut paths = Vec::with_capacity(found.len());
    for p in found {
        match p.into_os_string().into_string() {
            Ok(s) => paths.push(s),
            Err(os) => rejected.push((
                Path::new(&os).to_string_lossy().into_owned(),
                "the file name is not UTF-8, so it cannot be a record's path; rename it, or list it in a UTF-8 list file under another name".to_owned(),
            )),
        }
    }
    paths.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    rejected.sort();
    if paths.is_empty() && rejected.is_empty() {
        let what: Vec<String> = skipped.iter().map(|(e, n)| format!("{n} {e}")).collect();
        anyhow::bail!(
            "the folder {} holds no images or videos ({}); images are files ending in {}, videos in {} (any case)",
            root.display(),
            if what.is_empty() {
                "it is empty".to_owned()
            } else {
                format!("skipped: {}", what.join(", "))
            },
            IMAGE_EXTENSIONS.join(", "),
            VIDEO_EXTENSIONS.join(", ")
        );
    }
    Ok((paths, rejected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_keeps_spaces_strips_one_cr_and_skips_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list.txt");
        std::fs::write(&list, "a.jpg\r\n\n b.png \n\r\nc.jpg\r\r\na.jpg\n").unwrap();
        let inputs = read_inputs(&list).unwrap();
        assert_eq!(inputs.paths, vec!["a.jpg", " b.png ", "c.jpg\r"]);
        assert_eq!(inputs.duplicates, 1);
    }

    #[test]
    fn folder_scan_is_recursive_case_insensitive_and_byte_ordered() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        for f in [
            "b.JPG",
            "a.png",
            "sub/deeper/z.webp",
            "sub/c.TiF",
            "notes.txt",
            "Z.jpeg",
            "x.jpgx",
        ] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        let inputs = read_inputs(root).unwrap();
        let rel: Vec<String> = inputs
            .paths
            .iter()
            .map(|p| {
                Path::new(p)
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            rel,
            vec!["Z.jpeg", "a.png", "b.JPG", "sub/c.TiF", "sub/deeper/z.webp"]
        );
    }

    #[test]
    fn missing_input_says_what_to_pass() {
        let err = read_inputs(Path::new("/nonexistent/list.txt"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/list.txt") && err.contains("list file"),
            "{err}"
        );
    }
}
