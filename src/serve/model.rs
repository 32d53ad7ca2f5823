//! The query model behind a bounded queue: one worker thread owns the
//! [`Extractor`] (one backend, so one image at a time, as a GPU wants), image
//! queries wait in a queue of fixed length, and a query that finds it full
//! waits for a place (the request's timeout bounds the wait). Decoding and
//! resizing happen before, on the caller's blocking pool, so the worker only
//! runs the network and the R-MAC head.

use crate::extractor::{ExtractConfig, ExtractError, Extractor, Prepared};
use tokio::sync::{mpsc, oneshot};

struct Job {
    prepared: Prepared,
    reply: oneshot::Sender<Result<Vec<f32>, ExtractError>>,
}

/// The handle the handlers hold; cloning it shares the one worker.
#[derive(Clone)]
pub struct ModelQueue {
    jobs: mpsc::Sender<Job>,
    /// The backend's name, for `/api/info`.
    pub backend: String,
    /// The recipe (size, levels, decoder limits) images are prepared with.
    pub config: ExtractConfig,
}

/// Why an image query got no vector from the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    Extract(#[from] ExtractError),
    #[error("the model worker stopped; restart the server")]
    Stopped,
}

impl ModelQueue {
    /// Starts the worker thread; `queue` image queries may wait for it.
    pub fn start(mut extractor: Extractor, queue: usize) -> ModelQueue {
        let (tx, mut rx) = mpsc::channel::<Job>(queue.max(1));
        let backend = extractor.backend_name();
        let config = extractor.config().clone();
        std::thread::Builder::new()
            .name("rmac-model".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    // A client that gave up has dropped its receiver: skip its image.
                    if job.reply.is_closed() {
                        continue;
                    }
                    let _ = job.reply.send(extractor.describe_prepared(&job.prepared));
                }
            })
            .expect("cannot start the model thread");
        ModelQueue {
            jobs: tx,
            backend,
            config,
        }
    }

    /// Image queries sent and not yet taken by the worker.
    pub fn waiting(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }

    /// The vector of a prepared image, once the worker gets to it.
    pub async fn describe(&self, prepared: Prepared) -> Result<Vec<f32>, ModelError> {
        let (reply, answer) = oneshot::channel();
        if self.jobs.send(Job { prepared, reply }).await.is_err() {
            return Err(ModelError::Stopped);
        }
        Ok(answer.await.map_err(|_| ModelError::Stopped)??)
    }
}
