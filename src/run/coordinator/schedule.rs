//! Dynamic scheduling: the coordinator hands out the pending images in small
//! chunks, on request, so a rank that drew expensive images simply asks less
//! often. Chunks shrink as the list runs out ("guided" scheduling), so the
//! ranks finish close together. With `--skip-static` a chunk never ends
//! inside a segment of a video's frames ([`crate::video::still`]), and a
//! partly done segment is handed out from its first frame ([`plan`]).

use crate::video::FrameIndex;
use crate::video::still::{SEGMENT, StillStep};
use std::collections::HashSet;
use std::ops::Range;

/// The largest chunk handed out at once (but for a `--skip-static` segment,
/// which is never cut: up to [`SEGMENT`] frames).
pub const MAX_CHUNK: usize = 16;

/// The bytes of paths in one chunk message (a chunk stops early when its paths
/// would exceed this; one path alone may take up to [`MAX_PATH_BYTES`], and a
/// `--skip-static` segment goes on to its end: at most [`SEGMENT`] paths).
pub const MAX_CHUNK_BYTES: usize = 16 * 1024;

/// One position of the work handed out: a path of the input list, and with
/// `--skip-static` the frame's place in its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item {
    /// Index into the input list.
    pub path: usize,
    pub still: Option<StillStep>,
}

impl Item {
    /// Whether a chunk may end just before this item: anywhere but inside a segment.
    pub fn starts_a_piece(&self) -> bool {
        self.still.is_none_or(|s| s.anchor)
    }
}

/// The work of a run, in list order: every path not in `done`. With
/// `--skip-static` (`frames`: the video frames among `paths`), each video's
/// frames are grouped into segments of [`SEGMENT`] consecutive sampled frames
/// (by [`crate::video::FrameInfo::sample`]); a segment with pending frames is
/// planned from its first frame up to its last pending one, its done frames
/// as replays (decoded again to find the last kept frame, never recorded),
/// and a segment that is all done is left out.
pub fn plan(paths: &[String], done: &HashSet<String>, frames: Option<&FrameIndex>) -> Vec<Item> {
    let pending = |i: usize| !done.contains(&paths[i]);
    let Some(frames) = frames else {
        return (0..paths.len())
            .filter(|&i| pending(i))
            .map(|path| Item { path, still: None })
            .collect();
    };
    let mut items = Vec::new();
    let mut i = 0;
    while i < paths.len() {
        let Some(info) = frames.get(&paths[i]) else {
            if pending(i) {
                items.push(Item {
                    path: i,
                    still: None,
                });
            }
            i += 1;
            continue;
        };
        // The segment: the frames from here on of the same video and segment
        // number (a video's frames are listed together, in sampling order).
        let number = info.sample / SEGMENT;
        let end = (i + 1..paths.len())
            .find(|&j| {
                frames
                    .get(&paths[j])
                    .is_none_or(|f| f.video != info.video || f.sample / SEGMENT != number)
            })
            .unwrap_or(paths.len());
        if let Some(last) = (i..end).rev().find(|&j| pending(j)) {
            for j in i..=last {
                items.push(Item {
                    path: j,
                    still: Some(StillStep {
                        segment: i as u64,
                        anchor: j == i,
                        replay: !pending(j),
                    }),
                });
            }
        }
        i = end;
    }
    items
}

/// Paths longer than this are failed by the coordinator without being sent
/// anywhere (no file system opens a path this long).
pub const MAX_PATH_BYTES: usize = 8 * 1024;

/// Hands out positions `0..len` of the pending list in order, in chunks.
#[derive(Debug)]
pub struct Scheduler {
    next: usize,
    len: usize,
    workers: usize,
}

impl Scheduler {
    /// `workers`: how many ranks pull work (the coordinator's own pipeline included).
    pub fn new(len: usize, workers: usize) -> Self {
        Scheduler {
            next: 0,
            len,
            workers: workers.max(1),
        }
    }

    pub fn remaining(&self) -> usize {
        self.len - self.next
    }

    pub fn is_exhausted(&self) -> bool {
        self.next >= self.len
    }

    /// How many images the next chunk holds: a quarter of a fair share of what
    /// is left, between 1 and [`MAX_CHUNK`].
    pub fn chunk_len(&self) -> usize {
        self.remaining()
            .div_ceil(4 * self.workers)
            .clamp(1, MAX_CHUNK)
            .min(self.remaining())
    }

    /// The next chunk (empty when everything is handed out). `bytes(i)` is the
    /// size of position `i`'s path: the chunk stops before [`MAX_CHUNK_BYTES`]
    /// (but always holds at least one position). `may_end_before(i)`: whether
    /// a chunk may end just before position `i` (else it goes on to the next
    /// position that allows it, whatever its length: a `--skip-static`
    /// segment is never cut).
    pub fn next_chunk(
        &mut self,
        bytes: impl Fn(usize) -> usize,
        may_end_before: impl Fn(usize) -> bool,
    ) -> Range<usize> {
        let start = self.next;
        let want = self.chunk_len();
        let mut end = start;
        let mut total = 0;
        while end < start + want {
            let b = bytes(end);
            if end > start && total + b > MAX_CHUNK_BYTES {
                break;
            }
            total += b;
            end += 1;
        }
        while end < self.len && !may_end_before(end) {
            end += 1;
        }
        self.next = end;
        start..end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::still::{StillFilter, Thumbnail, Verdict};
    use crate::video::{FrameInfo, frame_key};
    use std::collections::BTreeMap;

    /// Images and the frames of two videos (`n` and 10 sampled frames, one a
    /// second), as `extract` lists them, with their frame index.
    fn listing(n: u64) -> (Vec<String>, FrameIndex) {
        let mut paths = vec!["a.jpg".to_owned()];
        let mut frames = FrameIndex::new();
        for (video, count) in [("v.mp4", n), ("w.mkv", 10)] {
            for sample in 0..count {
                let key = frame_key(video, sample * 1000);
                frames.insert(
                    key.clone(),
                    FrameInfo {
                        video: video.to_owned(),
                        t_ms: sample * 1000,
                        frame: sample * 25,
                        sample,
                    },
                );
                paths.push(key);
            }
            paths.push(format!("after-{video}.png"));
        }
        (paths, frames)
    }

    #[test]
    fn a_plan_hands_out_partly_done_segments_from_their_first_frame() {
        let (paths, frames) = listing(600);
        let v = |k: u64| 1 + k as usize; // list position of v.mp4's frame k
        let mut done: HashSet<String> = HashSet::new();
        done.insert("a.jpg".into());
        // Segment 0 of v.mp4 all done; segment 1 done up to frame 300, and frame 310.
        for k in (0..=300).chain([310]) {
            done.insert(paths[v(k)].clone());
        }
        done.insert(frame_key("w.mkv", 3000));
        let items = plan(&paths, &done, Some(&frames));
        let of = |i: usize| items.iter().find(|it| it.path == i);
        assert!(of(0).is_none(), "a done image is left out");
        assert!(
            (0..256).all(|k| of(v(k)).is_none()),
            "a done segment is left out"
        );
        for k in 256..600 {
            let step = of(v(k)).unwrap().still.unwrap();
            let first = if k < 512 { 256 } else { 512 };
            assert_eq!(step.segment, v(first) as u64, "frame {k}");
            assert_eq!(step.anchor, k == first, "frame {k}");
            assert_eq!(step.replay, k <= 300 || k == 310, "frame {k}");
        }
        let image = of(v(600)).unwrap();
        assert_eq!(image.still, None);
        let w: Vec<StillStep> = items
            .iter()
            .filter(|it| paths[it.path].starts_with("w.mkv"))
            .map(|it| it.still.unwrap())
            .collect();
        assert_eq!(w.len(), 10);
        assert!(w[0].anchor && w.iter().skip(1).all(|s| !s.anchor));
        assert_eq!(w.iter().filter(|s| s.replay).count(), 1);
        // Without --skip-static: every pending path, nothing else.
        let plain = plan(&paths, &done, None);
        assert_eq!(plain.len(), paths.len() - done.len());
        assert!(plain.iter().all(|it| it.still.is_none()));
    }

    /// A frame's thumbnail in the simulation: gray levels that hold for a
    /// while, drift by less than 2 levels, and jump.
    fn thumb(k: u64) -> Thumbnail {
        let level = ((k / 37) * 40 + (k % 5) / 2) % 250;
        Thumbnail::of(&image::RgbImage::from_pixel(
            8,
            6,
            image::Rgb([level as u8; 3]),
        ))
    }

    /// `--skip-static 2` over the plan of (`paths`, `done`), its chunks handed
    /// to `workers` simulated ranks in turn, each judging its chunks in order
    /// with its own filter: every recorded decision by path.
    fn decisions(
        paths: &[String],
        frames: &FrameIndex,
        done: &HashSet<String>,
        workers: usize,
    ) -> BTreeMap<String, Verdict> {
        let items = plan(paths, done, Some(frames));
        let mut sched = Scheduler::new(items.len(), workers);
        let mut filters: Vec<StillFilter> = (0..workers).map(|_| StillFilter::new(2.0)).collect();
        let mut out = BTreeMap::new();
        for turn in 0.. {
            let chunk = sched.next_chunk(|_| 30, |i| items[i].starts_a_piece());
            if chunk.is_empty() {
                break;
            }
            assert!(items[chunk.start].starts_a_piece());
            assert!(items.get(chunk.end).is_none_or(Item::starts_a_piece));
            let filter = &mut filters[(turn * 7 + turn / 3) % workers];
            for item in &items[chunk] {
                let path = &paths[item.path];
                let Some(step) = item.still else {
                    out.insert(path.clone(), Verdict::Keep);
                    continue;
                };
                filter.enter(step).unwrap();
                let info = &frames[path];
                let verdict = filter.judge(thumb(info.sample), info.t_ms);
                if !step.replay {
                    assert!(out.insert(path.clone(), verdict).is_none(), "{path} twice");
                }
            }
        }
        out
    }

    #[test]
    fn skip_static_decisions_do_not_depend_on_the_ranks_or_on_a_resume() {
        let (paths, frames) = listing(700);
        let none = HashSet::new();
        let reference = decisions(&paths, &frames, &none, 1);
        assert_eq!(reference.len(), paths.len());
        let skipped = reference.values().filter(|v| **v != Verdict::Keep).count();
        assert!(skipped > 400, "{skipped} of {} skipped", reference.len());
        for workers in [2, 3, 5, 8] {
            assert_eq!(
                decisions(&paths, &frames, &none, workers),
                reference,
                "{workers} ranks"
            );
        }
        // A resume: some frames (and an image) done, in several segments.
        let done: HashSet<String> = paths
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 7 == 3 || (100..300).contains(i) || *i == 0)
            .map(|(_, p)| p.clone())
            .collect();
        for workers in [1, 3] {
            let resumed = decisions(&paths, &frames, &done, workers);
            let want: BTreeMap<String, Verdict> = reference
                .iter()
                .filter(|(p, _)| !done.contains(*p))
                .map(|(p, v)| (p.clone(), v.clone()))
                .collect();
            assert_eq!(resumed, want, "resumed on {workers} ranks");
        }
    }

    #[test]
    fn hands_out_every_position_once_in_shrinking_chunks() {
        let mut s = Scheduler::new(1000, 3);
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        loop {
            let c = s.next_chunk(|_| 10, |_| true);
            if c.is_empty() {
                break;
            }
            sizes.push(c.len());
            seen.extend(c);
        }
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        assert_eq!(sizes[0], MAX_CHUNK);
        assert_eq!(*sizes.last().unwrap(), 1);
        assert!(sizes.windows(2).all(|w| w[1] <= w[0]), "{sizes:?}");
        assert!(s.is_exhausted());
    }

    #[test]
    fn long_paths_make_short_chunks_but_never_empty_ones() {
        let mut s = Scheduler::new(10, 1);
        assert_eq!(s.next_chunk(|_| MAX_CHUNK_BYTES / 3, |_| true).len(), 3);
        assert_eq!(s.next_chunk(|_| MAX_PATH_BYTES * 4, |_| true).len(), 1);
        assert_eq!(s.remaining(), 6);
    }
}
