//! The `http` sink: batched NDJSON `POST`s to a collector, fed from the sink's disk spool.
//!
//! The sender thread reads up to `batch_size` lines from the spool, waiting up to `linger_ms`
//! for a batch to fill, and posts them as one `application/x-ndjson` body (gzip'd with
//! `Content-Encoding: gzip` when `gzip: true`) with the configured headers. A `2xx` answer
//! marks the lines delivered; anything else — refused connection, timeout, any other status —
//! is retried with exponential backoff and jitter, the same lines in the same order, for as
//! long as it takes. Records meanwhile wait in the spool; when it is full, requests get 503.
//!
//! At-least-once: a batch the collector took but whose answer was lost is posted again;
//! every line carries its `seq`, so the collector can drop the duplicate.

use std::io::Write;
use std::thread::JoinHandle;
use std::time::Instant;

use http::header::{CONTENT_ENCODING, CONTENT_TYPE};

use super::{Backoff, Stop};
use crate::audit::spool::SpoolReader;
use crate::audit::AuditSetupError;
use crate::config::HttpSinkConfig;
use crate::metrics::Metrics;

/// Upper bound on one request body (before compression).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("request failed: {0}")]
    Request(reqwest::Error),
    #[error("collector answered {0}")]
    Status(u16),
    #[error("cannot compress the batch: {0}")]
    Gzip(std::io::Error),
    #[error("no answer before the shutdown deadline")]
    Deadline,
}

/// Starts the sender thread of an `http` sink.
pub fn spawn(
    cfg: &HttpSinkConfig,
    reader: SpoolReader,
    stop: Stop,
    metrics: Metrics,
) -> Result<JoinHandle<()>, AuditSetupError> {
    // The collector is reached directly: a sidecar's audit trail does not follow the pod's
    // proxy environment variables.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(cfg.timeout)
        .build()
        .map_err(|e| AuditSetupError::Sink {
            sink: "http".into(),
            message: e.without_url().to_string(),
        })?;
    let sender = HttpSender {
        cfg: cfg.clone(),
        client,
        reader,
        stop,
        metrics,
    };
    super::spawn_sender("http", sender.run())
}

struct HttpSender {
    cfg: HttpSinkConfig,
    client: reqwest::Client,
    reader: SpoolReader,
    stop: Stop,
    metrics: Metrics,
}

impl HttpSender {
    async fn run(mut self) {
        let mut backoff = Backoff::new(self.cfg.retry.initial, self.cfg.retry.max);
        let mut linger_from: Option<Instant> = None;
        let mut failing = false;
        loop {
            if self.stop.should_exit(self.reader.unsent()) {
                break;
            }
            let chunk =
                match self
                    .reader
                    .read(self.reader.acked(), self.cfg.batch_size, MAX_BODY_BYTES)
                {
                    Ok(Some(c)) => c,
                    Ok(None) => {
                        linger_from = None;
                        self.stop
                            .idle(&self.reader, std::time::Duration::from_secs(1))
                            .await;
                        continue;
                    }
                    Err(e) => {
                        self.metrics.audit_error("http");
                        tracing::error!(error = %e, "cannot read the http sink's spool");
                        self.stop.pause(backoff.next_wait()).await;
                        continue;
                    }
                };
            if chunk.ends.len() < self.cfg.batch_size && self.stop.deadline().is_none() {
                let since = *linger_from.get_or_insert_with(Instant::now);
                let left = self.cfg.linger.saturating_sub(since.elapsed());
                if !left.is_zero() {
                    self.stop.idle(&self.reader, left).await;
                    continue;
                }
            }
            linger_from = None;
            let n = chunk.ends.len() as u64;
            match self.post(chunk.bytes).await {
                Ok(()) => {
                    if let Err(e) = self.reader.ack(chunk.end) {
                        tracing::warn!(error = %e, "cannot record the http sink's delivery; it may be repeated");
                    }
                    self.metrics.audit_written("http", n);
                    if failing {
                        tracing::info!("audit collector reachable again");
                        failing = false;
                    }
                    backoff.reset();
                }
                Err(e) => {
                    self.metrics.audit_error("http");
                    if !failing {
                        tracing::warn!(error = %e, "audit collector delivery failed; retrying with backoff");
                        failing = true;
                    } else {
                        tracing::debug!(error = %e, "audit collector delivery failed again");
                    }
                    self.stop.pause(backoff.next_wait()).await;
                }
            }
        }
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), PostError> {
        let mut req = self
            .client
            .post(self.cfg.url.clone())
            .header(CONTENT_TYPE, "application/x-ndjson");
        for (name, value) in &self.cfg.headers.0 {
            req = req.header(name, value);
        }
        let body = if self.cfg.gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            enc.write_all(&body).map_err(PostError::Gzip)?;
            enc.finish().map_err(PostError::Gzip)?
        } else {
            body
        };
        let send = req.body(body).send();
        // Never past the stop deadline.
        let resp = match self.stop.deadline() {
            Some(d) => match tokio::time::timeout_at(d.into(), send).await {
                Ok(r) => r,
                Err(_) => return Err(PostError::Deadline),
            },
            None => send.await,
        }
        .map_err(|e| PostError::Request(e.without_url()))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(PostError::Status(status.as_u16()))
        }
    }
}
