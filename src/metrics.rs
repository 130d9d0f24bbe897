//! The Prometheus registry and typed handles. Every label value comes from a fixed vocabulary
//! in the code (decision, reason code, sink name), never from request input.

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Cheap to clone; every clone updates the same series.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: IntCounterVec,
    decision_seconds: Histogram,
    jwt_failures: IntCounterVec,
    jwks_refreshes: IntCounterVec,
    entity_cache: IntCounterVec,
    policy_reloads: IntCounterVec,
    policy_info: IntGaugeVec,
    audit_written: IntCounterVec,
    audit_queue_depth: IntGauge,
    audit_lost: IntCounter,
    audit_errors: IntCounterVec,
    audit_spool_bytes: IntGaugeVec,
    audit_blocked: IntGauge,
    in_flight: IntGauge,
    connections: IntGauge,
    candidate_disagreements: IntCounterVec,
    /// The series every request touches, looked up once here rather than per request (a
    /// label lookup hashes the values and takes a lock).
    hot: Hot,
}

struct Hot {
    allowed: IntCounter,
    token_cache: [IntCounter; 2],
    decision_cache: [IntCounter; 2],
    upstream: [Histogram; UPSTREAM_CLASSES.len()],
}

/// The `status` label of `upstream_seconds`.
const UPSTREAM_CLASSES: [&str; 7] = ["1xx", "2xx", "3xx", "4xx", "502", "504", "5xx"];

fn upstream_class(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        502 => 4,
        504 => 5,
        _ => 6,
    }
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|_| unreachable_metric(name));
    let _ = r.register(Box::new(c.clone()));
    c
}

#[expect(
    clippy::panic,
    reason = "metric definitions are constants; a bad one is a programming error caught by every test"
)]
fn unreachable_metric(name: &str) -> ! {
    panic!("metric `{name}` is malformed")
}

const LATENCY_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new_custom(Some("wardgate".into()), None)
            .unwrap_or_else(|_| unreachable_metric("registry"));
        let decision_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "decision_duration_seconds",
                "Time from request to decision (token, mapping, Cedar)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .unwrap_or_else(|_| unreachable_metric("decision_duration_seconds"));
        let _ = r.register(Box::new(decision_seconds.clone()));
        let upstream_seconds = HistogramVec::new(
            HistogramOpts::new(
                "upstream_duration_seconds",
                "Time until the upstream's response headers, by status class",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["class"],
        )
        .unwrap_or_else(|_| unreachable_metric("upstream_duration_seconds"));
        let _ = r.register(Box::new(upstream_seconds.clone()));
        let policy_info = IntGaugeVec::new(
            Opts::new("policy_set_info", "The policy set in force (value 1)"),
            &["version"],
        )
        .unwrap_or_else(|_| unreachable_metric("policy_set_info"));
        let _ = r.register(Box::new(policy_info.clone()));
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric(name));
            let _ = r.register(Box::new(g.clone()));
            g
        };
        let audit_queue_depth = gauge(
            "audit_queue_depth",
            "Audit records queued or waiting for a sink to take them",
        );
        let audit_blocked = gauge(
            "audit_backpressure",
            "1 while a sink cannot make records durable (requests get 503), else 0",
        );
        let audit_spool_bytes = IntGaugeVec::new(
            Opts::new(
                "audit_spool_bytes",
                "Undelivered bytes in the disk spools, by sink",
            ),
            &["sink"],
        )
        .unwrap_or_else(|_| unreachable_metric("audit_spool_bytes"));
        let _ = r.register(Box::new(audit_spool_bytes.clone()));
        let in_flight = gauge("requests_in_flight", "Requests being handled");
        let connections = gauge(
            "connections_open",
            "Client connections open on the proxy listener",
        );
        let audit_lost = IntCounter::new(
            "audit_records_lost_total",
            "Audit records that could not be written (must stay 0)",
        )
        .unwrap_or_else(|_| unreachable_metric("audit_records_lost_total"));
        let _ = r.register(Box::new(audit_lost.clone()));
        let requests = counter_vec(
            &r,
            "requests_total",
            "Requests by decision and reason",
            &["decision", "reason"],
        );
        let token_cache = counter_vec(
            &r,
            "token_cache_total",
            "Verified-token cache lookups",
            &["result"],
        );
        let decision_cache = counter_vec(
            &r,
            "decision_cache_total",
            "Decision cache lookups",
            &["result"],
        );
        let hits = |v: &IntCounterVec| {
            [
                v.with_label_values(&["miss"]),
                v.with_label_values(&["hit"]),
            ]
        };
        let hot = Hot {
            allowed: requests.with_label_values(&["allow", "allow"]),
            token_cache: hits(&token_cache),
            decision_cache: hits(&decision_cache),
            upstream: UPSTREAM_CLASSES.map(|c| upstream_seconds.with_label_values(&[c])),
        };
        let inner = Inner {
            hot,
            requests,
            jwt_failures: counter_vec(
                &r,
                "jwt_failures_total",
                "Refused tokens by reason",
                &["reason"],
            ),
            jwks_refreshes: counter_vec(
                &r,
                "jwks_refreshes_total",
                "JWKS loads by result",
                &["result"],
            ),
            entity_cache: counter_vec(
                &r,
                "entity_cache_total",
                "Resource entity cache lookups",
                &["result"],
            ),
            policy_reloads: counter_vec(
                &r,
                "policy_reloads_total",
                "Policy loads by result",
                &["result"],
            ),
            audit_written: counter_vec(
                &r,
                "audit_records_written_total",
                "Audit records written, by sink",
                &["sink"],
            ),
            audit_errors: counter_vec(
                &r,
                "audit_sink_errors_total",
                "Audit sink write errors, by sink",
                &["sink"],
            ),
            candidate_disagreements: counter_vec(
                &r,
                "candidate_disagreements_total",
                "Requests the candidate policy set decided differently, by action and candidate decision",
                &["action", "candidate"],
            ),
            registry: r,
            decision_seconds,
            policy_info,
            audit_queue_depth,
            audit_lost,
            audit_spool_bytes,
            audit_blocked,
            in_flight,
            connections,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    pub fn request(&self, decision: &str, reason: &str) {
        if decision == "allow" && reason == "allow" {
            self.inner.hot.allowed.inc();
        } else {
            self.inner
                .requests
                .with_label_values(&[decision, reason])
                .inc();
        }
    }
    pub fn decision_time(&self, seconds: f64) {
        self.inner.decision_seconds.observe(seconds);
    }
    pub fn upstream_time(&self, status: u16, seconds: f64) {
        if let Some(h) = self.inner.hot.upstream.get(upstream_class(status)) {
            h.observe(seconds);
        }
    }
    /// `action` is a route's configured action name, never request input.
    pub fn candidate_disagreement(&self, action: &str, candidate_allowed: bool) {
        let c = if candidate_allowed { "allow" } else { "deny" };
        self.inner
            .candidate_disagreements
            .with_label_values(&[action, c])
            .inc();
    }
    pub fn jwt_failure(&self, reason: &str) {
        self.inner.jwt_failures.with_label_values(&[reason]).inc();
    }
    pub fn jwks_refresh(&self, result: &str) {
        self.inner.jwks_refreshes.with_label_values(&[result]).inc();
    }
    pub fn token_cache(&self, hit: bool) {
        if let Some(c) = self.inner.hot.token_cache.get(usize::from(hit)) {
            c.inc();
        }
    }
    pub fn entity_cache(&self, hit: bool) {
        let label = if hit { "hit" } else { "miss" };
        self.inner.entity_cache.with_label_values(&[label]).inc();
    }
    pub fn decision_cache(&self, hit: bool) {
        if let Some(c) = self.inner.hot.decision_cache.get(usize::from(hit)) {
            c.inc();
        }
    }
    pub fn policy_reload(&self, result: &str) {
        self.inner.policy_reloads.with_label_values(&[result]).inc();
    }
    pub fn policy_version(&self, version: &str) {
        self.inner.policy_info.reset();
        self.inner.policy_info.with_label_values(&[version]).set(1);
    }
    pub fn audit_written(&self, sink: &str, n: u64) {
        self.inner
            .audit_written
            .with_label_values(&[sink])
            .inc_by(n);
    }
    pub fn audit_error(&self, sink: &str) {
        self.inner.audit_errors.with_label_values(&[sink]).inc();
    }
    pub fn audit_lost(&self, n: u64) {
        self.inner.audit_lost.inc_by(n);
    }
    pub fn audit_queue(&self) -> &IntGauge {
        &self.inner.audit_queue_depth
    }
    pub fn audit_spool_bytes(&self, sink: &str) -> IntGauge {
        self.inner.audit_spool_bytes.with_label_values(&[sink])
    }
    pub fn audit_blocked(&self, blocked: bool) {
        self.inner.audit_blocked.set(i64::from(blocked));
    }
    pub fn connections(&self) -> &IntGauge {
        &self.inner.connections
    }
    pub fn in_flight(&self) -> &IntGauge {
        &self.inner.in_flight
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.inner.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_prefixed_and_counted() {
        let m = Metrics::new();
        m.request("deny", "no_route");
        m.audit_lost(0);
        let text = String::from_utf8(m.render()).expect("utf8");
        assert!(
            text.contains(r#"wardgate_requests_total{decision="deny",reason="no_route"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("wardgate_audit_records_lost_total 0"),
            "{text}"
        );
    }
}
