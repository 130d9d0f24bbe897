//! The attack battery (issue 6): the families of tricks that have bypassed authorization
//! proxies before, one module each, every case against a real wardgate, a real JWKS server and
//! a real backend on `127.0.0.1`.
//!
//! A refused case asserts its status, that the backend received nothing, and exactly one audit
//! record (matched by the `decision_id` of the problem+json body; for a message that hyper's
//! HTTP/1.1 parser refuses before it becomes a request, by count of the records with hyper's
//! status and reason). Big batteries run their requests concurrently.

mod fuzz_corpus;
mod headers;
mod jwks_hygiene;
mod paths;
mod property;
mod slow;
mod smuggling;
mod tokens;
mod wycheproof;

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::support::fixture::Fixture;
use crate::support::hostile;
use crate::support::raw::{self, RawResponse};
use crate::support::*;

/// Requests in flight at once in a battery.
const CONCURRENCY: usize = 8;

/// What a refused case must look like.
#[derive(Debug, Clone, Copy)]
pub struct Want {
    pub status: u16,
    /// The audit `reason`: exact, or a prefix when it ends in `*`.
    pub reason: &'static str,
    /// `WWW-Authenticate`, checked when given.
    pub www: Option<&'static str>,
    /// Refused by hyper's parser (no problem+json, no decision id in the answer).
    pub by_hyper: bool,
}

impl Want {
    pub const fn refused(status: u16, reason: &'static str) -> Want {
        Want {
            status,
            reason,
            www: None,
            by_hyper: false,
        }
    }

    /// 401 for a token that was there but is not acceptable.
    pub const fn invalid_token(reason: &'static str) -> Want {
        Want {
            status: 401,
            reason,
            www: Some(WWW_INVALID),
            by_hyper: false,
        }
    }

    /// 401 for a request that carries no bearer credential wardgate accepts.
    pub const fn no_token(reason: &'static str) -> Want {
        Want {
            status: 401,
            reason,
            www: Some(WWW_MISSING),
            by_hyper: false,
        }
    }

    pub const fn bad_path() -> Want {
        Want::refused(400, "bad_path")
    }

    /// A message hyper's parser answers itself (400, or 431 for a head over its hard cap).
    pub const fn hyper(status: u16) -> Want {
        Want {
            status,
            reason: if status == 431 {
                "headers_too_large"
            } else {
                "bad_request: unparseable"
            },
            www: None,
            by_hyper: true,
        }
    }

    fn reason_ok(&self, got: &Value) -> bool {
        let Some(r) = got.as_str() else {
            return false;
        };
        match self.reason.strip_suffix('*') {
            Some(prefix) => r.starts_with(prefix),
            None => r == self.reason,
        }
    }
}

/// One hostile request: raw bytes on a fresh connection.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub bytes: Vec<u8>,
    pub want: Want,
}

impl Case {
    pub fn new(name: impl Into<String>, bytes: Vec<u8>, want: Want) -> Case {
        Case {
            name: name.into(),
            bytes,
            want,
        }
    }

    /// `GET target` with these headers (plus `Host` and `Connection: close`).
    pub fn get(
        name: impl Into<String>,
        target: &str,
        headers: &[(&str, &str)],
        want: Want,
    ) -> Case {
        Case::new(name, raw::request_head("GET", target, headers), want)
    }
}

/// Sends each case on its own connection, [`CONCURRENCY`] at a time; `None` when the
/// connection closed without a response.
pub async fn send_all(addr: SocketAddr, cases: &[Case]) -> Vec<Option<RawResponse>> {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut set = JoinSet::new();
    for (i, c) in cases.iter().enumerate() {
        let bytes = c.bytes.clone();
        let permits = permits.clone();
        set.spawn(async move {
            let _p = permits.acquire().await.expect("semaphore");
            (i, hostile::try_send(addr, &bytes).await)
        });
    }
    let mut out = vec![None; cases.len()];
    while let Some(r) = set.join_next().await {
        let (i, resp) = r.expect("case task");
        out[i] = resp;
    }
    out
}

/// Runs a battery of refusals against a running fixture, then shuts it down and checks the
/// backend and the audit trail. Panics with every failure at once.
pub async fn assert_refused(fx: Fixture, cases: &[Case]) -> Vec<Value> {
    let responses = send_all(fx.proxy, cases).await;
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    let mut failures = check_refusals(cases, &responses, &records);
    if !forwarded.is_empty() {
        failures.push(format!(
            "refused requests reached the backend: {:?}",
            forwarded.iter().map(|r| &r.target).collect::<Vec<_>>()
        ));
    }
    if records.len() != cases.len() {
        failures.push(format!(
            "{} audit records for {} requests",
            records.len(),
            cases.len()
        ));
    }
    assert!(
        failures.is_empty(),
        "{} failures in a battery of {}:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    records
}

/// Status, problem+json and the one audit record of each case (no backend or count check).
pub fn check_refusals(
    cases: &[Case],
    responses: &[Option<RawResponse>],
    records: &[Value],
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut hyper_wanted: Vec<(u16, &'static str)> = Vec::new();
    for (case, resp) in cases.iter().zip(responses) {
        let name = &case.name;
        let want = &case.want;
        let Some(resp) = resp else {
            failures.push(format!("{name}: connection closed without a response"));
            continue;
        };
        if resp.status != want.status {
            failures.push(format!(
                "{name}: status {}, want {}: {}",
                resp.status,
                want.status,
                String::from_utf8_lossy(&resp.body)
            ));
            continue;
        }
        if want.by_hyper {
            hyper_wanted.push((want.status, want.reason));
            continue;
        }
        if let Some(www) = want.www {
            if resp.header("www-authenticate") != Some(www) {
                failures.push(format!(
                    "{name}: WWW-Authenticate {:?}, want {www:?}",
                    resp.header("www-authenticate")
                ));
            }
        }
        let id = match check_problem(resp.header("content-type"), &resp.body, want.status) {
            Ok(id) => id,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let found: Vec<&Value> = records
            .iter()
            .filter(|r| r["decision_id"] == id.as_str())
            .collect();
        let [r] = found.as_slice() else {
            failures.push(format!("{name}: {} audit records", found.len()));
            continue;
        };
        if r["decision"] != "deny" || r["status"] != want.status || !want.reason_ok(&r["reason"]) {
            failures.push(format!(
                "{name}: audit decision {} status {} reason {} (want deny, {}, `{}`)",
                r["decision"], r["status"], r["reason"], want.status, want.reason
            ));
        }
    }
    // Messages hyper refused carry no decision id: count their records instead.
    hyper_wanted.sort_unstable();
    hyper_wanted.dedup();
    for (status, reason) in hyper_wanted {
        // Records with this status and reason: the hyper cases, plus wardgate's own refusals
        // that share them (431 `headers_too_large` comes from both).
        let want = cases
            .iter()
            .zip(responses)
            .filter(|(c, r)| {
                c.want.status == status
                    && (c.want.by_hyper || c.want.reason == reason)
                    && r.as_ref().is_some_and(|r| r.status == status)
            })
            .count();
        let got = records
            .iter()
            .filter(|r| r["status"] == status && r["reason"] == reason && r["decision"] == "deny")
            .count();
        if got != want {
            failures.push(format!(
                "{want} messages refused by hyper with {status}, but {got} audit records with reason `{reason}`"
            ));
        }
    }
    failures
}
