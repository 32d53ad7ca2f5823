//! Near-duplicate groups: the connected components of the graph "score ≥ T"
//! over all pairs ([`super::pairs_at_least`], not limited to k neighbours: a
//! static shot of 500 frames is one group), each with a representative (its
//! first row in input order, also the suggested keeper) and every member's
//! score to it.

use super::{Tiling, pairs_at_least};
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

/// The groups of rows joined by pairs scoring at least `threshold`, ordered by
/// their keeper; rows in no pair are in no group.
pub fn groups(
    data: &[f32],
    dim: usize,
    threshold: f32,
    tiling: Tiling,
    progress: &(dyn Fn(usize) + Sync),
) -> Vec<Group> {
    let n = data.len() / dim.max(1);
    let mut uf = UnionFind::new(n);
    let mut paired = vec![false; n];
    pairs_at_least(
        data,
        dim,
        threshold,
        tiling,
        &mut |pairs| {
            for &(i, j, _) in pairs {
                uf.union(i, j);
                paired[i as usize] = true;
                paired[j as usize] = true;
            }
        },
        progress,
    );
    let mut by_root: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (i, _) in paired.iter().enumerate().filter(|(_, p)| **p) {
        by_root.entry(uf.find(i as u32)).or_default().push(i);
    }
    let row = |i: usize| &data[i * dim..(i + 1) * dim];
    by_root
        .into_iter()
        .map(|(root, rows)| Group {
            keeper: root as usize,
            members: rows
                .into_iter()
                .map(|i| (i, dot(row(root as usize), row(i))))
                .collect(),
        })
        .collect()
}
