//! Import of keras_rmac's `PCAmatrices.mat` (the PCA-whitening
//! learned on Landmarks) into [`PcaWeights`].
//!
//! A small reader for MATLAB's level-5 MAT files (the format of `save -v7` and of
//! `scipy.io.savemat`):
//!
//! * a 128-byte header: 116 bytes of text, 8 of subsystem offset, a 2-byte version
//!   and the endian indicator `IM` (little-endian file) or `MI` (big-endian);
//! * then data elements, each an 8-byte tag (u32 type, u32 byte count) and its data,
//!   padded to 8 bytes; or a *small* element whose type (low 16 bits) and byte count
//!   (high 16 bits, ≤ 4) share the first word, its data in the second word;
//! * `miCOMPRESSED` (15) elements hold a zlib stream of further elements (no padding
//!   after them); `miMATRIX` (14) elements hold the array flags (`miUINT32`), the
//!   dimensions (`miINT32`), the name (`miINT8`) and the real part, column-major,
//!   in any numeric storage type (MATLAB may store doubles as smaller integers).
//!
//! The PCA is `y = W·x + b` with `W` exactly the stored `weights` (512×512) and `b`
//! the stored `bias` (512×1 or 1×512), each value rounded once from f64 to f32.

use std::io::Read;
use std::path::Path;

use super::pca::PcaWeights;
use crate::vgg16::spec::FEATURE_DIM;
use crate::vgg16::weights::{WeightsError, with_mapped_file};

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

/// Classes of numeric (dense) arrays: mxDOUBLE_CLASS (6) … mxUINT64_CLASS (15).
const NUMERIC_CLASSES: std::ops::RangeInclusive<u32> = 6..=15;
/// Array flag bit of complex arrays.
const FLAG_COMPLEX: u32 = 0x0800;

/// Upper bound of a decompressed element (guards against zip bombs): 1 GiB.
const MAX_INFLATED: u64 = 1 << 30;

/// A numeric array read from a MAT file.
#[derive(Clone, Debug, PartialEq)]
pub struct MatArray {
    pub name: String,
    pub dims: Vec<usize>,
    /// Column-major values, converted to f64.
    pub data: Vec<f64>,
}

impl MatArray {
    /// Element `(r, c)` of a 2-D array (column-major storage).
    pub fn at(&self, r: usize, c: usize) -> f64 {
        self.data[c * self.dims[0] + r]
    }
}

/// Reads keras_rmac's `PCAmatrices.mat`: `weights` (512×512) and `bias` (512×1).
pub fn import_pca_mat(path: &Path) -> Result<PcaWeights, WeightsError> {
    with_mapped_file(path, PCA_MAT_MISSING_HINT, |bytes| {
        pca_from_mat_bytes(bytes, path)
    })
}

const PCA_MAT_MISSING_HINT: &str =
    "it is keras_rmac's data/PCAmatrices.mat (see weights/README.md)";

/// [`import_pca_mat`] on bytes in memory; `origin` names them in errors.
pub fn pca_from_mat_bytes(bytes: &[u8], origin: &Path) -> Result<PcaWeights, WeightsError> {
    let arrays = read_mat_bytes(bytes, origin)?;
    let find = |name: &str| {
        arrays
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| WeightsError::MissingTensor {
                path: origin.to_owned(),
                tensor: name.to_owned(),
                available: if arrays.is_empty() {
                    "no numeric arrays".into()
                } else {
                    let list: Vec<String> = arrays
                        .iter()
                        .map(|a| format!("`{}` {:?}", a.name, a.dims))
                        .collect();
                    format!("{} numeric array(s): {}", arrays.len(), list.join(", "))
                },
            })
    };
    let n = FEATURE_DIM;
    let w = find("weights")?;
    if w.dims != [n, n] {
        return Err(WeightsError::WrongShape {
            path: origin.to_owned(),
            tensor: "weights".into(),
            expected: vec![n, n],
            found: w.dims.clone(),
        });
    }
    let b = find("bias")?;
    if !(b.dims == [n, 1] || b.dims == [1, n] || b.dims == [n]) {
        return Err(WeightsError::WrongShape {
            path: origin.to_owned(),
            tensor: "bias".into(),
            expected: vec![n, 1],
            found: b.dims.clone(),
        });
    }
    let mut weight = Vec::with_capacity(n * n);
    for r in 0..n {
        for c in 0..n {
            weight.push(w.at(r, c) as f32);
        }
    }
    let bias: Vec<f32> = b.data.iter().map(|&v| v as f32).collect();
    for (name, data) in [("weights", &weight), ("bias", &bias)] {
        if let Some(index) = data.iter().position(|v| !v.is_finite()) {
            return Err(WeightsError::NonFinite {
                path: origin.to_owned(),
                tensor: name.into(),
                index,
                value: data[index],
            });
        }
    }
    Ok(PcaWeights { weight, bias })
}

/// All dense, real, numeric arrays of a level-5 MAT file (others are skipped).
pub fn read_mat_bytes(bytes: &[u8], origin: &Path) -> Result<Vec<MatArray>, WeightsError> {
    let malformed = |reason: String| WeightsError::Malformed {
        path: origin.to_owned(),
        format: "MAT file",
        reason,
    };
    if bytes.len() < 128 {
        return Err(malformed(format!(
            "{} bytes, shorter than the 128-byte MAT header",
            bytes.len()
        )));
    }
    let big = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        _ => {
            let hint = if bytes.starts_with(b"\x89HDF") || bytes.get(512..516) == Some(b"\x89HDF") {
                " (this is an HDF5 / MAT v7.3 file; re-save it with `save -v7`)"
            } else {
                ""
            };
            return Err(malformed(format!(
                "no MAT level-5 endian indicator at bytes 126..128{hint}"
            )));
        }
    };
    let mut out = Vec::new();
    read_elements(&bytes[128..], big, true, &mut out).map_err(malformed)?;
    Ok(out)
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    big: bool,
}

impl<'a> Cursor<'a> {
    fn u32_at(&self, at: usize) -> u32 {
        let b: [u8; 4] = self.buf[at..at + 4].try_into().unwrap();
        if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    /// Next element: (type, data); advances past it and its padding.
    /// `pad_compressed`: whether a top-level compressed element is padded (it is not).
    fn element(&mut self) -> Result<(u32, &'a [u8]), String> {
        if self.buf.len() - self.pos < 8 {
            return Err(format!("truncated element tag at offset {}", self.pos));
        }
        let first = self.u32_at(self.pos);
        if first >> 16 != 0 {
            // Small data element: type in the low half, size in the high half.
            let (ty, n) = (first & 0xffff, (first >> 16) as usize);
            if n > 4 {
                return Err(format!(
                    "small data element of {n} bytes at offset {}",
                    self.pos
                ));
            }
            let data = &self.buf[self.pos + 4..self.pos + 4 + n];
            self.pos += 8;
            return Ok((ty, data));
        }
        let ty = first;
        let n = self.u32_at(self.pos + 4) as usize;
        let start = self.pos + 8;
        let end = start
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "element of {n} bytes at offset {} runs past the end",
                    self.pos
                )
            })?;
        let data = &self.buf[start..end];
        self.pos = if ty == MI_COMPRESSED {
            end
        } else {
            (end + 7) & !7
        }
        .min(self.buf.len());
        Ok((ty, data))
    }
}

fn read_elements(buf: &[u8], big: bool, top: bool, out: &mut Vec<MatArray>) -> Result<(), String> {
    let mut c = Cursor { buf, pos: 0, big };
    while c.pos < buf.len() {
        // Trailing zero padding at the end of a file or stream is harmless.
        if buf[c.pos..].iter().all(|&b| b == 0) {
            break;
        }
        let (ty, data) = c.element()?;
        match ty {
            MI_COMPRESSED if top => {
                let mut inflated = Vec::new();
                flate2::read::ZlibDecoder::new(data)
                    .take(MAX_INFLATED)
                    .read_to_end(&mut inflated)
                    .map_err(|e| format!("bad zlib stream: {e}"))?;
                read_elements(&inflated, big, false, out)?;
            }
            MI_MATRIX => {
                if let Some(a) = read_matrix(data, big)? {
                    out.push(a);
                }
            }
            _ => {} // other top-level elements are not variables we need
        }
    }
    Ok(())
}

/// One miMATRIX element; `None` for arrays that are not dense real numeric ones.
fn read_matrix(buf: &[u8], big: bool) -> Result<Option<MatArray>, String> {
    if buf.is_empty() {
        return Ok(None); // empty array (e.g. an empty cell)
    }
    let mut c = Cursor { buf, pos: 0, big };
    let (ty, flags) = c.element()?;
    if ty != MI_UINT32 || flags.len() != 8 {
        return Err(format!(
            "array flags of type {ty} and {} bytes",
            flags.len()
        ));
    }
    let flags_word = if big {
        u32::from_be_bytes(flags[..4].try_into().unwrap())
    } else {
        u32::from_le_bytes(flags[..4].try_into().unwrap())
    };
    let class = flags_word & 0xff;
    let (ty, dims_raw) = c.element()?;
    if ty != MI_INT32 {
        return Err(format!("dimensions of type {ty}"));
    }
    let dims: Vec<usize> = numbers(MI_INT32, dims_raw, big)?
        .into_iter()
        .map(|d| d.max(0.0) as usize)
        .collect();
    let (_, name_raw) = c.element()?;
    let name = String::from_utf8_lossy(name_raw).into_owned();
    if !NUMERIC_CLASSES.contains(&class) {
        return Ok(None);
    }
    let (ty, real) = c.element()?;
    let data = numbers(ty, real, big)?;
    let count: usize = dims.iter().product();
    if data.len() != count {
        return Err(format!(
            "array `{name}`: {} values for dimensions {dims:?}",
            data.len()
        ));
    }
    if flags_word & FLAG_COMPLEX != 0 {
        return Err(format!("array `{name}` is complex"));
    }
    Ok(Some(MatArray { name, dims, data }))
}

/// The values of a numeric element, converted to f64.
fn numbers(ty: u32, raw: &[u8], big: bool) -> Result<Vec<f64>, String> {
    macro_rules! conv {
        ($t:ty) => {{
            const N: usize = std::mem::size_of::<$t>();
            if !raw.len().is_multiple_of(N) {
                return Err(format!("{} bytes of element type {ty}", raw.len()));
            }
            raw.chunks_exact(N)
                .map(|b| {
                    let a: [u8; N] = b.try_into().unwrap();
                    (if big {
                        <$t>::from_be_bytes(a)
                    } else {
                        <$t>::from_le_bytes(a)
                    }) as f64
                })
                .collect()
        }};
    }
    Ok(match ty {
        MI_INT8 => conv!(i8),
        MI_UINT8 => conv!(u8),
        MI_INT16 => conv!(i16),
        MI_UINT16 => conv!(u16),
        MI_INT32 => conv!(i32),
        MI_UINT32 => conv!(u32),
        MI_SINGLE => conv!(f32),
        MI_DOUBLE => conv!(f64),
        MI_INT64 => conv!(i64),
        MI_UINT64 => conv!(u64),
        _ => return Err(format!("unsupported numeric element type {ty}")),
    })
}
