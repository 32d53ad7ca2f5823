//! A kNN run's state on disk, so that a killed run resumes by block: the
//! blocks a process has finished and its partial graph (the candidates those
//! blocks gave, see [`super::knn_blocks`]), under a fingerprint of what was
//! computed. One file per process (rank); any set of them merges.
//!
//! Layout: `RMACKNN1`, a u32 (little-endian) length and that many bytes of
//! JSON ([`Header`]), then `n·k` u32 rows and `n·k` f32 scores, little-endian.

use super::Graph;
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::io::{BufReader, Read};
use std::path::Path;

const MAGIC: &[u8; 8] = b"RMACKNN1";

/// What a state belongs to: a resume must compute the same graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub n: usize,
    pub dim: usize,
    pub k: usize,
    /// [`vectors_digest`] of the vectors and their paths.
    pub vectors: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Header {
    fingerprint: Fingerprint,
    tile_rows: usize,
    finished: Vec<usize>,
}

/// A process's finished blocks and its partial graph.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub fingerprint: Fingerprint,
    /// The tiling the blocks are numbered by.
    pub tile_rows: usize,
    pub finished: Vec<usize>,
    pub graph: Graph,
}

/// A digest of the vectors (their bits) and paths: 64-bit multiply-xor over
/// 8-byte words, fast enough for gigabytes (a resume check, not security).
pub fn vectors_digest(data: &[f32], paths: &[String]) -> String {
    fn mix(h: u64, w: u64) -> u64 {
        (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29)
    }
    let mut h = 0x243F_6A88_85A3_08D3u64 ^ data.len() as u64;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        h = mix(h, (w[0].to_bits() as u64) | ((w[1].to_bits() as u64) << 32));
    }
    for w in words.remainder() {
        h = mix(h, w.to_bits() as u64);
    }
    for p in paths {
        h = mix(h, p.len() as u64);
        for b in p.as_bytes().chunks(8) {
            let mut w = [0u8; 8];
            w[..b.len()].copy_from_slice(b);
            h = mix(h, u64::from_le_bytes(w));
        }
    }
    format!("{h:016x}")
}

impl Checkpoint {
    /// Writes the state atomically (a kill mid-write leaves the previous one).
    pub fn save(&self, path: &Path) -> Result<()> {
        let header = serde_json::to_vec(&Header {
            fingerprint: self.fingerprint.clone(),
            tile_rows: self.tile_rows,
            finished: self.finished.clone(),
        })?;
        crate::files::write_atomically_with(path, &mut |w| {
            w.write_all(MAGIC)?;
            w.write_all(&(header.len() as u32).to_le_bytes())?;
            w.write_all(&header)?;
            for r in &self.graph.idx {
                w.write_all(&r.to_le_bytes())?;
            }
            for s in &self.graph.score {
                w.write_all(&s.to_le_bytes())?;
            }
            Ok(())
        })
        .with_context(|| format!("cannot write the kNN state {}", path.display()))
    }

    pub fn load(path: &Path) -> Result<Checkpoint> {
        let what = || format!("the kNN state {}", path.display());
        let file = std::fs::File::open(path).with_context(what)?;
        let len = file.metadata().with_context(what)?.len();
        let mut r = BufReader::new(file);
        let mut magic = [0u8; 8];
        let mut word = [0u8; 4];
        r.read_exact(&mut magic).with_context(what)?;
        ensure!(
            &magic == MAGIC,
            "{} is not a kNN state file",
            path.display()
        );
        r.read_exact(&mut word).with_context(what)?;
        let header_len = u32::from_le_bytes(word) as u64;
        ensure!(header_len < len, "{} is truncated", path.display());
        let mut header = vec![0u8; header_len as usize];
        r.read_exact(&mut header).with_context(what)?;
        let h: Header = serde_json::from_slice(&header).with_context(what)?;
        let (n, k) = (h.fingerprint.n, h.fingerprint.k);
        if len != 12 + header_len + (n * k * 8) as u64 {
            bail!(
                "{} is truncated or damaged ({len} bytes for a graph of {n} × {k}); delete it to recompute its blocks",
                path.display()
            );
        }
        let mut graph = Graph::empty(n, k);
        for v in &mut graph.idx {
            r.read_exact(&mut word).with_context(what)?;
            *v = u32::from_le_bytes(word);
        }
        for v in &mut graph.score {
            r.read_exact(&mut word).with_context(what)?;
            *v = f32::from_le_bytes(word);
        }
        Ok(Checkpoint {
            fingerprint: h.fingerprint,
            tile_rows: h.tile_rows,
            finished: h.finished,
            graph,
        })
    }
}
