//! Near-duplicate groups: the connected components of the graph "score ≥ T"
//! over all pairs ([`super::pairs_at_least`], not limited to k neighbours: a
//! static shot of 500 frames is one group), each with a representative (its
//! first row in input order, also the suggested keeper) and every member's
//! score to it.

use super::int8::{Int8Kernel, Quantized, pairs_at_least_int8};
use super::{Pair, Tiling, pairs_at_least};
use crate::search::dot;

/// Union-find over row numbers, the smaller row always the root (so a group's
/// root is its first row in input order).
pub struct UnionFind {
    parent: Vec<u32>,
}

impl UnionFind {
    pub fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n as u32).collect(),
        }
    }

    pub fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize]; // path halving
            x = p;
        }
        x
    }

    pub fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (lo, hi) = (ra.min(rb), ra.max(rb));
            self.parent[hi as usize] = lo;
        }
    }
}

/// One group of two or more rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// The first row in input order: the representative and the suggested keeper.
    pub keeper: usize,
    /// Every member (the keeper first, then in input order) with its score to the keeper.
    pub members: Vec<(usize, f32)>,
}

/// How many groups one threshold makes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub threshold: f32,
    pub groups: usize,
    /// Rows in some group (keepers included): `in_groups − groups` could be dropped.
    pub in_groups: usize,
}

/// The groups of rows joined by pairs scoring at least `thresholds[0]`,
/// ordered by their keeper (rows in no pair are in no group), and how many
/// groups each of `thresholds` makes — from one pass over the pairs at the
/// lowest threshold (scored with the 8-bit pre-filter when `prefilter` holds
/// the copies of `data` and a kernel: the same pairs, so the same groups).
/// `progress(block)` after each block of rows.
pub fn groups(
    data: &[f32],
    dim: usize,
    thresholds: &[f32],
    tiling: Tiling,
    prefilter: Option<(&Quantized, Int8Kernel)>,
    progress: &mut dyn FnMut(usize),
) -> (Vec<Group>, Vec<Summary>) {
    assert!(!thresholds.is_empty(), "at least one threshold");
    let n = data.len() / dim.max(1);
    let mut sets: Vec<(UnionFind, Vec<bool>)> = thresholds
        .iter()
        .map(|_| (UnionFind::new(n), vec![false; n]))
        .collect();
    let lowest = thresholds.iter().copied().fold(f32::INFINITY, f32::min);
    let mut add = |block: usize, pairs: &[Pair]| {
        for &(i, j, s) in pairs {
            for (&t, (uf, paired)) in thresholds.iter().zip(&mut sets) {
                if s >= t {
                    uf.union(i, j);
                    paired[i as usize] = true;
                    paired[j as usize] = true;
                }
            }
        }
        progress(block);
    };
    match prefilter {
        Some((qz, kernel)) => pairs_at_least_int8(data, dim, qz, kernel, lowest, tiling, &mut add),
        None => pairs_at_least(data, dim, lowest, tiling, &mut add),
    }
    let summaries = thresholds
        .iter()
        .zip(&mut sets)
        .map(|(&threshold, (uf, paired))| {
            let in_groups = paired.iter().filter(|&&p| p).count();
            let groups = (0..n)
                .filter(|&i| paired[i] && uf.find(i as u32) == i as u32)
                .count();
            Summary {
                threshold,
                groups,
                in_groups,
            }
        })
        .collect();
    let (uf, paired) = &mut sets[0];
    let mut by_root: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (i, _) in paired.iter().enumerate().filter(|(_, p)| **p) {
        by_root.entry(uf.find(i as u32)).or_default().push(i);
    }
    let row = |i: usize| &data[i * dim..(i + 1) * dim];
    let found = by_root
        .into_iter()
        .map(|(root, rows)| Group {
            keeper: root as usize,
            members: rows
                .into_iter()
                .map(|i| (i, dot(row(root as usize), row(i))))
                .collect(),
        })
        .collect();
    (found, summaries)
}
