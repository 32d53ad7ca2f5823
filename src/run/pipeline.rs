//! One process's extraction pipeline, the one every batch command reuses
//! (`extract` on each rank, `pca fit`, later ones): a decode thread runs ahead
//! of the backend (so the next image is decoded and resized while this one is
//! on the device), the backend runs in its own thread, and the head (the R-MAC
//! step, or whatever the caller needs from pool5) runs on the caller's thread
//! while the backend works on the next image. One bad image is a record —
//! an error or a panic in a decoder becomes that image's error — never the end
//! of the batch. With `--skip-static` the decode thread also judges each video
//! frame against the last kept frame of its segment ([`crate::video::still`])
//! and sends a static one past the backend as skipped. Scheduling and writing
//! around it live in [`super::coordinator`].

use crate::backend::Backend;
use crate::extractor::{
    ExtractConfig, ExtractError, Extractor, Prepared, prepare_image, prepare_path,
};
use crate::tensor::Tensor3;
use crate::video::still::{StillFilter, StillStep, Thumbnail, Verdict};
use crate::video::{Cursors, Sampling, parse_frame_key};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, sync_channel};
use std::time::Instant;

/// Images decoded ahead of the backend.
const PREFETCH: usize = 2;

/// One image to do: its position in the caller's list, and its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: u64,
    pub path: String,
    /// A video frame under `--skip-static`: its place in its segment. `None`
    /// for images, and for every job when the flag is off.
    pub still: Option<StillStep>,
}

impl Job {
    /// A job without `--skip-static`'s segment.
    pub fn new(id: u64, path: String) -> Job {
        Job {
            id,
            path,
            still: None,
        }
    }

    /// A frame decoded again only to find its segment's last kept frame: it
    /// gives no [`Done`].
    pub fn is_replay(&self) -> bool {
        self.still.is_some_and(|s| s.replay)
    }
}

/// Why a job has no vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoVector {
    /// Something went wrong: the error record's text.
    Failed(String),
    /// A static video frame (`--skip-static`): the skipped record's text.
    Skipped(String),
}

impl std::fmt::Display for NoVector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoVector::Failed(why) | NoVector::Skipped(why) => f.write_str(why),
        }
    }
}

/// One image done: the head's result, or why there is none.
#[derive(Debug)]
pub struct Done<T> {
    pub id: u64,
    pub result: Result<T, NoVector>,
    /// Seconds this image spent in decode + resize (decode thread).
    pub decode_s: f64,
    /// Seconds this image spent in the backend and the head (their threads).
    pub compute_s: f64,
}

/// Runs `f`, turning a panic into an error message for that image (a bug in a
/// decoder must not take the other images down with it). Public for the Python
/// binding, which describes images given as bytes or arrays outside the pipeline.
pub fn guarded<T>(
    what: &str,
    path: &str,
    f: impl FnOnce() -> Result<T, ExtractError>,
) -> Result<T, String> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(format!(
                "internal error while {what} {path}: {msg} (please report this image to the rmac-native developers)"
            ))
        }
    }
}

/// `work` (decoding one file) in a thread of its own that is given up on
/// after `config.limits.max_time`: a read that never returns (a stalled
/// network file system, a device) becomes this image's error and the batch
/// goes on; the stuck thread is left behind, holding only that file. The
/// video decoders kept open in `cursors` travel into the watched thread and
/// back (a thread given up on keeps them, and the next frame reopens its video).
fn watched<R: Send + 'static>(
    path: &str,
    config: &ExtractConfig,
    cursors: &mut Cursors,
    work: impl FnOnce(&str, &ExtractConfig, &mut Cursors) -> Result<R, ExtractError> + Send + 'static,
) -> Result<R, String> {
    let (tx, rx) = sync_channel(1);
    let (owned, config_owned) = (path.to_owned(), config.clone());
    let mut moved = std::mem::take(cursors);
    let spawned = std::thread::Builder::new()
        .name("rmac-decode-1".into())
        .spawn(move || {
            let r = guarded("decoding", &owned, || {
                work(&owned, &config_owned, &mut moved)
            });
            let _ = tx.send((r, moved));
        });
    if let Err(e) = spawned {
        return Err(format!("cannot start a thread to decode the file: {e}"));
    }
    let limit = config.limits.max_time;
    match rx.recv_timeout(limit) {
        Ok((r, back)) => {
            *cursors = back;
            r
        }
        Err(RecvTimeoutError::Timeout) => Err(format!(
            "reading and decoding took longer than {} s (--decode-timeout), so the file was skipped; \
             check the file and the file system it is on, or raise --decode-timeout",
            limit.as_secs_f64()
        )),
        Err(RecvTimeoutError::Disconnected) => {
            Err("internal error: the decode thread stopped without a result".into())
        }
    }
}

/// The frame of a frame key (`VIDEO#t=S`) as 8-bit RGB, from the decoders in `cursors`.
fn decode_frame(
    path: &str,
    config: &ExtractConfig,
    cursors: &mut Cursors,
) -> Result<image::RgbImage, ExtractError> {
    let key = parse_frame_key(path)
        .ok_or_else(|| ExtractError::Video(format!("{path} is not a video frame's key")))?;
    cursors
        .frame(
            key.video,
            key,
            config.sampling == Sampling::Keyframes,
            &config.limits,
        )
        .map_err(ExtractError::Video)
}

/// Decode → resize → preprocess of one image or video frame, watched
/// ([`watched`]).
fn prepare_watched(
    path: &str,
    config: &ExtractConfig,
    cursors: &mut Cursors,
) -> Result<Prepared, String> {
    watched(path, config, cursors, |path, config, cursors| {
        if parse_frame_key(path).is_some() {
            prepare_image(&decode_frame(path, config, cursors)?, config)
        } else {
            prepare_path(Path::new(path), config)
        }
    })
}

/// A video frame under `--skip-static`: decoded (watched), judged against the
/// last kept frame of its segment, and prepared only when kept. `None` for a
/// replayed frame (judged only to carry the segment on; no result).
fn prepare_still(
    job: &Job,
    step: StillStep,
    config: &ExtractConfig,
    cursors: &mut Cursors,
    filter: &mut StillFilter,
) -> Option<Result<Prepared, NoVector>> {
    let verdict = filter.enter(step).and_then(|()| {
        let t_ms = parse_frame_key(&job.path).map_or(0, |k| k.t_ms);
        let (rgb, thumb) = watched(&job.path, config, cursors, |path, config, cursors| {
            let rgb = decode_frame(path, config, cursors)?;
            let thumb = Thumbnail::of(&rgb);
            Ok((rgb, thumb))
        })?;
        Ok((rgb, filter.judge(thumb, t_ms)))
    });
    if step.replay {
        return None;
    }
    Some(match verdict {
        Err(why) => Err(NoVector::Failed(why)),
        Ok((_, Verdict::Skip(why))) => Err(NoVector::Skipped(why)),
        Ok((rgb, Verdict::Keep)) => {
            guarded("decoding", &job.path, || prepare_image(&rgb, config)).map_err(NoVector::Failed)
        }
    })
}

/// The pipeline in three threads: decoding runs [`PREFETCH`] images ahead of
/// `backend`, and `head` of one image runs (on this thread) while the backend
/// works on the next (on a GPU the R-MAC head was 20% of an image's time on
/// the thread that waits for the device). Reads jobs until `jobs` is closed,
/// sends one [`Done`] per job that is not a replay ([`Job::is_replay`]), in job
/// order. Returns when every job is done or `results` is gone. `head` gets an
/// image's pool5 maps, one per scale (`--scales`; one map without it).
pub fn run_pipeline<T>(
    backend: &mut dyn Backend,
    config: &ExtractConfig,
    head: impl Fn(&[Tensor3]) -> T,
    jobs: Receiver<Job>,
    results: Sender<Done<T>>,
) {
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<(Job, Result<Prepared, NoVector>, f64)>(PREFETCH);
        std::thread::Builder::new()
            .name("rmac-decode".into())
            .spawn_scoped(scope, move || {
                let mut cursors = Cursors::default();
                // Jobs carry segments only under --skip-static; D = 0 would skip nothing.
                let mut filter = StillFilter::new(config.skip_static.unwrap_or(0.0));
                for job in jobs {
                    let t = Instant::now();
                    let prepared = match job.still {
                        Some(step) => {
                            match prepare_still(&job, step, config, &mut cursors, &mut filter) {
                                Some(p) => p,
                                None => continue, // a replay: judged, nothing to send
                            }
                        }
                        None => prepare_watched(&job.path, config, &mut cursors)
                            .map_err(NoVector::Failed),
                    };
                    if tx.send((job, prepared, t.elapsed().as_secs_f64())).is_err() {
                        break; // the compute side stopped
                    }
                }
            })
            .expect("cannot start the decode thread");
        let (pool5_tx, pool5_rx) =
            sync_channel::<(Job, Result<Vec<Tensor3>, NoVector>, f64, f64)>(1);
        std::thread::Builder::new()
            .name("rmac-backend".into())
            .spawn_scoped(scope, move || {
                for (job, prepared, decode_s) in rx {
                    let t = Instant::now();
                    let pool5 = prepared.and_then(|p| {
                        guarded("computing", &job.path, || {
                            p.tensors()
                                .map(|t| Ok(backend.pool5(t)?))
                                .collect::<Result<Vec<_>, ExtractError>>()
                        })
                        .map_err(NoVector::Failed)
                    });
                    let backend_s = t.elapsed().as_secs_f64();
                    if pool5_tx.send((job, pool5, decode_s, backend_s)).is_err() {
                        break; // the head side stopped
                    }
                }
            })
            .expect("cannot start the backend thread");
        for (job, pool5, decode_s, backend_s) in pool5_rx {
            let t = Instant::now();
            let result = pool5.and_then(|p| {
                guarded("computing", &job.path, || Ok(head(p.as_slice()))).map_err(NoVector::Failed)
            });
            let done = Done {
                id: job.id,
                result,
                decode_s,
                compute_s: backend_s + t.elapsed().as_secs_f64(),
            };
            if results.send(done).is_err() {
                break;
            }
        }
    });
}

/// [`run_pipeline`] with the extractor's own R-MAC head: one vector per job.
pub fn run_extractor(
    extractor: &mut Extractor,
    jobs: Receiver<Job>,
    results: Sender<Done<Vec<f32>>>,
) {
    let config = extractor.config().clone();
    let (backend, head) = extractor.stages();
    run_pipeline(backend, &config, |p| head.vector(p), jobs, results);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, BackendError};

    /// A stand-in backend: pool5 computed from the image's own values (so a
    /// result handed to the wrong job shows), slower on some images so that
    /// the stages overlap differently from image to image.
    struct Echo;
    impl Backend for Echo {
        fn name(&self) -> String {
            "echo".into()
        }
        fn pool5(&mut self, x: &Tensor3) -> Result<Tensor3, BackendError> {
            let (h, w) = ((x.h / 32).max(1), (x.w / 32).max(1));
            let mean = x.data.iter().sum::<f32>() / x.data.len() as f32;
            if mean > 0.0 {
                std::thread::sleep(std::time::Duration::from_millis(3));
            }
            let data = (0..h * w * 512)
                .map(|i| (mean + (i % 13) as f32).abs() + 1.0)
                .collect();
            Ok(Tensor3::from_vec(h, w, 512, data))
        }
    }

    #[test]
    fn the_three_stage_pipeline_gives_each_job_its_own_result_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for i in 0..19u32 {
            let p = dir.path().join(format!("{i}.png"));
            if i % 6 == 4 {
                std::fs::write(&p, b"not a png").unwrap();
            } else {
                let side = 40 + (i * 37) % 200;
                image::RgbImage::from_fn(side, side / 2 + 10, |x, y| {
                    image::Rgb([(x + i * 11) as u8, (y * 3) as u8, (i * 40) as u8])
                })
                .save(&p)
                .unwrap();
            }
            paths.push(p.to_string_lossy().into_owned());
        }
        paths.push(
            dir.path()
                .join("missing.jpg")
                .to_string_lossy()
                .into_owned(),
        );
        let config = ExtractConfig {
            max_size: 64,
            ..ExtractConfig::default()
        };
        let mut ex = Extractor::new(Box::new(Echo), None, config);
        let (jobs_tx, jobs_rx) = std::sync::mpsc::channel();
        for (id, path) in paths.iter().enumerate() {
            let path = path.clone();
            jobs_tx.send(Job::new(id as u64, path)).unwrap();
        }
        drop(jobs_tx);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        run_extractor(&mut ex, jobs_rx, done_tx);
        let done: Vec<Done<Vec<f32>>> = done_rx.into_iter().collect();
        assert_eq!(done.len(), paths.len());
        for (i, d) in done.iter().enumerate() {
            assert_eq!(d.id, i as u64, "results in job order");
            match (&d.result, ex.describe_path(Path::new(&paths[i]))) {
                (Ok(v), Ok(want)) => assert_eq!(v, &want, "{}", paths[i]),
                (Err(_), Err(_)) => {}
                (got, want) => panic!("{}: {got:?} vs {want:?}", paths[i]),
            }
        }
    }
}
