//! VGG16 weights in the contract's safetensors layout (docs/contract.md#weights): loading
//! with validation of every tensor, and saving (importers, synthetic test weights). The
//! safetensors checks here also serve the PCA file (`rmac::pca::PcaWeights`).
//!
//! Loading checks, for every expected tensor, that it exists, is `F32`, has the
//! contract's shape (docs/contract.md#weights) and holds only finite values; every error names the file and
//! the tensor. Tensors the file has beyond the expected ones are **not** an error
//! (a full VGG16 export with its dense layers is still usable): they are reported
//! once on stderr as a warning and ignored.
//!
//! Writing goes through `safetensors::serialize` (little-endian f32). That function
//! orders the tensors in the file by name (as Python's `safetensors` does), so the
//! bytes are canonical: the same weights always give the same file and sha256.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, View};

use super::spec::{ConvSpec, KERNEL, VGG16_CONVS};

/// One convolution's parameters.
#[derive(Clone, Debug)]
pub struct ConvWeights {
    pub spec: ConvSpec,
    /// `[3, 3, cin, cout]` row-major (HWIO, cross-correlation), as in the file.
    pub kernel: Vec<f32>,
    /// `[cout]`.
    pub bias: Vec<f32>,
}

/// All 13 convolutions in forward order (the order of [`super::spec::VGG16_CONVS`]).
#[derive(Clone, Debug)]
pub struct Vgg16Weights {
    pub layers: Vec<ConvWeights>,
}

/// What to do when a VGG16 weights file is missing.
pub const VGG16_MISSING_HINT: &str = "run `rmac-native weights fetch` (from any folder) to install the genuine VGG16 weights in the user cache, \
     or pass --weights FILE";

/// Everything that can go wrong reading, writing or importing weights. Every
/// variant names the file; those about one tensor name the tensor too.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{}: not found; {hint}", path.display())]
    NotFound { path: PathBuf, hint: &'static str },

    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{}: cannot write: {reason}", path.display())]
    Write { path: PathBuf, reason: String },

    #[error("{}: not a safetensors file ({reason})", path.display())]
    NotSafetensors { path: PathBuf, reason: String },

    #[error(
        "{}: truncated (incomplete download?): tensor `{tensor}` needs {needed} bytes, the file has {have}",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        tensor: String,
        needed: u64,
        have: u64,
    },

    #[error("{}: tensor `{tensor}` is missing; the file has {available}", path.display())]
    MissingTensor {
        path: PathBuf,
        tensor: String,
        available: String,
    },

    #[error("{}: tensor `{tensor}` has shape {found:?}, expected {expected:?}", path.display())]
    WrongShape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("{}: tensor `{tensor}` has dtype {found}; it must be F32 (little-endian float32)", path.display())]
    WrongDtype {
        path: PathBuf,
        tensor: String,
        found: String,
    },

    #[error("{}: tensor `{tensor}` has a non-finite value ({value}) at flat index {index}", path.display())]
    NonFinite {
        path: PathBuf,
        tensor: String,
        index: usize,
        value: f32,
    },

    #[error("{}: sha256 of the {what} is {found}, expected {expected}; {hint}", path.display())]
    ChecksumMismatch {
        path: PathBuf,
        what: String,
        found: String,
        expected: String,
        hint: &'static str,
    },

    #[error("{}: malformed {format}: {reason}", path.display())]
    Malformed {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
}

impl WeightsError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::NotFound { path, .. }
            | Self::Read { path, .. }
            | Self::Write { path, .. }
            | Self::NotSafetensors { path, .. }
            | Self::Truncated { path, .. }
            | Self::MissingTensor { path, .. }
            | Self::WrongShape { path, .. }
            | Self::WrongDtype { path, .. }
            | Self::NonFinite { path, .. }
            | Self::ChecksumMismatch { path, .. }
            | Self::Malformed { path, .. } => path,
        }
    }

    /// The tensor the error is about, if it is about one.
    pub fn tensor(&self) -> Option<&str> {
        match self {
            Self::Truncated { tensor, .. }
            | Self::MissingTensor { tensor, .. }
            | Self::WrongShape { tensor, .. }
            | Self::WrongDtype { tensor, .. }
            | Self::NonFinite { tensor, .. } => Some(tensor),
            _ => None,
        }
    }
}

/// Reads a whole file through a memory map and hands the bytes to `f`.
pub(crate) fn with_mapped_file<T>(
    path: &Path,
    missing_hint: &'static str,
    f: impl FnOnce(&[u8]) -> Result<T, WeightsError>,
) -> Result<T, WeightsError> {
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => WeightsError::NotFound {
            path: path.to_owned(),
            hint: missing_hint,
        },
        _ => WeightsError::Read {
            path: path.to_owned(),
            source: e,
        },
    })?;
    let len = file
        .metadata()
        .map_err(|e| WeightsError::Read {
            path: path.to_owned(),
            source: e,
        })?
        .len();
    if len == 0 {
        return f(&[]);
    }
    // SAFETY: the map is read-only and lives only for this call; the bytes are copied
    // out (and validated) before it is dropped. A concurrent writer truncating the
    // file could still fault the process, which is the documented limit of mmap.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| WeightsError::Read {
        path: path.to_owned(),
        source: e,
    })?;
    f(&map)
}

/// Little-endian f32 tensor data for `safetensors::serialize`.
struct F32View<'a> {
    shape: Vec<usize>,
    data: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        if cfg!(target_endian = "little") {
            Cow::Borrowed(bytemuck::cast_slice(self.data))
        } else {
            Cow::Owned(self.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
    }
    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

/// One tensor to write or expect: key, shape.
fn expected_vgg16() -> Vec<(String, Vec<usize>)> {
    VGG16_CONVS
        .iter()
        .flat_map(|s| {
            [
                (s.kernel_key(), vec![KERNEL, KERNEL, s.cin, s.cout]),
                (s.bias_key(), vec![s.cout]),
            ]
        })
        .collect()
}

/// Checks one in-memory tensor before writing it.
fn check_tensor(
    origin: &Path,
    key: &str,
    shape: &[usize],
    data: &[f32],
) -> Result<(), WeightsError> {
    let n: usize = shape.iter().product();
    if data.len() != n {
        return Err(WeightsError::WrongShape {
            path: origin.to_owned(),
            tensor: key.to_owned(),
            expected: shape.to_vec(),
            found: vec![data.len()],
        });
    }
    check_finite(origin, key, data)
}

fn check_finite(origin: &Path, key: &str, data: &[f32]) -> Result<(), WeightsError> {
    match data.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(WeightsError::NonFinite {
            path: origin.to_owned(),
            tensor: key.to_owned(),
            index,
            value: data[index],
        }),
        None => Ok(()),
    }
}

/// Serializes `(key, shape, data)` triples (already checked).
pub(crate) fn serialize(
    origin: &Path,
    tensors: &[(String, Vec<usize>, &[f32])],
) -> Result<Vec<u8>, WeightsError> {
    for (key, shape, data) in tensors {
        check_tensor(origin, key, shape, data)?;
    }
    let views = tensors.iter().map(|(k, shape, data)| {
        (
            k.clone(),
            F32View {
                shape: shape.clone(),
                data,
            },
        )
    });
    safetensors::serialize(views, None).map_err(|e| WeightsError::Write {
        path: origin.to_owned(),
        reason: e.to_string(),
    })
}

/// A parsed safetensors file being checked against an expected tensor list.
pub(crate) struct Checked<'a> {
    st: SafeTensors<'a>,
    origin: &'a Path,
}

impl<'a> Checked<'a> {
    pub(crate) fn parse(bytes: &'a [u8], origin: &'a Path) -> Result<Self, WeightsError> {
        if bytes.is_empty() {
            return Err(WeightsError::NotSafetensors {
                path: origin.to_owned(),
                reason: "empty file".into(),
            });
        }
        match SafeTensors::deserialize(bytes) {
            Ok(st) => Ok(Self { st, origin }),
            Err(SafeTensorError::MetadataIncompleteBuffer) => Err(truncation_error(bytes, origin)),
            Err(e) => Err(WeightsError::NotSafetensors {
                path: origin.to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    fn available(&self) -> String {
        let mut names = self.st.names();
        names.sort();
        const SHOW: usize = 30;
        if names.is_empty() {
            return "no tensors".into();
        }
        let shown: Vec<String> = names.iter().take(SHOW).map(|n| format!("`{n}`")).collect();
        let mut s = format!("{} tensor(s): {}", names.len(), shown.join(", "));
        if names.len() > SHOW {
            s.push_str(&format!(", … ({} more)", names.len() - SHOW));
        }
        s
    }

    /// The shape of `key`, if the file has it.
    pub(crate) fn shape(&self, key: &str) -> Option<Vec<usize>> {
        self.st.tensor(key).ok().map(|v| v.shape().to_vec())
    }

    /// The f32 values of `key`, checked for dtype, shape and finiteness.
    pub(crate) fn tensor(&self, key: &str, shape: &[usize]) -> Result<Vec<f32>, WeightsError> {
        let view = self
            .st
            .tensor(key)
            .map_err(|_| WeightsError::MissingTensor {
                path: self.origin.to_owned(),
                tensor: key.to_owned(),
                available: self.available(),
            })?;
        if view.dtype() != Dtype::F32 {
            return Err(WeightsError::WrongDtype {
                path: self.origin.to_owned(),
                tensor: key.to_owned(),
                found: format!("{:?}", view.dtype()),
            });
        }
        if view.shape() != shape {
            return Err(WeightsError::WrongShape {
                path: self.origin.to_owned(),
                tensor: key.to_owned(),
                expected: shape.to_vec(),
                found: view.shape().to_vec(),
            });
        }
        // The data of a safetensors file need not be 4-byte aligned (header length
        // is arbitrary, the map's base is only page aligned): read bytewise.
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        check_finite(self.origin, key, &data)?;
        Ok(data)
    }

    /// Names in the file that are not in `expected` (sorted).
    fn extras(&self, expected: &[(String, Vec<usize>)]) -> Vec<String> {
        let want: BTreeSet<&str> = expected.iter().map(|(k, _)| k.as_str()).collect();
        let mut extra: Vec<String> = self
            .st
            .names()
            .into_iter()
            .filter(|n| !want.contains(n))
            .map(str::to_owned)
            .collect();
        extra.sort();
        extra
    }

    pub(crate) fn warn_extras(&self, expected: &[(String, Vec<usize>)]) {
        let extra = self.extras(expected);
        if !extra.is_empty() {
            let shown: Vec<&str> = extra.iter().take(10).map(String::as_str).collect();
            eprintln!(
                "warning: {}: ignoring {} unexpected tensor(s): {}{}",
                self.origin.display(),
                extra.len(),
                shown.join(", "),
                if extra.len() > shown.len() {
                    ", …"
                } else {
                    ""
                }
            );
        }
    }
}

/// A precise error for a file whose data section is shorter than its header says:
/// the first tensor (by offset) that does not fit.
fn truncation_error(bytes: &[u8], origin: &Path) -> WeightsError {
    let generic = || WeightsError::NotSafetensors {
        path: origin.to_owned(),
        reason: "the data section does not match the header (truncated or corrupt)".into(),
    };
    let Some(n) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    else {
        return generic();
    };
    let Some(header) = usize::try_from(n)
        .ok()
        .and_then(|n| bytes.get(8..8usize.checked_add(n)?))
    else {
        return generic();
    };
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(header)
    else {
        return generic();
    };
    let have = (bytes.len() - 8 - header.len()) as u64;
    let mut worst: Option<(u64, u64, String)> = None; // (begin, end, name)
    for (name, info) in &map {
        let Some(offs) = info.get("data_offsets").and_then(|o| o.as_array()) else {
            continue;
        };
        let (Some(b), Some(e)) = (
            offs.first().and_then(|v| v.as_u64()),
            offs.get(1).and_then(|v| v.as_u64()),
        ) else {
            continue;
        };
        if e > have && worst.as_ref().is_none_or(|(wb, _, _)| b < *wb) {
            worst = Some((b, e, name.clone()));
        }
    }
    match worst {
        Some((_, end, tensor)) => WeightsError::Truncated {
            path: origin.to_owned(),
            tensor,
            needed: end,
            have,
        },
        None => generic(),
    }
}

impl Vgg16Weights {
    /// Loads and validates a VGG16 weights file (memory mapped).
    pub fn load(path: &Path) -> Result<Self, WeightsError> {
        with_mapped_file(path, VGG16_MISSING_HINT, |bytes| {
            Self::from_safetensors_bytes(bytes, path)
        })
    }

    /// Parses and validates the bytes of a VGG16 safetensors file; `origin` names it in errors.
    pub fn from_safetensors_bytes(bytes: &[u8], origin: &Path) -> Result<Self, WeightsError> {
        let file = Checked::parse(bytes, origin)?;
        let layers = VGG16_CONVS
            .iter()
            .map(|spec| {
                let kernel =
                    file.tensor(&spec.kernel_key(), &[KERNEL, KERNEL, spec.cin, spec.cout])?;
                let bias = file.tensor(&spec.bias_key(), &[spec.cout])?;
                Ok(ConvWeights {
                    spec: *spec,
                    kernel,
                    bias,
                })
            })
            .collect::<Result<Vec<_>, WeightsError>>()?;
        file.warn_extras(&expected_vgg16());
        Ok(Self { layers })
    }

    /// The safetensors bytes of these weights (validated first; `origin` names the
    /// destination in errors).
    pub fn to_safetensors_bytes(&self, origin: &Path) -> Result<Vec<u8>, WeightsError> {
        self.check_layers(origin)?;
        let tensors: Vec<(String, Vec<usize>, &[f32])> = self
            .layers
            .iter()
            .flat_map(|l| {
                let s = l.spec;
                [
                    (
                        s.kernel_key(),
                        vec![KERNEL, KERNEL, s.cin, s.cout],
                        l.kernel.as_slice(),
                    ),
                    (s.bias_key(), vec![s.cout], l.bias.as_slice()),
                ]
            })
            .collect();
        serialize(origin, &tensors)
    }

    /// Writes the weights to `path` (atomically: a temporary file, then a rename).
    pub fn save(&self, path: &Path) -> Result<(), WeightsError> {
        let bytes = self.to_safetensors_bytes(path)?;
        write_file(path, &bytes)
    }

    /// The layers must be the 13 of the spec, in order.
    fn check_layers(&self, origin: &Path) -> Result<(), WeightsError> {
        if self.layers.len() != VGG16_CONVS.len() {
            return Err(WeightsError::Write {
                path: origin.to_owned(),
                reason: format!(
                    "{} layers, VGG16 has {}",
                    self.layers.len(),
                    VGG16_CONVS.len()
                ),
            });
        }
        for (l, spec) in self.layers.iter().zip(VGG16_CONVS.iter()) {
            if l.spec != *spec {
                return Err(WeightsError::Write {
                    path: origin.to_owned(),
                    reason: format!(
                        "layer {} ({} → {} channels) where VGG16 has {} ({} → {})",
                        l.spec.name, l.spec.cin, l.spec.cout, spec.name, spec.cin, spec.cout
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Writes a weights file atomically (never half a file), naming it in the error.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), WeightsError> {
    crate::files::write_atomically(path, bytes).map_err(|e| WeightsError::Write {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}
