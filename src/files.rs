//! File helpers every stage shares, one copy each: atomic writes (a reader
//! never sees half a file) and sha256 digests (weights and PCA files are
//! recorded by digest in the settings beside the vectors).

use sha2::{Digest, Sha256};
use std::path::Path;

/// What a path that is not a regular file is, in words (`None`: a regular file).
pub fn non_regular_kind(t: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a folder")
    } else if t.is_fifo() {
        Some("a FIFO, a named pipe")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else {
        Some("not a file")
    }
}

/// Opens `path` for reading without blocking (a FIFO would otherwise wait for
/// a writer forever) and only if it is a regular file: the vectors files, error
/// files and lists a reader must be able to read to their end.
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    match non_regular_kind(file.metadata()?.file_type()) {
        None => Ok(file),
        Some(kind) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is {kind}, not a regular file", path.display()),
        )),
    }
}

/// Refuses a destination that exists and is not a regular file (`/dev/full`,
/// a FIFO, a folder): resuming reads it first, and writing it is not keeping it.
pub fn check_destination(path: &Path) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Ok(m) => match non_regular_kind(m.file_type()) {
            None => Ok(()),
            Some(kind) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{} is {kind}, not a regular file; vectors can only be written to a file (pass another path)",
                    path.display()
                ),
            )),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// sha256 and size of a file (memory-mapped; the page cache serves a later load).
pub fn file_digest(path: &Path) -> std::io::Result<(String, u64)> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok((sha256_hex(b""), 0));
    }
    // SAFETY: read-only map of a file we only read; a concurrent writer could change the digest, nothing worse.
    let map = unsafe { memmap2::Mmap::map(&file) }?;
    Ok((sha256_hex(&map), map.len() as u64))
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a
/// rename (see [`write_atomically_with`]).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically_with(path, &mut |w| w.write_all(bytes))
}

/// Writes what `write` produces to `path` through a temporary file in the same
/// folder (buffered: a large output is streamed, never held) and a rename,
/// creating the folder when needed. The temporary name carries the process id,
/// so two processes never share one; it is removed on failure.
pub fn write_atomically_with(
    path: &Path,
    write: &mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = std::fs::File::create(&tmp)
        .and_then(|file| {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            write(&mut out)?;
            out.flush()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_input() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/x.json");
        write_atomically(&p, b"one").unwrap();
        write_atomically(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
        assert_eq!(file_digest(&p).unwrap(), (sha256_hex(b"two"), 3));
    }
}
