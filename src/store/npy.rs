//! NPY output: `x.npy` holds a float32 `N × 512` C-order array in NumPy's
//! `.npy` format v1.0 (`numpy.load`, FAISS, …), `x.paths.txt` beside it one
//! path per line in the same row order, and failures go to `x.errors.jsonl`
//! as with JSONL output.
//!
//! The header is byte-for-byte what `numpy.save` writes: 128 bytes, with room
//! for any row count, so it is rewritten in place as rows are appended.
//!
//! Resuming: rows are appended before their path line, and the header is
//! rewritten on every sync. A killed run can leave a stale header, a torn row,
//! rows without a path line, or a torn path line. On open the paths file is
//! the source of truth: its complete lines are kept, the rows are cut to the
//! shorter of the two, the paths file to the same count, and the header
//! rewritten with that count.

use super::{VectorSink, VectorSource};
use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Total header size (magic, version, length, dict, padding, newline), as `numpy.save` writes it.
pub const HEADER_LEN: usize = 128;
const MAGIC: &[u8; 6] = b"\x93NUMPY";
const SYNC_EVERY: Duration = Duration::from_secs(10);

/// The 128-byte NPY v1.0 header of a little-endian float32 `rows × dim` C-order array.
pub fn header(rows: u64, dim: usize) -> [u8; HEADER_LEN] {
    header_of("<f4", rows, dim)
}

/// The same for another dtype (`<i4`: int32).
pub fn header_of(descr: &str, rows: u64, dim: usize) -> [u8; HEADER_LEN] {
    let dict =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    let mut h = [b' '; HEADER_LEN];
    h[..6].copy_from_slice(MAGIC);
    h[6] = 1;
    h[7] = 0;
    h[8..10].copy_from_slice(&((HEADER_LEN - 10) as u16).to_le_bytes());
    assert!(
        10 + dict.len() < HEADER_LEN,
        "shape too long for a v1.0 header"
    );
    h[10..10 + dict.len()].copy_from_slice(dict.as_bytes());
    h[HEADER_LEN - 1] = b'\n';
    h
}

/// What an NPY header says: rows, columns and where the data starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NpyShape {
    pub rows: u64,
    pub dim: usize,
    pub data_offset: usize,
}

/// Parses an NPY v1/v2/v3 header of a 2-D little-endian float32 C-order array
/// (what we write, and what `np.save(f, a.astype('<f4'))` writes).
pub fn parse_header(bytes: &[u8], what: &Path) -> Result<NpyShape> {
    parse_header_of(bytes, what, "<f4")
}

/// [`parse_header`] for a 2-D array of `descr` (`<f4` or `<i4`, the kNN
/// graph's indices).
pub fn parse_header_of(bytes: &[u8], what: &Path, descr: &str) -> Result<NpyShape> {
    let (want, numpy_name) = match descr {
        "<i4" => ("'<i4'", "'int32'"),
        _ => ("'<f4'", "'float32'"),
    };
    let kind = &numpy_name[1..numpy_name.len() - 1];
    let bad =
        |why: &str| anyhow::anyhow!("{} is not a {kind} N×D .npy file: {why}", what.display());
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("no NumPy magic at the start"));
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(&format!("format version {v} is not supported"))),
    };
    let dict = bytes
        .get(start..start + len)
        .ok_or_else(|| bad("the header is cut short"))?;
    let dict = std::str::from_utf8(dict).map_err(|_| bad("the header is not text"))?;
    let field = |key: &str| -> Option<&str> {
        let at = dict.find(&format!("'{key}':"))? + key.len() + 3;
        Some(dict[at..].trim_start())
    };
    let found = field("descr").ok_or_else(|| bad("no 'descr'"))?;
    if !(found.starts_with(want) || found.starts_with(numpy_name)) {
        return Err(bad(&format!(
            "dtype {} (convert with a.astype({want}))",
            found.split(',').next().unwrap_or("")
        )));
    }
    if !field("fortran_order")
        .ok_or_else(|| bad("no 'fortran_order'"))?
        .starts_with("False")
    {
        return Err(bad("Fortran order (save np.ascontiguousarray(a))"));
    }
    let shape = field("shape").ok_or_else(|| bad("no 'shape'"))?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("unreadable shape"))?;
    let dims: Vec<u64> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>().map_err(|_| bad("unreadable shape")))
        .collect::<Result<_>>()?;
    ensure!(
        dims.len() == 2,
        bad(&format!(
            "{} dimensions; want 2 (rows × {})",
            dims.len(),
            512
        ))
    );
    Ok(NpyShape {
        rows: dims[0],
        dim: dims[1] as usize,
        data_offset: start + len,
    })
}

pub use super::companions::{errors_path, npy_paths_path as paths_path};

/// Writes a whole matrix at once (`convert`, tests): `x.npy` and `x.paths.txt`.
pub fn write_npy(out: &Path, paths: &[String], data: &[f32], dim: usize) -> Result<()> {
    ensure!(
        data.len() == paths.len() * dim,
        "{} paths but {} numbers for dimension {dim}",
        paths.len(),
        data.len()
    );
    let mut f = std::io::BufWriter::new(
        File::create(out).with_context(|| format!("cannot create {}", out.display()))?,
    );
    f.write_all(&header(paths.len() as u64, dim))?;
    for x in data {
        f.write_all(&x.to_le_bytes())?;
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let mut p = Vec::new();
    for path in paths {
        check_path_line(path)?;
        p.extend_from_slice(path.as_bytes());
        p.push(b'\n');
    }
    std::fs::write(paths_path(out), p)
        .with_context(|| format!("cannot write {}", paths_path(out).display()))
}

/// Writes a `rows × dim` matrix of 4-byte little-endian numbers (`descr`
/// `<f4` or `<i4`) atomically.
pub fn write_matrix(
    out: &Path,
    descr: &str,
    rows: usize,
    dim: usize,
    le_bytes: impl Iterator<Item = [u8; 4]>,
) -> Result<()> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + rows * dim * 4);
    bytes.extend_from_slice(&header_of(descr, rows as u64, dim));
    for b in le_bytes {
        bytes.extend_from_slice(&b);
    }
    ensure!(
        bytes.len() == HEADER_LEN + rows * dim * 4,
        "{}: {} numbers for a {rows}×{dim} matrix",
        out.display(),
        (bytes.len() - HEADER_LEN) / 4
    );
    crate::files::write_atomically(out, &bytes)
        .with_context(|| format!("cannot write {}", out.display()))
}

/// Writes `paths`, one per line (an NPY output's paths file).
pub fn write_paths(out: &Path, paths: &[String]) -> Result<()> {
    let mut p = Vec::new();
    for path in paths {
        check_path_line(path)?;
        p.extend_from_slice(path.as_bytes());
        p.push(b'\n');
    }
    crate::files::write_atomically(out, &p)
        .with_context(|| format!("cannot write {}", out.display()))
}

fn check_path_line(path: &str) -> Result<()> {
    ensure!(
        !path.contains('\n') && !path.ends_with('\r'),
        "the path {path:?} cannot be stored one per line in a .paths.txt file"
    );
    Ok(())
}

/// Reads the paths file beside `npy` (one per line, a trailing CR kept as is).
pub fn read_paths(npy: &Path) -> Result<Vec<String>> {
    let p = paths_path(npy);
    let text = crate::files::open_regular(&p).and_then(|mut f| {
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).map(|_| bytes)
    });
    let text = text.with_context(|| {
        format!(
            "cannot read {} (a .npy output keeps its image paths there, one per line)",
            p.display()
        )
    })?;
    let text = String::from_utf8(text).with_context(|| format!("{} is not UTF-8", p.display()))?;
    Ok(text.split_terminator('\n').map(str::to_owned).collect())
}

/// A `.npy` matrix mapped into memory (no copy: 1M × 512 opens instantly).
pub struct MappedNpy {
    map: memmap2::Mmap,
    /// The mapped file, for [`MappedNpy::read_row`].
    file: std::fs::File,
    pub shape: NpyShape,
}

impl MappedNpy {
    pub fn open(path: &Path) -> Result<Self> {
        let file = crate::files::open_regular(path)
            .with_context(|| format!("cannot open the vectors file {}", path.display()))?;
        // SAFETY: read-only map; a concurrent writer appending to the file cannot invalidate the mapped prefix.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("cannot read {}", path.display()))?;
        let shape = parse_header(&map[..map.len().min(4096)], path)?;
        let need = shape.data_offset as u64 + shape.rows * shape.dim as u64 * 4;
        ensure!(
            map.len() as u64 >= need,
            "{} is cut short: its header says {} rows of {} but the file has {} bytes (want {need})",
            path.display(),
            shape.rows,
            shape.dim,
            map.len()
        );
        ensure!(
            shape.data_offset % 4 == 0,
            "{}: data is not 4-byte aligned",
            path.display()
        );
        Ok(MappedNpy { map, file, shape })
    }

    /// Row `i` into `out` by a read of the file (`pread`), not through the
    /// mapping: the same bytes, but no page of the mapping is touched. A
    /// server that scans an 8-bit copy and re-scores a few rows per query
    /// would otherwise map a page (and the kernel a whole large folio around
    /// it, up to 2 MiB) per row read, and hold them.
    #[cfg(unix)]
    pub fn read_row(&self, i: usize, out: &mut [f32]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let dim = self.shape.dim;
        assert!(i < self.shape.rows as usize && out.len() == dim);
        let mut bytes = [0u8; 4096];
        let at = (self.shape.data_offset + i * dim * 4) as u64;
        for (c, chunk) in out.chunks_mut(bytes.len() / 4).enumerate() {
            let b = &mut bytes[..chunk.len() * 4];
            self.file.read_exact_at(b, at + (c * 4096) as u64)?;
            for (x, v) in chunk.iter_mut().zip(b.chunks_exact(4)) {
                *x = f32::from_le_bytes([v[0], v[1], v[2], v[3]]);
            }
        }
        Ok(())
    }

    #[cfg(not(unix))]
    pub fn read_row(&self, _: usize, _: &mut [f32]) -> std::io::Result<()> {
        Err(std::io::Error::other(
            "no positioned reads here: read through the mapping",
        ))
    }

    /// The rows, row-major.
    pub fn data(&self) -> &[f32] {
        let bytes = &self.map[self.shape.data_offset
            ..self.shape.data_offset + self.shape.rows as usize * self.shape.dim * 4];
        // The map is page-aligned and the offset a multiple of 4; fall back to nothing on a big-endian host.
        bytemuck::try_cast_slice(bytes).expect("an aligned little-endian float32 matrix")
    }
}

/// An NPY output read back: the mapped matrix and its paths file.
pub struct MappedVectors {
    npy: MappedNpy,
    paths: Vec<String>,
}

impl MappedVectors {
    /// Maps `path` and reads `x.paths.txt` beside it. A run still writing may
    /// have listed fewer rows in the header than paths (rows are written before
    /// their path line and the header lags): the extra paths are left out.
    pub fn open(path: &Path) -> Result<Self> {
        let npy = MappedNpy::open(path)?;
        let mut paths = read_paths(path)?;
        if paths.len() as u64 != npy.shape.rows {
            if (paths.len() as u64) < npy.shape.rows {
                bail!(
                    "{} has {} rows but {} lists only {} paths",
                    path.display(),
                    npy.shape.rows,
                    paths_path(path).display(),
                    paths.len()
                );
            }
            paths.truncate(npy.shape.rows as usize);
        }
        let dim = npy.shape.dim.max(1);
        if let Some(i) = npy.data().iter().position(|x| !x.is_finite()) {
            bail!(
                "{} holds a NaN or infinite value in row {} ({}); such a row would rank first for every \
                 query — extract that image again, or drop the row",
                path.display(),
                i / dim,
                paths.get(i / dim).map(String::as_str).unwrap_or("?")
            );
        }
        Ok(MappedVectors { npy, paths })
    }
}

impl VectorSource for MappedVectors {
    fn paths(&self) -> &[String] {
        &self.paths
    }
    fn data(&self) -> &[f32] {
        self.npy.data()
    }
    fn dim(&self) -> usize {
        self.npy.shape.dim
    }
    fn read_row(&self, i: usize, out: &mut [f32]) {
        // A failed read (the file cut short under us) falls back to the
        // mapping, which is what every other reader of the rows sees.
        if self.npy.read_row(i, out).is_err() {
            out.copy_from_slice(self.row(i));
        }
    }
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    path: &'a str,
    error: &'a str,
}

/// A frame `--skip-static` skipped, in the error file (done, no failure).
#[derive(Serialize)]
struct SkippedLine<'a> {
    path: &'a str,
    skipped: &'a str,
}

/// The NPY matrix, its paths file and the JSONL error file.
pub struct NpySink {
    out: PathBuf,
    data: File,
    paths: File,
    errors: File,
    dim: usize,
    rows: u64,
    header_rows: u64,
    last_sync: Instant,
}

/// Reads the complete lines of `path` and cuts a torn last line. Returns
/// (lines, byte length kept).
fn complete_lines(file: &mut File, path: &Path) -> Result<Vec<String>> {
    file.seek(SeekFrom::Start(0))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if keep < bytes.len() {
        eprintln!(
            "note: {}: cut a torn last line; that image is done again",
            path.display()
        );
        file.set_len(keep as u64)?;
    }
    let text = String::from_utf8(bytes[..keep].to_vec())
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    Ok(text.split_terminator('\n').map(str::to_owned).collect())
}

impl NpySink {
    /// Opens (or creates) `out` for `dim`-float rows; with `restart` all three
    /// files are emptied, otherwise they are reconciled and the paths already
    /// written (as vectors or errors) returned.
    pub fn open(out: &Path, restart: bool, dim: usize) -> Result<(Self, HashSet<String>)> {
        let open = |p: &Path| {
            OpenOptions::new()
                .create(true)
                .read(true)
                .write(true)
                .truncate(false)
                .open(p)
                .with_context(|| {
                    format!(
                        "cannot open {} for writing (check the folder exists and is writable)",
                        p.display()
                    )
                })
        };
        let (pp, ep) = (paths_path(out), errors_path(out));
        let (mut data, mut paths, mut errors) = (open(out)?, open(&pp)?, open(&ep)?);
        if restart {
            for f in [&data, &paths, &errors] {
                f.set_len(0)?;
            }
        }
        let len = data.metadata()?.len();
        let mut done = HashSet::new();
        let rows = if len == 0 {
            paths.set_len(0)?;
            0
        } else {
            let mut head = vec![0u8; (len as usize).min(4096)];
            data.seek(SeekFrom::Start(0))?;
            data.read_exact(&mut head)?;
            let shape = parse_header(&head, out)?;
            if shape.data_offset != HEADER_LEN || shape.dim != dim {
                bail!(
                    "{} holds {}-float rows with a {}-byte header, not this tool's {dim}-float output; \
                     pass another --output or start over with --restart",
                    out.display(),
                    shape.dim,
                    shape.data_offset
                );
            }
            let full_rows = (len - HEADER_LEN as u64) / (dim as u64 * 4);
            let listed = complete_lines(&mut paths, &pp)?;
            let n = (listed.len() as u64).min(full_rows);
            if n < listed.len() as u64 {
                // Paths without a row can only come from damage (rows are written first).
                eprintln!(
                    "note: {}: {} paths have no row; they are done again",
                    pp.display(),
                    listed.len() as u64 - n
                );
            }
            if n < full_rows {
                eprintln!(
                    "note: {}: {} rows have no path line (a killed run); they are done again",
                    out.display(),
                    full_rows - n
                );
            }
            let kept: usize = listed[..n as usize].iter().map(|p| p.len() + 1).sum();
            paths.set_len(kept as u64)?;
            data.set_len(HEADER_LEN as u64 + n * dim as u64 * 4)?;
            done.extend(listed.into_iter().take(n as usize));
            if (done.len() as u64) < n {
                // Rows cannot be taken out of the matrix in place; readers take the first row of a path.
                eprintln!(
                    "warning: {} holds {} repeated paths (the same path in two rows); `search` and \
                     `convert` use the first row of each — convert it to a new file to drop the others",
                    out.display(),
                    n - done.len() as u64
                );
            }
            n
        };
        // An error record of a path that has a row (or a second one of a path) is
        // stale: reported, and dropped from the error file.
        let with_rows = done.clone();
        let (mut kept, mut stale) = (Vec::new(), 0usize);
        let mut failed = HashSet::new();
        for line in complete_lines(&mut errors, &ep)? {
            if line.is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&line).with_context(|| {
                format!(
                    "{} holds a line that is not JSON; repair it or start over with --restart",
                    ep.display()
                )
            })?;
            match v["path"].as_str() {
                Some(p) if with_rows.contains(p) || !failed.insert(p.to_owned()) => stale += 1,
                _ => kept.push(line),
            }
        }
        if stale > 0 {
            eprintln!(
                "note: {} holds {stale} error records of paths that have a row or another error record; dropped",
                ep.display()
            );
            let text: String = kept.iter().map(|l| format!("{l}\n")).collect();
            crate::files::write_atomically(&ep, text.as_bytes())
                .with_context(|| format!("cannot rewrite {}", ep.display()))?;
            errors = open(&ep)?;
        }
        done.extend(failed);
        data.seek(SeekFrom::Start(0))?;
        data.write_all(&header(rows, dim))?;
        data.seek(SeekFrom::End(0))?;
        paths.seek(SeekFrom::End(0))?;
        errors.seek(SeekFrom::End(0))?;
        let sink = NpySink {
            out: out.to_path_buf(),
            data,
            paths,
            errors,
            dim,
            rows,
            header_rows: rows,
            last_sync: Instant::now(),
        };
        Ok((sink, done))
    }

    /// Rows written so far (including those of earlier runs).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn maybe_sync(&mut self) -> Result<()> {
        if self.last_sync.elapsed() >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    /// One line of the error file, written whole.
    fn append_error_line(&mut self, mut line: Vec<u8>) -> Result<()> {
        line.push(b'\n');
        self.errors
            .write_all(&line)
            .with_context(|| format!("cannot write to {}", errors_path(&self.out).display()))?;
        self.maybe_sync()
    }

    fn write_header(&mut self) -> Result<()> {
        if self.header_rows != self.rows {
            self.data.seek(SeekFrom::Start(0))?;
            self.data.write_all(&header(self.rows, self.dim))?;
            self.data.seek(SeekFrom::End(0))?;
            self.header_rows = self.rows;
        }
        Ok(())
    }
}

impl VectorSink for NpySink {
    fn write_vector(&mut self, path: &str, vector: &[f32]) -> Result<()> {
        super::check_finite(path, vector)?;
        ensure!(
            vector.len() == self.dim,
            "a {}-float vector for {path}; {} holds {}-float rows",
            vector.len(),
            self.out.display(),
            self.dim
        );
        check_path_line(path)?;
        let mut row = Vec::with_capacity(self.dim * 4);
        for x in vector {
            row.extend_from_slice(&x.to_le_bytes());
        }
        // Row first, then its path line: a kill in between leaves a row without a path, which open() drops.
        self.data
            .write_all(&row)
            .with_context(|| format!("cannot write to {} (disk full?)", self.out.display()))?;
        let mut line = Vec::with_capacity(path.len() + 1);
        line.extend_from_slice(path.as_bytes());
        line.push(b'\n');
        self.paths
            .write_all(&line)
            .with_context(|| format!("cannot write to {}", paths_path(&self.out).display()))?;
        self.rows += 1;
        self.maybe_sync()
    }

    fn write_error(&mut self, path: &str, error: &str) -> Result<()> {
        let line = serde_json::to_vec(&ErrorLine { path, error })?;
        self.append_error_line(line)
    }

    fn write_skipped(&mut self, path: &str, why: &str) -> Result<()> {
        let line = serde_json::to_vec(&SkippedLine { path, skipped: why })?;
        self.append_error_line(line)
    }

    /// Rewrites the header with the current row count and forces all three files to disk.
    fn sync(&mut self) -> Result<()> {
        self.write_header()?;
        self.data
            .sync_data()
            .with_context(|| format!("cannot sync {}", self.out.display()))?;
        self.paths.sync_data()?;
        self.errors.sync_data()?;
        self.last_sync = Instant::now();
        Ok(())
    }
}

impl Drop for NpySink {
    fn drop(&mut self) {
        // A file closed normally is always loadable (the header matches the rows).
        let _ = self.write_header();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_numpys() {
        let h = header(3, 512);
        let expect =
            b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (3, 512), }";
        assert_eq!(&h[..expect.len()], expect);
        assert!(h[expect.len()..127].iter().all(|&b| b == b' '));
        assert_eq!(h[127], b'\n');
        let s = parse_header(&h, Path::new("x")).unwrap();
        assert_eq!(
            s,
            NpyShape {
                rows: 3,
                dim: 512,
                data_offset: 128
            }
        );
        assert_eq!(
            parse_header(&header(u64::MAX, 512), Path::new("x"))
                .unwrap()
                .rows,
            u64::MAX
        );
    }

    /// Rows read from the file are the mapped rows, bit for bit, at a dimension
    /// that spans several 4 KiB reads and one that does not.
    #[test]
    fn rows_read_from_the_file_equal_the_mapped_rows() {
        let dir = tempfile::tempdir().unwrap();
        for dim in [3usize, 1500] {
            let out = dir.path().join(format!("v{dim}.npy"));
            let paths: Vec<String> = (0..7).map(|i| format!("p{i}")).collect();
            let data: Vec<f32> = (0..7 * dim)
                .map(|i| f32::from_bits((i as u32).wrapping_mul(2654435761) & 0xBF7F_FFFF))
                .collect();
            write_npy(&out, &paths, &data, dim).unwrap();
            let v = MappedVectors::open(&out).unwrap();
            for i in 0..7 {
                let mut got = vec![f32::NAN; dim];
                v.npy.read_row(i, &mut got).unwrap();
                let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got),
                    bits(&data[i * dim..(i + 1) * dim]),
                    "dim {dim} row {i}"
                );
                assert_eq!(bits(&v.row_owned(i)), bits(v.row(i)));
            }
        }
    }
}
