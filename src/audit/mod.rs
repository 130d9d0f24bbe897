//! The audit trail: one [`DecisionRecord`] per request, chained by SHA-256 and delivered in
//! `seq` order to every configured sink, never dropped.
//!
//! ```text
//! request ─admit─▶ Slot ─record─▶ queue ─▶ writer thread: seal (seq, prev_hash, hash) once
//!                                              │  one canonical JSON line per record
//!                      ┌───────────┬───────────┼─────────────────┐
//!                    file        stdout    http spool        syslog spool   (lanes, in order)
//!              (fsync, rotate)             └▶ sender thread   └▶ sender thread
//! ```
//!
//! - [`queue`]: a request reserves its record's place on arrival; `queue_capacity` bounds
//!   requests in flight plus records not yet durable. No place, or a sink that cannot take
//!   records (spool full, disk failing) ⇒ the request is refused with 503 and `/readyz` is 503.
//!   Handing a record over ([`Auditor::record`]) is a channel send: it never waits on a sink.
//! - [`writer`]: seals and fans out; a sink that does not take a batch keeps it, in order,
//!   and is offered it again every tick.
//! - [`sinks`]: `file` (fsync policy, size rotation), `stdout`, `http` and `syslog` (each
//!   with a [`spool`] on disk and a sender thread; delivery at-least-once, duplicates carry
//!   the same `seq`).
//! - [`verify`]: `wardgate audit verify`.
//!
//! Fields of [`DecisionRecord`] are declared in sorted order, so serde's output *is* the
//! canonical (RFC 8785) form; [`canonical`] re-derives it from any JSON value for `verify`.

pub mod config;
pub mod queue;
pub mod sinks;
pub mod spool;
pub mod verify;
mod writer;

use std::borrow::Cow;
use std::io;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{AuditConfig, SinkConfig};
use crate::metrics::Metrics;
use queue::{Gate, Slot, Unavailable};

/// The first record's `prev_hash`.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One decision, as the SPEC's audit record. Field order is alphabetical on purpose: it makes
/// serde's compact output the RFC 8785 canonical form. The fields whose values come from a
/// fixed vocabulary (`decision`, `method`, `mode`, `reason`) borrow it rather than allocate a
/// copy per request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub action: Option<String>,
    pub break_glass: bool,
    pub break_glass_reason: Option<String>,
    /// The candidate policy set's decision, present only when it differs from `decision`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub candidate_decision: Option<String>,
    pub client_ip: String,
    pub decision: Cow<'static, str>,
    pub decision_id: String,
    pub errors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hash: Option<String>,
    pub latency_us: u64,
    pub method: Cow<'static, str>,
    pub mfa: bool,
    pub mode: Cow<'static, str>,
    pub path: String,
    pub policies: Vec<String>,
    pub policy_version: Option<String>,
    pub prev_hash: String,
    pub principal: Option<String>,
    pub reason: Option<Cow<'static, str>>,
    pub resource: Option<String>,
    pub roles: Vec<String>,
    pub seq: u64,
    pub status: u16,
    /// RFC 3339 UTC; left empty on the request path and formatted from `at` when sealed.
    pub time: String,
    /// When the request arrived (not serialized): formatting `time` is the writer's job.
    #[serde(skip)]
    pub at: Option<std::time::SystemTime>,
}

/// RFC 3339 UTC with microseconds.
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// `t` as RFC 3339 UTC with microseconds.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time::OffsetDateTime::from(t)
        .format(&fmt)
        .unwrap_or_default()
}

/// The chain state: the next `seq` and the last `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub next_seq: u64,
    pub prev_hash: String,
}

impl Default for ChainHead {
    fn default() -> Self {
        Self {
            next_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
        }
    }
}

impl ChainHead {
    /// Seals a record into the chain and returns its JSON line (with `\n`).
    pub fn seal(&mut self, rec: &mut DecisionRecord) -> Vec<u8> {
        let mut line = Vec::with_capacity(1024);
        self.seal_into(rec, &mut line);
        line
    }

    /// Seals a record into the chain and appends its canonical JSON line (with `\n`) to
    /// `out`: `seq` and `prev_hash` are set, the record is serialized once without `hash`,
    /// hashed, and `hash` is spliced in at its sorted place (between `errors` and
    /// `latency_us`).
    pub fn seal_into(&mut self, rec: &mut DecisionRecord, out: &mut Vec<u8>) {
        if rec.time.is_empty() {
            rec.time = rfc3339(rec.at.unwrap_or_else(std::time::SystemTime::now));
        }
        rec.seq = self.next_seq;
        rec.prev_hash = std::mem::take(&mut self.prev_hash);
        rec.hash = None;
        let start = out.len();
        if serde_json::to_writer(&mut *out, rec).is_err() {
            // Plain data with string keys: serde_json cannot fail on it. Keep the chain
            // well-formed anyway: an empty object still gets its place and hash.
            out.truncate(start);
            out.extend_from_slice(b"{}");
        }
        let body = out.get(start..).unwrap_or_default();
        let hash = hex::encode(chain_hash(&rec.prev_hash, body));
        let at = find(body, b",\"latency_us\":").map_or(out.len() - 1, |p| start + p);
        let field = format!(",\"hash\":\"{hash}\"");
        out.splice(at..at, field.into_bytes());
        out.push(b'\n');
        self.prev_hash.clone_from(&hash);
        rec.hash = Some(hash);
        self.next_seq += 1;
    }
}

/// First position of `needle` in `hay`. A JSON string escapes every `"`, so `,"latency_us":`
/// only ever matches the key itself.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// SHA-256 of `prev_hash` (hex) followed by the canonical record without `hash`.
pub fn chain_hash(prev_hash: &str, canonical_without_hash: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical_without_hash);
    h.finalize().into()
}

/// RFC 8785 canonical JSON of a value: keys sorted, no whitespace. (Integers only: wardgate's
/// records hold no floating-point numbers; a float is written as serde_json writes it.)
pub fn canonical(v: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(k) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Where a restarted chain continues: the `seq` and `hash` of a trail's last line.
pub fn head_of_line(line: &[u8]) -> io::Result<ChainHead> {
    #[derive(Deserialize)]
    struct Tail {
        seq: u64,
        hash: String,
    }
    let tail: Tail = serde_json::from_slice(line).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("last record is not readable, the chain cannot continue: {e}"),
        )
    })?;
    Ok(ChainHead {
        next_seq: tail.seq + 1,
        prev_hash: tail.hash,
    })
}

/// Why the audit trail could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditSetupError {
    #[error("audit sink `{path}`: {source}")]
    Open { path: String, source: io::Error },
    #[error("audit sink `{sink}`: {message}")]
    Sink { sink: String, message: String },
    #[error("cannot start the audit {what} thread: {source}")]
    Thread {
        what: &'static str,
        source: io::Error,
    },
}

/// A sender thread of a spooled sink.
struct SenderHandle {
    stop: sinks::Stop,
    thread: JoinHandle<()>,
}

/// The hand-off between the request path and the writer thread, and the owner of the sinks'
/// threads.
pub struct Auditor {
    tx: mpsc::Sender<writer::Msg>,
    gate: Arc<Gate>,
    writer: Mutex<Option<JoinHandle<()>>>,
    senders: Mutex<Vec<SenderHandle>>,
    drain_timeout: Duration,
    metrics: Metrics,
}

impl Auditor {
    /// Opens every sink and spool, starts the writer and sender threads. The chain continues
    /// from the first file sink's last record, else from the first spool's, else from genesis.
    pub fn start(cfg: &AuditConfig, metrics: Metrics) -> Result<Self, AuditSetupError> {
        let gate = Arc::new(Gate::new(cfg.queue_capacity, metrics.clone()));
        let mut lanes = Vec::new();
        let mut senders = Vec::new();
        let mut file_head: Option<Option<ChainHead>> = None;
        let mut spool_head: Option<Option<ChainHead>> = None;
        let open_err = |path: &Path| {
            let path = path.display().to_string();
            move |source| AuditSetupError::Open { path, source }
        };
        for s in &cfg.sinks {
            match s {
                SinkConfig::File(c) => {
                    let (sink, head) = sinks::file::FileSink::open(c, metrics.clone())
                        .map_err(open_err(&c.path))?;
                    file_head.get_or_insert(head);
                    lanes.push(writer::Lane::new(Box::new(sink)));
                }
                SinkConfig::Stdout => lanes.push(writer::Lane::new(Box::new(
                    sinks::stdout::StdoutSink::new(metrics.clone()),
                ))),
                SinkConfig::Http(c) => {
                    let (w, r, head) = spool::open(&c.spool, "http", metrics.clone())
                        .map_err(open_err(&c.spool.dir))?;
                    spool_head.get_or_insert(head);
                    let stop = sinks::Stop::new();
                    let thread = sinks::http::spawn(c, r, stop.clone(), metrics.clone())?;
                    senders.push(SenderHandle { stop, thread });
                    lanes.push(writer::Lane::new(Box::new(w)));
                }
                SinkConfig::Syslog(c) => {
                    let (w, r, head) = spool::open(&c.spool, "syslog", metrics.clone())
                        .map_err(open_err(&c.spool.dir))?;
                    spool_head.get_or_insert(head);
                    let stop = sinks::Stop::new();
                    let thread = sinks::syslog::spawn(c, r, stop.clone(), metrics.clone())?;
                    senders.push(SenderHandle { stop, thread });
                    lanes.push(writer::Lane::new(Box::new(w)));
                }
            }
        }
        let head = match (file_head, spool_head) {
            (Some(h), _) => h,
            (None, Some(h)) => h,
            (None, None) => None,
        }
        .unwrap_or_default();
        tracing::debug!(next_seq = head.next_seq, "audit chain head");
        let (tx, rx) = mpsc::channel();
        let (g, m) = (gate.clone(), metrics.clone());
        let writer = std::thread::Builder::new()
            .name("wardgate-audit".into())
            .spawn(move || writer::run(rx, lanes, head, g, m))
            .map_err(|source| AuditSetupError::Thread {
                what: "writer",
                source,
            })?;
        Ok(Self {
            tx,
            gate,
            writer: Mutex::new(Some(writer)),
            senders: Mutex::new(senders),
            drain_timeout: cfg.drain_timeout,
            metrics,
        })
    }

    /// Reserves the place of a new request's record; `Err` means the request must be refused
    /// (503): its record could not be made durable.
    pub fn admit(&self) -> Result<Slot<'_>, Unavailable> {
        self.gate.admit()
    }

    /// A place for the record of a refused request (waits only while memory is at its bound).
    pub async fn admit_refusal(&self) -> Slot<'_> {
        self.gate.admit_refusal().await
    }

    /// Queues a record in its reserved place (`None`: it had none and takes one regardless).
    /// Never blocks, never drops.
    pub fn record(&self, slot: Option<Slot<'_>>, rec: DecisionRecord) {
        match slot {
            Some(s) => s.into_record(),
            None => self.gate.force(),
        }
        self.metrics.audit_queue().inc();
        if self.tx.send(writer::Msg::Record(Box::new(rec))).is_err() {
            self.metrics.audit_queue().dec();
            self.gate.release(1);
            self.metrics.audit_lost(1);
            tracing::error!("audit writer is gone; a record was lost");
        }
    }

    /// Waits until every record queued before this call is durable in every sink (written,
    /// or in its spool) and forced to disk.
    pub async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send(writer::Msg::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Whether new requests are admitted: the writer runs, every sink keeps up (nothing
    /// waiting for spool room or a failed disk) and the queue has room.
    pub fn is_healthy(&self) -> bool {
        let writer_runs = self
            .writer
            .lock()
            .map(|w| w.as_ref().is_some_and(|h| !h.is_finished()))
            .unwrap_or(false);
        writer_runs && self.gate.is_open()
    }

    /// Stops the trail: waits (up to `drain_timeout`) until every record is durable and the
    /// spooled sinks delivered what they could, then stops every thread. What a spool still
    /// holds is delivered after the next start.
    pub async fn shutdown(&self) {
        let deadline = Instant::now() + self.drain_timeout;
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send(writer::Msg::Flush(done)).is_ok()
            && tokio::time::timeout(self.drain_timeout, wait)
                .await
                .is_err()
        {
            tracing::error!("audit records are still waiting for a sink at shutdown");
        }
        let senders: Vec<SenderHandle> = self
            .senders
            .lock()
            .map(|mut s| s.drain(..).collect())
            .unwrap_or_default();
        for s in &senders {
            s.stop.request(deadline);
        }
        let _ = self.tx.send(writer::Msg::Stop);
        let mut threads: Vec<JoinHandle<()>> = senders.into_iter().map(|s| s.thread).collect();
        if let Some(w) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            threads.push(w);
        }
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        let grace = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(2);
        if tokio::time::timeout(grace, joined).await.is_err() {
            tracing::warn!("audit threads did not stop in time");
        }
    }
}

impl Drop for Auditor {
    fn drop(&mut self) {
        // Without `shutdown`: stop the senders now (the spool keeps what they had not sent);
        // the writer ends when the channel closes.
        if let Ok(senders) = self.senders.lock() {
            for s in senders.iter() {
                s.stop.request(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> DecisionRecord {
        DecisionRecord {
            decision: "allow".into(),
            decision_id: "id-1".into(),
            method: "GET".into(),
            path: "/patients/p-1".into(),
            client_ip: "127.0.0.1".into(),
            mode: "enforce".into(),
            status: 200,
            principal: Some("Clinic::User::\"dr-ada\"".into()),
            reason: Some("ctl \u{1} \"q\" é".into()),
            ..DecisionRecord::default()
        }
    }

    #[test]
    fn serde_output_is_canonical() {
        let mut r = rec();
        r.hash = Some("h".into());
        let direct = serde_json::to_string(&r).expect("json");
        let value: serde_json::Value = serde_json::from_str(&direct).expect("parse");
        assert_eq!(canonical(&value), direct);
    }

    #[test]
    fn a_sealed_line_is_the_serde_form_of_the_sealed_record() {
        let mut head = ChainHead::default();
        for errors in [
            vec![],
            vec!["e1".to_owned(), "x,\"latency_us\":1".to_owned()],
        ] {
            let mut r = rec();
            r.errors = errors;
            r.candidate_decision = Some("deny".into());
            let line = head.seal(&mut r);
            let mut want = serde_json::to_vec(&r).expect("json");
            want.push(b'\n');
            assert_eq!(
                String::from_utf8_lossy(&line),
                String::from_utf8_lossy(&want)
            );
        }
    }

    #[test]
    fn chain_links_records() {
        let mut head = ChainHead::default();
        let mut a = rec();
        let mut b = rec();
        let la = head.seal(&mut a);
        let lb = head.seal(&mut b);
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(a.prev_hash, GENESIS_HASH);
        assert_eq!(b.prev_hash, a.hash.clone().expect("hash"));
        assert!(la.ends_with(b"\n") && lb.ends_with(b"\n"));
        // The hash covers prev_hash followed by the record without `hash`.
        let mut v: serde_json::Value = serde_json::from_slice(&lb).expect("json");
        let h = v
            .as_object_mut()
            .and_then(|m| m.remove("hash"))
            .expect("hash field");
        let want = hex::encode(chain_hash(&b.prev_hash, canonical(&v).as_bytes()));
        assert_eq!(h.as_str(), Some(want.as_str()));
    }
}
