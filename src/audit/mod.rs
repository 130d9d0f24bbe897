//! The audit trail: one [`DecisionRecord`] per request, chained by SHA-256 and written in `seq`
//! order to every configured sink.
//!
//! The request path hands a record to [`Auditor::record`], which never blocks and never drops:
//! the record joins an in-process queue drained by one writer thread. The writer assigns `seq`,
//! `prev_hash` and `hash`, renders each record once as its canonical (RFC 8785) JSON line and
//! writes the batch to each sink. Fields of [`DecisionRecord`] are declared in sorted order, so
//! serde's output *is* the canonical form; [`canonical`] re-derives it from any JSON value for
//! `wardgate audit verify`.

pub mod sinks;
pub mod verify;

use std::io;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{AuditConfig, SinkConfig};
use crate::metrics::Metrics;
use sinks::Sink;

/// The first record's `prev_hash`.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One decision, as the SPEC's audit record. Field order is alphabetical on purpose: it makes
/// serde's compact output the RFC 8785 canonical form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub action: Option<String>,
    pub break_glass: bool,
    pub break_glass_reason: Option<String>,
    /// The candidate policy set's decision, present only when it differs from `decision`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub candidate_decision: Option<String>,
    pub client_ip: String,
    pub decision: String,
    pub decision_id: String,
    pub errors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hash: Option<String>,
    pub latency_us: u64,
    pub method: String,
    pub mfa: bool,
    pub mode: String,
    pub path: String,
    pub policies: Vec<String>,
    pub policy_version: Option<String>,
    pub prev_hash: String,
    pub principal: Option<String>,
    pub reason: Option<String>,
    pub resource: Option<String>,
    pub roles: Vec<String>,
    pub seq: u64,
    pub status: u16,
    pub time: String,
}

/// RFC 3339 UTC with microseconds.
pub fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    t.format(&fmt).unwrap_or_default()
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
        rec.seq = self.next_seq;
        rec.prev_hash = std::mem::take(&mut self.prev_hash);
        rec.hash = None;
        let body = serde_json::to_vec(rec).unwrap_or_default();
        let hash = hex::encode(chain_hash(&rec.prev_hash, &body));
        rec.hash = Some(hash.clone());
        self.prev_hash = hash;
        self.next_seq += 1;
        let mut line = serde_json::to_vec(rec).unwrap_or_default();
        line.push(b'\n');
        line
    }
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

enum Msg {
    Record(Box<DecisionRecord>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The hand-off between the request path and the writer thread.
pub struct Auditor {
    tx: mpsc::Sender<Msg>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
    metrics: Metrics,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditSetupError {
    #[error("audit sink `{path}`: {source}")]
    Open { path: String, source: io::Error },
}

impl Auditor {
    /// Opens every sink and starts the writer thread; the chain continues from the first
    /// file sink's last record, if it has one.
    pub fn start(cfg: &AuditConfig, metrics: Metrics) -> Result<Self, AuditSetupError> {
        let mut head = ChainHead::default();
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        let mut head_found = false;
        for s in &cfg.sinks {
            match s {
                SinkConfig::File { path } => {
                    let (sink, last) = sinks::file::FileSink::open(path).map_err(|source| {
                        AuditSetupError::Open {
                            path: path.display().to_string(),
                            source,
                        }
                    })?;
                    if !head_found {
                        if let Some(last) = last {
                            head = last;
                        }
                        head_found = true;
                    }
                    sinks.push(Box::new(sink));
                }
                SinkConfig::Stdout => sinks.push(Box::new(sinks::stdout::StdoutSink::new())),
            }
        }
        let (tx, rx) = mpsc::channel();
        let m = metrics.clone();
        let writer = std::thread::Builder::new()
            .name("wardgate-audit".into())
            .spawn(move || write_loop(rx, sinks, head, m))
            .map_err(|source| AuditSetupError::Open {
                path: "writer thread".into(),
                source,
            })?;
        Ok(Self {
            tx,
            writer: std::sync::Mutex::new(Some(writer)),
            metrics,
        })
    }

    /// Queues a record; never blocks the request path.
    pub fn record(&self, rec: DecisionRecord) {
        self.metrics.audit_queue().inc();
        if self.tx.send(Msg::Record(Box::new(rec))).is_err() {
            self.metrics.audit_queue().dec();
            self.metrics.audit_lost(1);
            tracing::error!("audit writer is gone; a record was lost");
        }
    }

    /// Waits until every record queued before this call is written and flushed.
    pub async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Whether the writer is still running.
    pub fn is_healthy(&self) -> bool {
        self.writer
            .lock()
            .map(|w| w.as_ref().is_some_and(|h| !h.is_finished()))
            .unwrap_or(false)
    }
}

fn write_loop(
    rx: mpsc::Receiver<Msg>,
    mut sinks: Vec<Box<dyn Sink>>,
    mut head: ChainHead,
    metrics: Metrics,
) {
    let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut waiting: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut n = 0u64;
        let mut next = Some(first);
        // Drain what is already queued into one batch.
        while let Some(msg) = next {
            match msg {
                Msg::Record(mut rec) => {
                    metrics.audit_queue().dec();
                    batch.extend_from_slice(&head.seal(&mut rec));
                    n += 1;
                }
                Msg::Flush(done) => waiting.push(done),
            }
            if batch.len() >= 1024 * 1024 {
                break;
            }
            next = rx.try_recv().ok();
        }
        if n > 0 {
            for sink in &mut sinks {
                match sink.write_batch(&batch) {
                    Ok(()) => metrics.audit_written(sink.name(), n),
                    Err(e) => {
                        metrics.audit_error(sink.name());
                        metrics.audit_lost(n);
                        tracing::error!(sink = sink.name(), error = %e, records = n, "audit sink write failed");
                    }
                }
            }
            batch.clear();
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Reads the last complete line of a JSONL audit file as the chain head to continue from.
pub fn chain_head_of(path: &Path) -> io::Result<Option<ChainHead>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(last) = text
        .split(|b| *b == b'\n')
        .rev()
        .find(|l| !l.iter().all(u8::is_ascii_whitespace))
    else {
        return Ok(None);
    };
    #[derive(Deserialize)]
    struct Tail {
        seq: u64,
        hash: String,
    }
    let tail: Tail = serde_json::from_slice(last).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("last record is not readable, the chain cannot continue: {e}"),
        )
    })?;
    Ok(Some(ChainHead {
        next_seq: tail.seq + 1,
        prev_hash: tail.hash,
    }))
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
