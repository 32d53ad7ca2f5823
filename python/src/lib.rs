//! `rmac_native._native`: the library behind the `rmac_native` Python package.
//!
//! A thin layer: every number comes from the same library functions the
//! command line runs (the backend opened by `open_backend`, the decode-ahead
//! pipeline of `run_extractor`, `search_many`, the store's readers), so the
//! vectors, scores and error messages are the CLI's, bit for bit. The Python
//! wrapper (`rmac_native/__init__.py`) turns `PathLike`s, PIL images and
//! arrays of any layout into what these functions take; the checks here are
//! the last line, for callers of the native module itself.
//!
//! The GIL is released while images are decoded and described, while weights
//! load and while vectors are read or searched, so other Python threads run.

use numpy::ndarray::Array2;
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyReadonlyArray2, PyReadonlyArray3, PyUntypedArrayMethods,
};
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use rmac_native::backend::{BackendChoice, EngineOptions, open_backend};
use rmac_native::extractor::{ExtractConfig, Extractor, prepare_image};
use rmac_native::image::decode::decode_rgb;
use rmac_native::run::extract::load_pca;
use rmac_native::run::pipeline::{Done, Job, guarded, run_extractor};
use rmac_native::search::search_many;
use rmac_native::store::postgres::PgOptions;
use rmac_native::store::{Target, read_set};
use rmac_native::vgg16::spec::FEATURE_DIM;
use rmac_native::vgg16::weights::Vgg16Weights;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};

create_exception!(
    rmac_native,
    ImageError,
    PyValueError,
    "An image could not be described (unreadable, corrupt, truncated, too small, ...). \
     The message is the one the CLI writes into its error file; for a file it starts with the path."
);
create_exception!(
    rmac_native,
    RmacError,
    PyRuntimeError,
    "A failure that is not about one image: the weights or PCA file, the backend, a vectors file."
);

/// The CLI's `--max-size` and `--levels` ranges (src/cli/args.rs).
const MAX_SIZE_RANGE: std::ops::RangeInclusive<u32> = 32..=16384;
const LEVELS_RANGE: std::ops::RangeInclusive<usize> = 1..=16;

/// A library error (an `anyhow` chain or a typed error) as the CLI prints it after `error: `.
fn rmac_error(e: impl std::fmt::Display) -> PyErr {
    RmacError::new_err(format!("{e:#}"))
}

/// `describe_many`'s answer: the vectors of the images that succeeded, and `(path, message)` of the others.
type VectorsAndErrors<'py> = (Bound<'py, PyArray2<f32>>, Vec<(String, String)>);
/// `search`'s answer: row numbers and scores, one row per query.
type IndicesAndScores<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>);

/// A loaded model: VGG16 on a backend, the optional PCA-whitening, the recipe.
#[pyclass(module = "rmac_native._native", name = "Extractor", frozen)]
struct PyExtractor {
    /// Locked for one call at a time; the lock is taken with the GIL released.
    inner: Mutex<Extractor>,
    dim: usize,
    backend: String,
    max_size: u32,
    levels: usize,
}

impl PyExtractor {
    fn lock(&self) -> std::sync::MutexGuard<'_, Extractor> {
        // A panic in a call that held the lock leaves the model as it was (its
        // state is read-only between calls), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `paths` through the CLI's decode-ahead pipeline, handing each
    /// result to `each` in order; `each` returning an error stops the run.
    fn pipeline(
        &self,
        paths: &[String],
        mut each: impl FnMut(Done<Vec<f32>>) -> PyResult<()>,
    ) -> PyResult<()> {
        let mut extractor = self.lock();
        let (jobs_tx, jobs_rx) = mpsc::channel();
        for (id, path) in paths.iter().enumerate() {
            let job = Job::new(id as u64, path.clone());
            jobs_tx.send(job).expect("the receiver is alive");
        }
        drop(jobs_tx);
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::scope(|scope| {
            let extractor = &mut *extractor;
            scope.spawn(move || run_extractor(extractor, jobs_rx, done_tx));
            // Leaving the loop drops the receiver, which stops the pipeline after
            // the images already under way.
            for done in done_rx {
                each(done)?;
            }
            Ok(())
        })
    }

    /// The vector of an already decoded image (panics in the library become this image's error).
    fn describe_rgb(&self, img: &image::RgbImage, what: &str) -> Result<Vec<f32>, String> {
        let mut extractor = self.lock();
        let config = extractor.config().clone();
        guarded("computing", what, || {
            let prepared = prepare_image(img, &config)?;
            extractor.describe_prepared(&prepared)
        })
    }
}

#[pymethods]
impl PyExtractor {
    #[new]
    #[pyo3(signature = (weights, pca, backend = "auto", max_size = 1024, levels = 3, threads = 0))]
    fn new(
        py: Python<'_>,
        weights: PathBuf,
        pca: Option<PathBuf>,
        backend: &str,
        max_size: u32,
        levels: usize,
        threads: usize,
    ) -> PyResult<Self> {
        let choice = match backend {
            "auto" => BackendChoice::Auto,
            "cpu" => BackendChoice::Cpu,
            "gpu" => BackendChoice::Gpu,
            other => {
                return Err(PyValueError::new_err(format!(
                    "backend must be \"auto\", \"cpu\" or \"gpu\", not {other:?}"
                )));
            }
        };
        if !MAX_SIZE_RANGE.contains(&max_size) {
            return Err(PyValueError::new_err(format!(
                "max_size must be from {} to {} (the longest image side after resizing), not {max_size}",
                MAX_SIZE_RANGE.start(),
                MAX_SIZE_RANGE.end()
            )));
        }
        if !LEVELS_RANGE.contains(&levels) {
            return Err(PyValueError::new_err(format!(
                "levels must be from {} to {} (R-MAC region scales), not {levels}",
                LEVELS_RANGE.start(),
                LEVELS_RANGE.end()
            )));
        }
        let config = ExtractConfig {
            max_size,
            levels,
            ..ExtractConfig::default()
        };
        let engine = EngineOptions {
            threads,
            ..EngineOptions::default()
        };
        // As `extract` loads them: the PCA first (`None` is `--pca none`), then the weights.
        let extractor = py.detach(|| -> anyhow::Result<Extractor> {
            let pca = load_pca(pca.as_deref(), false)?;
            let weights = Arc::new(Vgg16Weights::load(&weights)?);
            let backend = open_backend(choice, weights, &engine)?;
            Ok(Extractor::new(backend, pca, config))
        });
        let extractor = extractor.map_err(rmac_error)?;
        Ok(PyExtractor {
            backend: extractor.backend_name(),
            inner: Mutex::new(extractor),
            // The whitening is square (docs/contract.md#weights): every vector has 512 numbers.
            dim: FEATURE_DIM,
            max_size,
            levels,
        })
    }

    /// Length of the vectors.
    #[getter]
    fn dim(&self) -> usize {
        self.dim
    }

    /// The device the network runs on, e.g. `cpu (8 threads, ...)`.
    #[getter]
    fn backend(&self) -> String {
        self.backend.clone()
    }

    #[getter]
    fn max_size(&self) -> u32 {
        self.max_size
    }

    #[getter]
    fn levels(&self) -> usize {
        self.levels
    }

    /// The vector of an image file, through the CLI's pipeline (the same
    /// decode time limit and error messages); raises `ImageError` naming the file.
    fn describe_path<'py>(
        &self,
        py: Python<'py>,
        path: String,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let mut result = None;
        py.detach(|| {
            self.pipeline(std::slice::from_ref(&path), |done| {
                result = Some(done.result);
                Ok(())
            })
        })?;
        match result.expect("the pipeline answers every job") {
            Ok(v) => Ok(PyArray1::from_vec(py, v)),
            Err(why) => Err(ImageError::new_err(format!("{path}: {why}"))),
        }
    }

    /// The vector of an encoded image (JPEG, PNG, ... bytes), decoded as a file would be.
    fn describe_bytes<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let result = py.detach(|| {
            let limits = self.lock().config().limits;
            let img = guarded("decoding", "<bytes>", || Ok(decode_rgb(data, &limits)?))?;
            self.describe_rgb(&img, "<bytes>")
        });
        result
            .map(|v| PyArray1::from_vec(py, v))
            .map_err(|why| ImageError::new_err(format!("<bytes>: {why}")))
    }

    /// The vector of an 8-bit RGB image, a `uint8` array of shape (H, W, 3)
    /// (any strides: it is copied in row-major order).
    fn describe_array<'py>(
        &self,
        py: Python<'py>,
        pixels: PyReadonlyArray3<'py, u8>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let shape = pixels.shape();
        let (h, w, c) = (shape[0], shape[1], shape[2]);
        if c != 3 || h == 0 || w == 0 {
            return Err(PyValueError::new_err(format!(
                "the array must have shape (height, width, 3) with RGB channels, not {shape:?}"
            )));
        }
        let (Ok(w32), Ok(h32)) = (u32::try_from(w), u32::try_from(h)) else {
            return Err(PyValueError::new_err(format!(
                "the image is {w}×{h} px: too large"
            )));
        };
        // Row-major bytes: a copy of the memory when it is in C order, else element by element
        // (a Fortran-ordered array is contiguous too, but its memory is in the other order).
        let view = pixels.as_array();
        let raw: Vec<u8> = match view.as_slice() {
            Some(s) => s.to_vec(),
            None => view.iter().copied().collect(),
        };
        let img = image::RgbImage::from_raw(w32, h32, raw).expect("h × w × 3 bytes");
        let result = py.detach(|| self.describe_rgb(&img, "<array>"));
        result
            .map(|v| PyArray1::from_vec(py, v))
            .map_err(ImageError::new_err)
    }

    /// Vectors of many image files through the CLI's decode-ahead pipeline:
    /// `(vectors, errors)`, the vectors of the images that succeeded in the
    /// order given, and `(path, message)` for each one that failed. `progress`
    /// is called as `progress(done, total)` after each image.
    #[pyo3(signature = (paths, progress = None))]
    fn describe_many<'py>(
        &self,
        py: Python<'py>,
        paths: Vec<String>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<VectorsAndErrors<'py>> {
        let total = paths.len();
        let mut data: Vec<f32> = Vec::new();
        let mut rows = 0;
        let mut errors = Vec::new();
        let mut done_n = 0;
        py.detach(|| {
            self.pipeline(&paths, |done: Done<Vec<f32>>| {
                let id = done.id as usize;
                match done.result {
                    Ok(v) => {
                        data.extend_from_slice(&v);
                        rows += 1;
                    }
                    Err(why) => errors.push((paths[id].clone(), why.to_string())),
                }
                done_n += 1;
                // Ctrl-C in a notebook stops a long run; the callback runs with the GIL.
                Python::attach(|py| {
                    py.check_signals()?;
                    if let Some(cb) = &progress {
                        cb.call1(py, (done_n, total))?;
                    }
                    Ok(())
                })
            })
        })?;
        let matrix = Array2::from_shape_vec((rows, self.dim), data)
            .map_err(|e| PyRuntimeError::new_err(format!("internal error: {e}")))?;
        Ok((matrix.into_pyarray(py), errors))
    }
}

/// `(paths, vectors)` of a vectors file written by `rmac-native extract`
/// (`.jsonl`, `.npy` with its `.paths.txt`, `.parquet`).
#[pyfunction]
fn load_vectors<'py>(
    py: Python<'py>,
    path: PathBuf,
) -> PyResult<(Vec<String>, Bound<'py, PyArray2<f32>>)> {
    let target = Target::from_path(path);
    let set = py
        .detach(|| read_set(&target, &PgOptions::default()))
        .map_err(rmac_error)?;
    let matrix = Array2::from_shape_vec((set.paths.len(), set.dim), set.data)
        .map_err(|e| RmacError::new_err(format!("internal error: {e}")))?;
    Ok((set.paths, matrix.into_pyarray(py)))
}

/// The `k` best rows of `vectors` for each query by inner product, best first
/// (ties: the lower row first), exactly as `rmac-native search`: `(indices,
/// scores)`, each of shape `(queries, min(k, rows))`. Both arrays C-contiguous float32.
#[pyfunction]
fn search<'py>(
    py: Python<'py>,
    vectors: PyReadonlyArray2<'py, f32>,
    queries: PyReadonlyArray2<'py, f32>,
    k: usize,
) -> PyResult<IndicesAndScores<'py>> {
    let (rows, dim) = (vectors.shape()[0], vectors.shape()[1]);
    let (nq, qdim) = (queries.shape()[0], queries.shape()[1]);
    if dim == 0 {
        return Err(PyValueError::new_err("the vectors have 0 columns"));
    }
    if qdim != dim {
        return Err(PyValueError::new_err(format!(
            "the queries have {qdim} numbers each; the vectors hold {dim}-float rows"
        )));
    }
    let not_c_order = |what: &str| {
        PyValueError::new_err(format!(
            "{what} must be C-contiguous (np.ascontiguousarray); rmac_native.search copies other layouts"
        ))
    };
    // In C order only: a Fortran-ordered array is contiguous, but its memory holds columns.
    let (vectors_view, queries_view) = (vectors.as_array(), queries.as_array());
    let data = vectors_view
        .as_slice()
        .ok_or_else(|| not_c_order("vectors"))?;
    let qdata = queries_view
        .as_slice()
        .ok_or_else(|| not_c_order("queries"))?;
    let hits = py.detach(|| {
        let qs: Vec<&[f32]> = qdata.chunks_exact(dim).collect();
        search_many(data, dim, &qs, k, &vec![None; nq])
    });
    // Without exclusions every query gets min(k, rows) hits.
    let width = if rows == 0 { 0 } else { k.min(rows) };
    let mut indices = Array2::<i64>::zeros((nq, width));
    let mut scores = Array2::<f32>::zeros((nq, width));
    for (q, h) in hits.iter().enumerate() {
        assert_eq!(h.len(), width, "search_many answers min(k, rows) hits");
        for (j, &(i, s)) in h.iter().enumerate() {
            indices[(q, j)] = i as i64;
            scores[(q, j)] = s;
        }
    }
    Ok((indices.into_pyarray(py), scores.into_pyarray(py)))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyExtractor>()?;
    m.add_function(wrap_pyfunction!(load_vectors, m)?)?;
    m.add_function(wrap_pyfunction!(search, m)?)?;
    m.add("ImageError", m.py().get_type::<ImageError>())?;
    m.add("RmacError", m.py().get_type::<RmacError>())?;
    m.add("FEATURE_DIM", FEATURE_DIM)?;
    Ok(())
}
