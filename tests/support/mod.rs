//! Real parts for the integration suite: keys and tokens, a JWKS server, a records backend, a
//! raw HTTP/1.1 client, and a fixture that runs wardgate against them. Nothing here stands in
//! for wardgate itself.
#![allow(dead_code)]

pub mod collector;
pub mod fixture;
pub mod hostile;
pub mod keys;
pub mod oidc_provider;
pub mod pki;
pub mod process;
pub mod raw;
pub mod rsyslog;
pub mod servers;

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

pub use fixture::fixture;
pub use keys::*;

/// `WWW-Authenticate` for a request without a bearer token.
pub const WWW_MISSING: &str = r#"Bearer realm="wardgate""#;
/// `WWW-Authenticate` for a bearer token that was refused.
pub const WWW_INVALID: &str = r#"Bearer realm="wardgate", error="invalid_token""#;

/// reqwest is built without a rustls provider; install ring's unless one is there already.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Polls `check` every 20 ms until it is true or `timeout` passes; returns the last answer.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every JSON line of an audit file (none when the file is not there yet).
pub fn read_audit(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        // A line still being written has no newline yet and may not parse: skip it.
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Polls the audit file until it holds at least `n` records (5 s at most).
pub async fn wait_for_records(path: &Path, n: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let records = read_audit(path);
        if records.len() >= n {
            return records;
        }
        if start.elapsed() > Duration::from_secs(5) {
            panic!(
                "expected at least {n} audit records in {}, found {}: {records:#?}",
                path.display(),
                records.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The one record with this `decision_id`.
pub fn record_by_id<'r>(records: &'r [Value], decision_id: &str) -> &'r Value {
    let found: Vec<&Value> = records
        .iter()
        .filter(|r| r["decision_id"] == decision_id)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one audit record with decision_id {decision_id}, found {}: {records:#?}",
        found.len()
    );
    found[0]
}

/// `policies` of a record as strings.
pub fn policies_of(record: &Value) -> Vec<String> {
    record["policies"]
        .as_array()
        .unwrap_or_else(|| panic!("record has no `policies` array: {record}"))
        .iter()
        .map(|p| p.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Checks an RFC 9457 body for `status` and returns its `decision_id`.
pub fn assert_problem(content_type: Option<&str>, body: &[u8], status: u16) -> String {
    check_problem(content_type, body, status).unwrap_or_else(|e| panic!("{e}"))
}

/// [`assert_problem`] without the panic.
pub fn check_problem(
    content_type: Option<&str>,
    body: &[u8],
    status: u16,
) -> Result<String, String> {
    let ct = content_type.unwrap_or_default();
    let text = String::from_utf8_lossy(body);
    if !ct.starts_with("application/problem+json") {
        return Err(format!(
            "content-type `{ct}` is not application/problem+json; body {text:?}"
        ));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("problem body is not JSON ({e}): {text:?}"))?;
    if v["status"] != status {
        return Err(format!("problem `status` is not {status}: {v}"));
    }
    if v["title"].as_str().is_none_or(str::is_empty) {
        return Err(format!("problem without a `title`: {v}"));
    }
    v["decision_id"]
        .as_str()
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| format!("problem without a `decision_id`: {v}"))
}

/// Reads a reqwest response and checks it is problem+json with `status`; returns the decision id.
pub async fn expect_problem(resp: reqwest::Response, status: u16) -> String {
    assert_eq!(resp.status().as_u16(), status, "HTTP status");
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.bytes().await.expect("body");
    assert_problem(ct.as_deref(), &body, status)
}

/// RFC 8785 (JCS) text of a JSON value whose numbers are integers.
pub fn jcs(v: &Value) -> String {
    let mut out = String::new();
    jcs_into(v, &mut out);
    out
}

fn jcs_into(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            // JCS sorts by UTF-16 code units; the record's keys are ASCII, where that is byte order.
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).expect("key"));
                out.push(':');
                jcs_into(&m[*k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                jcs_into(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&serde_json::to_string(other).expect("scalar")),
    }
}

/// SHA-256 hex of `prev_hash` followed by the record's JCS text without `hash` (SPEC).
pub fn expected_hash(record: &Value) -> String {
    let mut without = record.clone();
    without
        .as_object_mut()
        .expect("record object")
        .remove("hash");
    let prev = record["prev_hash"].as_str().unwrap_or_default();
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(jcs(&without).as_bytes());
    hex::encode(h.finalize())
}
