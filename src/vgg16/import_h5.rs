//! Import of Keras `.h5` VGG16 weights (`rmac-native weights import FILE.h5`).
//!
//! HDF5 is read through the `hdf5-metno` crate (Debian's `libhdf5-dev`): cargo feature `h5`, on by
//! default; without it the rest of the engine links no HDF5.
//!
//! # Layout read (Keras 1 and 2, `save_weights` and full-model `save`)
//!
//! ```text
//! /                       attrs: layer_names = [b"input_1", b"block1_conv1", …]
//!                                (optional) backend = "theano" | "tensorflow", keras_version
//! /model_weights/…        the same, for a whole-model file (`model.save`)
//! /<layer>                attr weight_names = [b"block1_conv1_W_1:0", b"block1_conv1_b_1:0"]
//!                                      or [b"block1_conv1/kernel:0", b"block1_conv1/bias:0"]
//! /<layer>/<weight name>  float32 (or float64) datasets; the name may contain `/`
//! ```
//!
//! Keras 3's own `.weights.h5` (`layers/<auto name>/vars/0`, `…/1`, the layer's
//! name in the `vars` group's attribute `name`) is read too (HWIO, tf).
//!
//! A layer is a convolution when it has exactly one 4-d and one 1-d weight
//! (kernel and bias); other layers (input, pooling, the fc layers of the full
//! file) are skipped. Without `layer_names`, the groups of the file are used
//! (sorted); without `weight_names`, the datasets under the layer's group.
//!
//! # Kernel layout and convention
//!
//! Two independent questions:
//!
//! * **Layout** (from the shape, with the bias length `cout`): `[kh, kw, cin, cout]`
//!   (HWIO: TensorFlow, and Keras 2 whatever the backend) or `[cout, cin, kh, kw]`
//!   (OIHW: Keras 1 layers with `dim_ordering="th"`). When both fit (all four
//!   dimensions equal) the convention decides: `th` → OIHW, `tf` → HWIO.
//! * **Convention**: `tf` kernels are cross-correlation kernels (what the
//!   contract (docs/contract.md#weights) stores, and what Keras/TensorFlow compute); `th` kernels are
//!   Theano's: a true convolution, i.e. the kernel **flipped 180° spatially**
//!   relative to cross-correlation. Importing `th` flips each kernel back:
//!   `hwio[h][w][i][o] = src[kh−1−h][kw−1−w]` (after the layout change).
//!
//! The convention is `--convention tf|th` when given; otherwise, in order:
//! 1. the root attribute `backend` (`theano` → th, anything else → tf),
//! 2. the file name (`…th_kernels…` → th, `…tf_kernels…` → tf),
//! 3. the layout (OIHW kernels → th, as in Keras 1 Theano files; HWIO → tf).
//!
//! The decision and its reason are in the report (printed on stderr by the
//! command), with a warning when the attribute and the file name disagree.
//! `vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5` → tf (HWIO, as is);
//! keras_rmac's `vgg16_weights_th_dim_ordering_th_kernels.h5` → th (OIHW, flipped).

use std::fmt;
use std::path::{Path, PathBuf};

use hdf5_metno as h5;
use hdf5_metno::types::{FixedAscii, FixedUnicode, TypeDescriptor, VarLenAscii, VarLenUnicode};

pub use super::keras_file::{Convention, is_hdf5};
use super::spec::{KERNEL, VGG16_CONVS};
use super::weights::{ConvWeights, Vgg16Weights, WeightsError};

/// How a kernel is laid out in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `[kh, kw, cin, cout]`.
    Hwio,
    /// `[cout, cin, kh, kw]`.
    Oihw,
}

/// One convolution read from a Keras file, converted to the contract's HWIO (docs/contract.md#weights)
/// cross-correlation.
#[derive(Clone, Debug)]
pub struct H5Conv {
    pub name: String,
    /// `[kh, kw, cin, cout]`.
    pub shape: [usize; 4],
    /// HWIO, cross-correlation, row-major.
    pub kernel: Vec<f32>,
    pub bias: Vec<f32>,
    /// Shape as stored in the file.
    pub source_shape: Vec<usize>,
    pub layout: Layout,
}

/// How an import went.
#[derive(Clone, Debug)]
pub struct H5Report {
    pub input: PathBuf,
    pub convention: Convention,
    /// Why that convention (flag, attribute, file name, layout).
    pub reason: String,
    /// Warnings (e.g. attribute and file name disagree).
    pub warnings: Vec<String>,
    /// Per convolution: name, source shape, layout.
    pub layers: Vec<(String, Vec<usize>, Layout)>,
    /// Layers of the file that are not convolutions (skipped).
    pub skipped: Vec<String>,
}

impl fmt::Display for H5Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        writeln!(
            f,
            "{}: Keras HDF5, {} kernels ({})",
            self.input.display(),
            self.convention,
            self.reason
        )?;
        for (name, shape, layout) in &self.layers {
            let what = match (layout, self.convention) {
                (Layout::Hwio, Convention::Tf) => "HWIO, as is",
                (Layout::Hwio, Convention::Th) => "HWIO, flipped 180°",
                (Layout::Oihw, Convention::Tf) => "OIHW → HWIO",
                (Layout::Oihw, Convention::Th) => "OIHW → HWIO, flipped 180°",
            };
            writeln!(f, "  {name:<13} {shape:?} {what}")?;
        }
        if !self.skipped.is_empty() {
            write!(
                f,
                "  skipped (not convolutions): {}",
                self.skipped.join(", ")
            )?;
        }
        Ok(())
    }
}

fn malformed(path: &Path, reason: impl Into<String>) -> WeightsError {
    WeightsError::Malformed {
        path: path.to_owned(),
        format: "Keras HDF5",
        reason: reason.into(),
    }
}

/// Reads a string or array-of-strings attribute (fixed or variable length,
/// ASCII or UTF-8), as Keras/h5py write them.
fn read_strings(loc: &h5::Location, name: &str) -> h5::Result<Vec<String>> {
    let attr = loc.attr(name)?;
    if !attr.is_scalar() && attr.size() == 0 {
        // Keras writes an empty list as an empty float64 array (layers without weights).
        return Ok(Vec::new());
    }
    let desc = attr.dtype()?.to_descriptor()?;
    let trim = |s: String| s.trim_end_matches('\0').to_owned();
    let scalar = attr.is_scalar();
    macro_rules! read {
        ($t:ty) => {{
            if scalar {
                vec![trim(attr.read_scalar::<$t>()?.as_str().to_owned())]
            } else {
                attr.read_raw::<$t>()?
                    .iter()
                    .map(|s| trim(s.as_str().to_owned()))
                    .collect()
            }
        }};
    }
    Ok(match desc {
        TypeDescriptor::FixedAscii(n) if n <= 1024 => read!(FixedAscii<1024>),
        TypeDescriptor::FixedUnicode(n) if n <= 1024 => read!(FixedUnicode<1024>),
        TypeDescriptor::VarLenAscii => read!(VarLenAscii),
        TypeDescriptor::VarLenUnicode => read!(VarLenUnicode),
        other => {
            return Err(h5::Error::from(format!(
                "attribute `{name}` is {other:?}, not strings"
            )));
        }
    })
}

/// Keras splits long attributes into `name0`, `name1`, … (HDF5's 64 KiB header limit).
fn read_string_list(loc: &h5::Location, name: &str) -> h5::Result<Option<Vec<String>>> {
    let names = loc.attr_names()?;
    if names.iter().any(|n| n == name) {
        return read_strings(loc, name).map(Some);
    }
    let mut out = Vec::new();
    let mut k = 0;
    while names.iter().any(|n| *n == format!("{name}{k}")) {
        out.extend(read_strings(loc, &format!("{name}{k}"))?);
        k += 1;
    }
    Ok(if k > 0 { Some(out) } else { None })
}

/// All datasets under `group`, recursively (names relative to it), sorted.
fn datasets_under(group: &h5::Group, prefix: &str, out: &mut Vec<String>) -> h5::Result<()> {
    let mut names = group.member_names()?;
    names.sort();
    for n in names {
        let rel = if prefix.is_empty() {
            n.clone()
        } else {
            format!("{prefix}/{n}")
        };
        if let Ok(g) = group.group(&n) {
            datasets_under(&g, &rel, out)?;
        } else if group.dataset(&n).is_ok() {
            out.push(rel);
        }
    }
    Ok(())
}

struct RawConv {
    name: String,
    kernel: Vec<f32>,
    shape: Vec<usize>,
    bias: Vec<f32>,
}

/// Keras 3 `.weights.h5`: `layers/<auto name>/vars/{0,1,…}` with the layer's
/// name in the `vars` group's attribute `name`; nested models recurse through
/// their own `layers` group.
fn keras3_layers(g: &h5::Group, out: &mut Vec<(String, h5::Group)>) -> h5::Result<()> {
    let Ok(layers) = g.group("layers") else {
        return Ok(());
    };
    let mut members = layers.member_names()?;
    members.sort();
    for m in members {
        let Ok(lg) = layers.group(&m) else { continue };
        if let Ok(vars) = lg.group("vars") {
            let name = read_strings(&vars, "name")
                .ok()
                .and_then(|v| v.into_iter().next())
                .unwrap_or(m.clone());
            out.push((name, vars));
        }
        keras3_layers(&lg, out)?;
    }
    Ok(())
}

/// The layers of the file: (name, the group holding its weights), in file order.
fn layer_groups(file: &h5::File, path: &Path) -> Result<Vec<(String, h5::Group)>, WeightsError> {
    let err = |e: h5::Error| malformed(path, e.to_string());
    let root: h5::Group = file.group("/").map_err(err)?;
    let mut candidates = vec![root.clone()];
    if let Some(g) = root
        .link_exists("model_weights")
        .then(|| root.group("model_weights").ok())
        .flatten()
    {
        candidates.insert(0, g);
    }
    // Keras 1/2 (and Keras 3's legacy writer): `layer_names`.
    for g in &candidates {
        if let Some(names) = read_string_list(g, "layer_names").map_err(err)? {
            return Ok(names
                .into_iter()
                .map(|n| {
                    let lg = g.group(&n).unwrap_or_else(|_| root.clone());
                    (n, lg)
                })
                .collect());
        }
    }
    // Keras 3 native format.
    let mut k3 = Vec::new();
    keras3_layers(&root, &mut k3).map_err(err)?;
    if !k3.is_empty() {
        return Ok(k3);
    }
    // Anything else: the root's groups, sorted.
    let mut names = root.member_names().map_err(err)?;
    names.sort();
    Ok(names
        .into_iter()
        .filter_map(|n| root.group(&n).ok().map(|g| (n, g)))
        .collect())
}

fn read_raw_convs(
    file: &h5::File,
    path: &Path,
) -> Result<(Vec<RawConv>, Vec<String>), WeightsError> {
    let err = |e: h5::Error| malformed(path, e.to_string());
    let mut convs = Vec::new();
    let mut skipped = Vec::new();
    for (lname, lg) in layer_groups(file, path)? {
        if lg.name() == "/" {
            skipped.push(lname);
            continue;
        }
        let weight_names = match read_string_list(&lg, "weight_names").map_err(err)? {
            Some(w) => w,
            None => {
                let mut v = Vec::new();
                datasets_under(&lg, "", &mut v).map_err(err)?;
                v
            }
        };
        let mut kernel = None;
        let mut bias = None;
        let mut other = 0;
        for wn in &weight_names {
            let ds = lg.dataset(wn).map_err(|e| {
                malformed(
                    path,
                    format!("layer `{lname}`: weight `{wn}` is listed but cannot be opened: {e}"),
                )
            })?;
            let shape = ds.shape();
            match shape.len() {
                4 if kernel.is_none() => kernel = Some((wn.clone(), shape, ds)),
                1 if bias.is_none() => bias = Some((wn.clone(), shape, ds)),
                _ => other += 1,
            }
        }
        match (kernel, bias, other) {
            (Some((kn, kshape, kds)), Some((bn, _, bds)), 0) => {
                let kernel: Vec<f32> = kds.read_raw::<f32>().map_err(|e| {
                    malformed(
                        path,
                        format!("layer `{lname}`: cannot read `{kn}` as float32: {e}"),
                    )
                })?;
                let bias: Vec<f32> = bds.read_raw::<f32>().map_err(|e| {
                    malformed(
                        path,
                        format!("layer `{lname}`: cannot read `{bn}` as float32: {e}"),
                    )
                })?;
                convs.push(RawConv {
                    name: lname,
                    kernel,
                    shape: kshape,
                    bias,
                });
            }
            _ => skipped.push(lname),
        }
    }
    Ok((convs, skipped))
}

/// Layout of a `[a, b, c, d]` kernel whose bias has `cout` entries; `None` if neither fits.
fn detect_layout(shape: &[usize], cout: usize) -> (Option<Layout>, bool) {
    let hwio = shape[3] == cout;
    let oihw = shape[0] == cout;
    match (hwio, oihw) {
        (true, false) => (Some(Layout::Hwio), false),
        (false, true) => (Some(Layout::Oihw), false),
        (true, true) => {
            // Square-kernel heuristic: HWIO has kh == kw first, OIHW last.
            let h = shape[0] == shape[1] && shape[0] <= 7;
            let o = shape[2] == shape[3] && shape[3] <= 7;
            match (h, o) {
                (true, false) => (Some(Layout::Hwio), false),
                (false, true) => (Some(Layout::Oihw), false),
                _ => (None, true),
            }
        }
        (false, false) => (None, false),
    }
}

/// Converts `src` (in `layout`) to HWIO, flipping 180° for `th`.
pub fn to_hwio(
    src: &[f32],
    source_shape: &[usize],
    layout: Layout,
    convention: Convention,
) -> ([usize; 4], Vec<f32>) {
    let (kh, kw, cin, cout) = match layout {
        Layout::Hwio => (
            source_shape[0],
            source_shape[1],
            source_shape[2],
            source_shape[3],
        ),
        Layout::Oihw => (
            source_shape[2],
            source_shape[3],
            source_shape[1],
            source_shape[0],
        ),
    };
    let mut out = vec![0.0f32; kh * kw * cin * cout];
    for h in 0..kh {
        for w in 0..kw {
            let (sh, sw) = match convention {
                Convention::Tf => (h, w),
                Convention::Th => (kh - 1 - h, kw - 1 - w),
            };
            for i in 0..cin {
                for o in 0..cout {
                    let s = match layout {
                        Layout::Hwio => ((sh * kw + sw) * cin + i) * cout + o,
                        Layout::Oihw => ((o * cin + i) * kh + sh) * kw + sw,
                    };
                    out[((h * kw + w) * cin + i) * cout + o] = src[s];
                }
            }
        }
    }
    ([kh, kw, cin, cout], out)
}

/// Reads every convolution of a Keras `.h5` file (any channel counts), converted
/// to HWIO cross-correlation; `convention = None` autodetects (module docs).
pub fn read_keras_h5(
    path: &Path,
    convention: Option<Convention>,
) -> Result<(Vec<H5Conv>, H5Report), WeightsError> {
    if !path.exists() {
        return Err(WeightsError::NotFound {
            path: path.to_owned(),
            hint: "pass the path of a Keras .h5 weights file",
        });
    }
    if !is_hdf5(path) {
        return Err(malformed(path, "not an HDF5 file (no HDF5 signature)"));
    }
    let file =
        h5::File::open(path).map_err(|e| malformed(path, format!("cannot open as HDF5: {e}")))?;
    let (raw, skipped) = read_raw_convs(&file, path)?;
    if raw.is_empty() {
        return Err(malformed(
            path,
            "no convolution layers found (no group with one 4-d kernel and one 1-d bias; \
             is this a Keras weights file?)",
        ));
    }
    let mut warnings = Vec::new();
    // Layouts first (convention-independent unless ambiguous).
    let layouts: Vec<(Option<Layout>, bool)> = raw
        .iter()
        .map(|c| detect_layout(&c.shape, c.bias.len()))
        .collect();
    for (c, (l, amb)) in raw.iter().zip(&layouts) {
        if l.is_none() && !amb {
            return Err(malformed(
                path,
                format!(
                    "layer `{}`: kernel shape {:?} fits neither [kh, kw, cin, {n}] nor [{n}, cin, kh, kw] for its {n} biases",
                    c.name,
                    c.shape,
                    n = c.bias.len()
                ),
            ));
        }
    }
    let from_attr = match read_strings(&file, "backend") {
        Ok(v) if !v.is_empty() => Some((
            v[0].clone(),
            if v[0] == "theano" {
                Convention::Th
            } else {
                Convention::Tf
            },
        )),
        _ => None,
    };
    let fname = path
        .file_name()
        .map(|f| f.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let from_name = if fname.contains("th_kernels") {
        Some(Convention::Th)
    } else if fname.contains("tf_kernels") {
        Some(Convention::Tf)
    } else {
        None
    };
    let from_layout = if layouts.iter().any(|(l, _)| *l == Some(Layout::Oihw)) {
        Some(Convention::Th)
    } else if layouts.iter().any(|(l, _)| *l == Some(Layout::Hwio)) {
        Some(Convention::Tf)
    } else {
        None
    };
    if let (Some((b, a)), Some(n)) = (&from_attr, from_name)
        && *a != n
    {
        warnings.push(format!(
            "{}: the file says backend \"{b}\" ({a} kernels) but its name says {n} kernels; \
             following the attribute (override with --convention {n})",
            path.display()
        ));
    }
    let (convention, reason) = match (convention, &from_attr, from_name, from_layout) {
        (Some(c), ..) => (c, "--convention".to_owned()),
        (None, Some((b, c)), ..) => (*c, format!("root attribute backend = \"{b}\"")),
        (None, None, Some(c), _) => (c, format!("the file name contains `{c}_kernels`")),
        (None, None, None, Some(c)) => (
            c,
            match c {
                Convention::Th => "OIHW kernels (Keras 1 Theano layout); pass --convention tf if they are not flipped".to_owned(),
                Convention::Tf => "HWIO kernels; pass --convention th for a Theano-trained file".to_owned(),
            },
        ),
        (None, None, None, None) => (Convention::Tf, "default (layout ambiguous); pass --convention to be sure".to_owned()),
    };
    let mut convs = Vec::with_capacity(raw.len());
    let mut layers = Vec::with_capacity(raw.len());
    for (c, (l, _)) in raw.into_iter().zip(layouts) {
        let layout = l.unwrap_or(match convention {
            Convention::Th => Layout::Oihw,
            Convention::Tf => Layout::Hwio,
        });
        let (shape, kernel) = to_hwio(&c.kernel, &c.shape, layout, convention);
        layers.push((c.name.clone(), c.shape.clone(), layout));
        convs.push(H5Conv {
            name: c.name,
            shape,
            kernel,
            bias: c.bias,
            source_shape: c.shape,
            layout,
        });
    }
    let report = H5Report {
        input: path.to_owned(),
        convention,
        reason,
        warnings,
        layers,
        skipped,
    };
    Ok((convs, report))
}

/// Imports VGG16 from a Keras `.h5` file: the 13 convolutions of
/// [`VGG16_CONVS`], found by name, in the contract's layout.
pub fn import_h5(
    path: &Path,
    convention: Option<Convention>,
) -> Result<(Vgg16Weights, H5Report), WeightsError> {
    let (convs, report) = read_keras_h5(path, convention)?;
    let available = || {
        convs
            .iter()
            .map(|c| format!("`{}`", c.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let layers = VGG16_CONVS
        .iter()
        .map(|spec| {
            let c = convs.iter().find(|c| c.name == spec.name).ok_or_else(|| {
                WeightsError::MissingTensor {
                    path: path.to_owned(),
                    tensor: spec.name.to_owned(),
                    available: format!("convolutions {}", available()),
                }
            })?;
            let want = [KERNEL, KERNEL, spec.cin, spec.cout];
            if c.shape != want || c.bias.len() != spec.cout {
                return Err(WeightsError::WrongShape {
                    path: path.to_owned(),
                    tensor: spec.name.to_owned(),
                    expected: want.to_vec(),
                    found: c.shape.to_vec(),
                });
            }
            if let Some(i) = c.kernel.iter().chain(&c.bias).position(|v| !v.is_finite()) {
                let all: Vec<f32> = c.kernel.iter().chain(&c.bias).copied().collect();
                return Err(WeightsError::NonFinite {
                    path: path.to_owned(),
                    tensor: spec.name.to_owned(),
                    index: i,
                    value: all[i],
                });
            }
            Ok(ConvWeights {
                spec: *spec,
                kernel: c.kernel.clone(),
                bias: c.bias.clone(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((Vgg16Weights { layers }, report))
}

/// One convolution to write: name, HWIO shape, HWIO kernel, bias.
pub type ConvToWrite = (String, [usize; 4], Vec<f32>, Vec<f32>);

/// Writes convolutions in the Keras 2 `save_weights` layout (root `layer_names`,
/// per layer `weight_names` = `<layer>/kernel:0`, `<layer>/bias:0`), converting
/// from HWIO cross-correlation to `layout` and `convention` (the inverse of the
/// import; with [`Layout::Oihw`] + [`Convention::Th`] and names `<layer>_W`,
/// `<layer>_b`, the Keras 1 Theano layout). For tests and for exporting.
pub fn write_keras_h5(
    path: &Path,
    convs: &[ConvToWrite],
    layout: Layout,
    convention: Convention,
) -> h5::Result<()> {
    let file = h5::File::create(path)?;
    let names: Vec<FixedAscii<64>> = convs
        .iter()
        .map(|c| FixedAscii::<64>::from_ascii(c.0.as_bytes()).expect("ascii layer name"))
        .collect();
    file.new_attr::<FixedAscii<64>>()
        .shape(names.len())
        .create("layer_names")?
        .write_raw(&names)?;
    let backend = match convention {
        Convention::Th => "theano",
        Convention::Tf => "tensorflow",
    };
    file.new_attr::<FixedAscii<16>>()
        .create("backend")?
        .write_scalar(&FixedAscii::<16>::from_ascii(backend.as_bytes()).expect("ascii"))?;
    for (name, [kh, kw, cin, cout], kernel, bias) in convs {
        let g = file.create_group(name)?;
        let (kname, bname) = match layout {
            Layout::Oihw => (format!("{name}_W"), format!("{name}_b")),
            Layout::Hwio => (format!("{name}/kernel:0"), format!("{name}/bias:0")),
        };
        let wn: Vec<FixedAscii<64>> = [&kname, &bname]
            .iter()
            .map(|n| FixedAscii::<64>::from_ascii(n.as_bytes()).expect("ascii"))
            .collect();
        g.new_attr::<FixedAscii<64>>()
            .shape(2)
            .create("weight_names")?
            .write_raw(&wn)?;
        // Inverse of `to_hwio`: out[layout index of (h,w,i,o)] = kernel[hwio of flipped (h,w)].
        let (kh, kw, cin, cout) = (*kh, *kw, *cin, *cout);
        let mut out = vec![0.0f32; kernel.len()];
        for h in 0..kh {
            for w in 0..kw {
                let (sh, sw) = match convention {
                    Convention::Tf => (h, w),
                    Convention::Th => (kh - 1 - h, kw - 1 - w),
                };
                for i in 0..cin {
                    for o in 0..cout {
                        let d = match layout {
                            Layout::Hwio => ((sh * kw + sw) * cin + i) * cout + o,
                            Layout::Oihw => ((o * cin + i) * kh + sh) * kw + sw,
                        };
                        out[d] = kernel[((h * kw + w) * cin + i) * cout + o];
                    }
                }
            }
        }
        let shape: Vec<usize> = match layout {
            Layout::Hwio => vec![kh, kw, cin, cout],
            Layout::Oihw => vec![cout, cin, kh, kw],
        };
        if let Some((parent, _)) = kname.rsplit_once('/')
            && !g.link_exists(parent)
        {
            g.create_group(parent)?;
        }
        g.new_dataset::<f32>()
            .shape(shape)
            .create(kname.as_str())?
            .write_raw(&out)?;
        g.new_dataset::<f32>()
            .shape([bias.len()])
            .create(bname.as_str())?
            .write_raw(bias)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_and_transpose_round_trip() {
        // 3×3, cin 2, cout 4 HWIO with distinct values.
        let hwio: Vec<f32> = (0..72).map(|v| v as f32).collect();
        for layout in [Layout::Hwio, Layout::Oihw] {
            for conv in [Convention::Tf, Convention::Th] {
                // Build the stored form by hand.
                let mut stored = vec![0.0f32; 72];
                let shape: Vec<usize> = if layout == Layout::Hwio {
                    vec![3, 3, 2, 4]
                } else {
                    vec![4, 2, 3, 3]
                };
                for h in 0..3 {
                    for w in 0..3 {
                        for i in 0..2 {
                            for o in 0..4 {
                                let (sh, sw) = if conv == Convention::Th {
                                    (2 - h, 2 - w)
                                } else {
                                    (h, w)
                                };
                                let d = if layout == Layout::Hwio {
                                    ((sh * 3 + sw) * 2 + i) * 4 + o
                                } else {
                                    ((o * 2 + i) * 3 + sh) * 3 + sw
                                };
                                stored[d] = hwio[((h * 3 + w) * 2 + i) * 4 + o];
                            }
                        }
                    }
                }
                let (s, back) = to_hwio(&stored, &shape, layout, conv);
                assert_eq!(s, [3, 3, 2, 4]);
                assert_eq!(back, hwio, "{layout:?} {conv:?}");
            }
        }
    }

    #[test]
    fn layouts() {
        assert_eq!(detect_layout(&[3, 3, 3, 64], 64).0, Some(Layout::Hwio));
        assert_eq!(detect_layout(&[64, 3, 3, 3], 64).0, Some(Layout::Oihw));
        assert_eq!(detect_layout(&[3, 3, 3, 3], 3), (None, true));
        assert_eq!(detect_layout(&[3, 3, 3, 5], 4), (None, false));
    }
}
