//! `knn` as a job: one process or N MPI ranks, checkpointed by block so that
//! a killed run resumes.
//!
//! The row blocks not yet finished are shared out over the ranks by their
//! number of pairs ([`share_blocks`]); each rank scores its blocks into a
//! partial graph ([`knn_blocks`]) and writes it, with the blocks it has
//! finished, to its state file `OUT.knn-state.RANK` at most every
//! `checkpoint_every` and once at the end. The workers then send their partial
//! graphs to rank 0, which merges them ([`Graph::merge`]: exact in any order)
//! and hands the graph to the caller's writer; the state files are removed
//! once the output is written. A resume (with any number of ranks) reads every
//! state file of the output on rank 0, merges them, and scores only the blocks
//! none of them finished. The graph is the same whatever the ranks, threads
//! and stops.

use crate::knn::checkpoint::{Checkpoint, Fingerprint, vectors_digest};
use crate::knn::int8::{Int8Kernel, Int8Stats, Quantized, knn_blocks_int8};
use crate::knn::{Graph, Tiling, knn_blocks, share_blocks};
use crate::run::coordinator::mpi::{Launcher, default_threads};
use crate::run::coordinator::progress::WorkProgress;
use crate::run::coordinator::protocol::{TAG_KNN_ROWS, TAG_KNN_START};
use crate::run::coordinator::transport::{Transport, wait_for};
use crate::run::ranks::{Place, RankEnd, on_ranks};
use anyhow::{Context, Result, bail, ensure};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the scores are computed.
#[derive(Clone, Debug)]
pub enum KnnDevice {
    /// The fp32 kernel scores every pair.
    Cpu,
    /// The 8-bit pre-filter with exact re-scoring ([`crate::knn::int8`]).
    /// `required`: fail when it cannot run (dimension over
    /// [`crate::knn::int8::MAX_DIM`], or its copies do not fit `memory`);
    /// otherwise fall back to the fp32 kernel, saying why.
    CpuInt8 { kernel: Int8Kernel, required: bool },
    /// The GPU as an exact pre-filter ([`crate::knn::gpu`]).
    #[cfg(feature = "gpu")]
    Gpu(crate::backend::gpu::GpuOptions),
}

/// Everything a `knn` run needs beyond the vectors, resolved by the caller.
#[derive(Clone, Debug)]
pub struct KnnJob {
    pub device: KnnDevice,
    /// Neighbours per vector (at most `n − 1` are found).
    pub k: usize,
    /// Bytes for the graph and the score tiles, beyond the vectors.
    pub memory: u64,
    /// The output; the state files are `OUTPUT.knn-state.RANK` beside it.
    pub output: PathBuf,
    /// Threads per rank; 0: the cores this rank may use ([`default_threads`]).
    pub threads: usize,
    /// How often each rank writes its state (and once at the end of its blocks).
    pub checkpoint_every: Duration,
    pub launcher: Launcher,
}

/// How a run went (rank 0).
#[derive(Clone, Debug)]
pub struct KnnReport {
    pub graph_k: usize,
    pub tile_rows: usize,
    pub blocks: usize,
    /// Blocks a stopped run had finished (not scored again).
    pub resumed_blocks: usize,
    /// The pairs this run scored (all ranks; those of the blocks left), of `all_pairs`.
    pub pairs: u64,
    pub all_pairs: u64,
    pub ranks: usize,
    pub threads: usize,
    /// What rank 0 scored on: `cpu`, or the GPU and what its pre-filter sent back.
    pub device: String,
    /// Seconds from the start to the merged graph (before it is written).
    pub seconds: f64,
}

/// The state file of `rank` for `output`.
pub fn state_path(output: &Path, rank: usize) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(format!(".knn-state.{rank}"));
    PathBuf::from(s)
}

/// Every state file of `output` (any rank count), by rank.
fn state_files(output: &Path) -> Result<Vec<PathBuf>> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let prefix = format!(
        "{}.knn-state.",
        output.file_name().unwrap_or_default().to_string_lossy()
    );
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(rank) = name.strip_prefix(&prefix)
            && let Ok(rank) = rank.parse::<usize>()
        {
            found.push((rank, dir.join(&name)));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Rank 0's view of what stopped runs left: their merged graph and blocks.
struct Resumed {
    tiling: Tiling,
    finished: BTreeSet<usize>,
    graph: Graph,
    files: Vec<PathBuf>,
}

fn read_states(output: &Path, fingerprint: &Fingerprint) -> Result<Option<Resumed>> {
    let files = state_files(output)?;
    let mut resumed: Option<Resumed> = None;
    for f in &files {
        let state = Checkpoint::load(f)?;
        if state.fingerprint != *fingerprint {
            bail!(
                "{} is the state of a different knn run ({} vectors × {}, k = {}, vectors {}; this run: {} × {}, k = {}, vectors {}). \
                 Delete the {}.knn-state.* files to start over, or give the same vectors and -k to resume",
                f.display(),
                state.fingerprint.n,
                state.fingerprint.dim,
                state.fingerprint.k,
                state.fingerprint.vectors,
                fingerprint.n,
                fingerprint.dim,
                fingerprint.k,
                fingerprint.vectors,
                output.display()
            );
        }
        match &mut resumed {
            None => {
                resumed = Some(Resumed {
                    tiling: Tiling {
                        rows: state.tile_rows,
                    },
                    finished: state.finished.iter().copied().collect(),
                    graph: state.graph,
                    files: files.clone(),
                })
            }
            Some(r) => {
                ensure!(
                    r.tiling.rows == state.tile_rows,
                    "the state files of {} disagree on their tiles ({} and {} rows); delete them to start over",
                    output.display(),
                    r.tiling.rows,
                    state.tile_rows
                );
                r.finished.extend(state.finished.iter().copied());
                r.graph.merge(&state.graph);
            }
        }
    }
    Ok(resumed)
}

fn encode_start(tiling: Tiling, blocks: usize, finished: &BTreeSet<usize>) -> Vec<u8> {
    let mut out = 0i32.to_le_bytes().to_vec();
    out.extend_from_slice(&(tiling.rows as u32).to_le_bytes());
    let mut bits = vec![0u8; blocks.div_ceil(8)];
    for &b in finished {
        bits[b / 8] |= 1 << (b % 8);
    }
    out.extend_from_slice(&bits);
    out
}

/// `Err(code)`: rank 0 says stop with that exit code.
fn decode_start(
    buf: &[u8],
    n: usize,
) -> Result<std::result::Result<(Tiling, BTreeSet<usize>), i32>> {
    ensure!(buf.len() >= 4, "a knn start message of {} bytes", buf.len());
    let code = i32::from_le_bytes(buf[..4].try_into().unwrap());
    if code != 0 {
        return Ok(Err(code));
    }
    ensure!(buf.len() >= 8, "a knn start message of {} bytes", buf.len());
    let tiling = Tiling {
        rows: u32::from_le_bytes(buf[4..8].try_into().unwrap()) as usize,
    };
    let bits = &buf[8..];
    ensure!(
        bits.len() == tiling.blocks(n).div_ceil(8),
        "a knn start message of the wrong size"
    );
    let finished = (0..tiling.blocks(n))
        .filter(|b| bits[b / 8] & (1 << (b % 8)) != 0)
        .collect();
    Ok(Ok((tiling, finished)))
}

/// The most bytes of graph rows in one message.
const ROWS_MESSAGE_BYTES: usize = 1 << 20;

fn send_graph(t: &mut dyn Transport, graph: &Graph) -> Result<()> {
    let k = graph.k.max(1);
    let per = (ROWS_MESSAGE_BYTES / (8 * k)).max(1);
    let mut first = 0;
    while first < graph.n {
        let rows = per.min(graph.n - first);
        let mut msg = Vec::with_capacity(12 + rows * k * 8);
        msg.extend_from_slice(&(first as u64).to_le_bytes());
        msg.extend_from_slice(&(rows as u32).to_le_bytes());
        for v in &graph.idx[first * graph.k..(first + rows) * graph.k] {
            msg.extend_from_slice(&v.to_le_bytes());
        }
        for v in &graph.score[first * graph.k..(first + rows) * graph.k] {
            msg.extend_from_slice(&v.to_le_bytes());
        }
        t.send(0, TAG_KNN_ROWS, &msg)?;
        first += rows;
    }
    Ok(())
}

/// Receives every worker's partial graph into `graph`.
fn gather_graphs(t: &mut dyn Transport, graph: &mut Graph) -> Result<()> {
    let k = graph.k;
    let mut rows_left: Vec<usize> = (0..t.size())
        .map(|r| if r == 0 { 0 } else { graph.n })
        .collect();
    while rows_left.iter().any(|&r| r > 0) {
        let Some((from, tag, msg)) = t.poll()? else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        ensure!(
            tag == TAG_KNN_ROWS,
            "unexpected message (tag {tag}) from rank {from} while gathering the graph"
        );
        ensure!(
            msg.len() >= 12,
            "a graph message of {} bytes from rank {from}",
            msg.len()
        );
        let first = u64::from_le_bytes(msg[..8].try_into().unwrap()) as usize;
        let rows = u32::from_le_bytes(msg[8..12].try_into().unwrap()) as usize;
        ensure!(
            msg.len() == 12 + rows * k * 8 && rows <= rows_left[from],
            "a graph message of {} bytes for {rows} rows from rank {from}",
            msg.len()
        );
        let body = &msg[12..];
        let words = |b: &[u8]| -> Vec<[u8; 4]> {
            b.chunks_exact(4).map(|c| c.try_into().unwrap()).collect()
        };
        let idx: Vec<u32> = words(&body[..rows * k * 4])
            .into_iter()
            .map(u32::from_le_bytes)
            .collect();
        let score: Vec<f32> = words(&body[rows * k * 4..])
            .into_iter()
            .map(f32::from_le_bytes)
            .collect();
        graph.merge_rows(first, &idx, &score);
        rows_left[from] -= rows;
    }
    Ok(())
}

/// The exact kNN graph of `data` (`n × dim`, with `paths` for the
/// fingerprint), as one process or over MPI ranks; on rank 0, `write` gets the
/// graph and the report. Other ranks exit the process when done.
pub fn knn_job(
    job: &KnnJob,
    data: &[f32],
    dim: usize,
    paths: &[String],
    write: &mut dyn FnMut(&Graph, &KnnReport) -> Result<()>,
) -> Result<KnnReport> {
    on_ranks(&job.launcher, |t, place| {
        run(t, job, place, data, dim, paths, write)
    })
}

fn run(
    t: &mut dyn Transport,
    job: &KnnJob,
    place: &Place,
    data: &[f32],
    dim: usize,
    paths: &[String],
    write: &mut dyn FnMut(&Graph, &KnnReport) -> Result<()>,
) -> Result<RankEnd<KnnReport>> {
    let start = Instant::now();
    let threads = if job.threads == 0 {
        default_threads(place.sharing_ranks)
    } else {
        job.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("cannot start the threads")?;
    let n = data.len() / dim.max(1);
    let k = job.k.min(n.saturating_sub(1));
    let (rank, size) = (t.rank(), t.size());
    let fingerprint = Fingerprint {
        n,
        dim,
        k,
        vectors: vectors_digest(data, paths),
    };

    // Rank 0 decides the tiling and what is left; the others wait for its word.
    let (tiling, finished_before, mut graph, old_files) = if rank == 0 {
        let prepared = (|| -> Result<_> {
            let resumed = read_states(&job.output, &fingerprint)?;
            let tiling = match &resumed {
                Some(r) => r.tiling,
                None => {
                    let tiling = Tiling::for_budget(job.memory, n, k, threads);
                    let needed = tiling.bytes(n, k, threads);
                    if needed > job.memory {
                        bail!(
                            "the graph of {n} × {k} neighbours needs {:.0} MiB with the smallest tiles; raise --memory (now {:.0} MiB) or lower -k",
                            needed as f64 / 1048576.0,
                            job.memory as f64 / 1048576.0
                        );
                    }
                    tiling
                }
            };
            ensure!(
                tiling.blocks(n).div_ceil(8) + 8
                    <= crate::run::coordinator::schedule::MAX_CHUNK_BYTES,
                "{} blocks of {} rows are too many to share out; raise --memory for larger tiles",
                tiling.blocks(n),
                tiling.rows
            );
            Ok((tiling, resumed))
        })();
        let (tiling, resumed) = match prepared {
            Ok(p) => p,
            Err(e) => {
                for r in 1..size {
                    t.send(r, TAG_KNN_START, &1i32.to_le_bytes())?;
                }
                return Ok(RankEnd::Stopped(e));
            }
        };
        let (finished, graph, files) = match resumed {
            Some(r) => {
                eprintln!(
                    "rmac-native knn: resuming {}: {} of {} blocks already done (from {} state file{})",
                    job.output.display(),
                    r.finished.len(),
                    tiling.blocks(n),
                    r.files.len(),
                    if r.files.len() == 1 { "" } else { "s" }
                );
                (r.finished, r.graph, r.files)
            }
            None => (BTreeSet::new(), Graph::empty(n, k), Vec::new()),
        };
        let start_msg = encode_start(tiling, tiling.blocks(n), &finished);
        for r in 1..size {
            t.send(r, TAG_KNN_START, &start_msg)?;
        }
        (tiling, finished, graph, files)
    } else {
        match decode_start(&wait_for(t, TAG_KNN_START)?, n)? {
            Err(code) => return Ok(RankEnd::Worker(code)),
            Ok((tiling, finished)) => (tiling, finished, Graph::empty(n, k), Vec::new()),
        }
    };

    let blocks = tiling.blocks(n);
    let left: Vec<usize> = (0..blocks)
        .filter(|b| !finished_before.contains(b))
        .collect();
    let mine = share_blocks(tiling, n, &left, size).swap_remove(rank);
    let state = state_path(&job.output, rank);
    // Rank 0's state carries what the stopped runs finished (their files go once it is written).
    let mut finished: Vec<usize> = if rank == 0 {
        finished_before.iter().copied().collect()
    } else {
        Vec::new()
    };
    let save = |finished: &[usize], graph: &Graph| -> Result<()> {
        Checkpoint {
            fingerprint: fingerprint.clone(),
            tile_rows: tiling.rows,
            finished: finished.to_vec(),
            graph: graph.clone(),
        }
        .save(&state)
    };
    if rank == 0 && !old_files.is_empty() {
        save(&finished, &graph)?;
        for f in old_files.iter().filter(|f| **f != state) {
            std::fs::remove_file(f).with_context(|| format!("cannot remove {}", f.display()))?;
        }
    }
    let mut progress = (rank == 0).then(|| {
        WorkProgress::new(
            "knn",
            mine.iter().map(|&b| tiling.block_pairs(b, n)).sum(),
            mine.len(),
        )
    });
    let mut last_save = Instant::now();
    let mut save_failed = None;
    let mut on_done = |b: usize, g: &Graph| {
        finished.push(b);
        if let Some(p) = &mut progress {
            p.add(tiling.block_pairs(b, n));
        }
        if save_failed.is_none() && last_save.elapsed() >= job.checkpoint_every {
            if let Err(e) = save(&finished, g) {
                eprintln!("warning: {e:#}; a stopped run would redo this rank's blocks");
                save_failed = Some(e);
            }
            last_save = Instant::now();
        }
    };
    // The 8-bit copies live beside the vectors: they must fit the budget with the graph.
    let device = match &job.device {
        KnnDevice::CpuInt8 { required, .. } => {
            let why_not = crate::knn::int8::cannot_run(n, dim, (n * k * 8) as u64, job.memory);
            match why_not {
                Some(why) if *required => bail!("--prefilter int8: {why}"),
                Some(why) => {
                    if rank == 0 {
                        eprintln!(
                            "rmac-native knn: scoring in fp32, without the 8-bit pre-filter: {why}"
                        );
                    }
                    &KnnDevice::Cpu
                }
                None => &job.device,
            }
        }
        other => other,
    };
    let device = match device {
        KnnDevice::CpuInt8 { kernel, .. } => {
            let qz = pool.install(|| Quantized::of(data, dim));
            let stats = Int8Stats::default();
            pool.install(|| {
                knn_blocks_int8(
                    data,
                    dim,
                    &qz,
                    *kernel,
                    tiling,
                    &mut graph,
                    &mine,
                    &mut on_done,
                    &stats,
                )
            });
            format!(
                "cpu, 8-bit pre-filter ({}): {} pairs re-scored in fp32",
                kernel.name(),
                stats.rescored.into_inner()
            )
        }
        KnnDevice::Cpu => {
            pool.install(|| knn_blocks(data, dim, tiling, &mut graph, &mine, &mut on_done));
            "cpu".to_string()
        }
        #[cfg(feature = "gpu")]
        KnnDevice::Gpu(opts) => {
            use crate::knn::gpu::{GpuKnn, default_capacity};
            let mut gpu = GpuKnn::new(opts, data, dim, tiling, default_capacity(tiling.rows, k))
                .map_err(|e| anyhow::anyhow!("--backend gpu: {e}"))?;
            pool.install(|| gpu.knn_blocks(data, dim, &mut graph, &mine, &mut on_done))
                .map_err(|e| anyhow::anyhow!("--backend gpu ({}): {e}", gpu.describe()))?;
            format!(
                "gpu {}: {} candidate pairs re-scored on the CPU, {} of {} tiles on the CPU",
                gpu.describe(),
                gpu.stats.candidates,
                gpu.stats.cpu_tiles,
                gpu.stats.tiles
            )
        }
    };
    if let Some(p) = &progress {
        p.finish();
    }
    // The rank's whole part is on disk before it is merged: a failure from here on loses nothing.
    if !mine.is_empty() && save_failed.is_none() {
        save(&finished, &graph)?;
    }
    if rank != 0 {
        send_graph(t, &graph)?;
        return Ok(RankEnd::Worker(0));
    }
    gather_graphs(t, &mut graph)?;
    let report = KnnReport {
        graph_k: k,
        tile_rows: tiling.rows,
        blocks,
        resumed_blocks: finished_before.len(),
        pairs: left.iter().map(|&b| tiling.block_pairs(b, n)).sum(),
        all_pairs: (0..blocks).map(|b| tiling.block_pairs(b, n)).sum(),
        ranks: size,
        threads,
        device,
        seconds: start.elapsed().as_secs_f64(),
    };
    write(&graph, &report)?;
    for f in state_files(&job.output)? {
        std::fs::remove_file(&f).with_context(|| format!("cannot remove {}", f.display()))?;
    }
    Ok(RankEnd::Coordinator(report))
}
