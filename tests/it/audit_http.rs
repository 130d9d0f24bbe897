//! The `http` sink against a real collector on loopback: every record arrives, in order,
//! through a collector outage and a wardgate restart with a full spool on disk; a spool at its
//! limit turns requests into 503s and nothing is forwarded until the collector returns.

use std::time::Duration;

use serde_json::{json, Value};

use crate::audit::{assert_delivered_in_order, distinct_seqs, metric, readyz};
use crate::support::collector::Collector;
use crate::support::fixture::Fixture;
use crate::support::*;

const WAIT: Duration = Duration::from_secs(20);

fn http_sink(collector: &Collector, extra: Value) -> Value {
    let mut sink = json!({
        "type": "http",
        "url": collector.url(),
        "spool_dir": "spool",
        "linger_ms": 20,
        "retry_initial_ms": 20,
        "retry_max_ms": 200,
    });
    for (k, v) in extra.as_object().unwrap() {
        sink[k] = v.clone();
    }
    sink
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_reaches_the_collector_in_order_across_an_outage_and_a_restart() {
    let collector = Collector::start().await;
    let prepared = fixture()
        .set(
            "audit.sinks",
            json!([
                { "type": "file", "path": "audit.jsonl" },
                http_sink(&collector, json!({
                    "batch_size": 4,
                    "gzip": true,
                    "headers": { "Authorization": "Bearer collector-secret" },
                })),
            ]),
        )
        .set("audit.drain_timeout_ms", 300)
        .prepare()
        .await;
    let ada = token("dr-ada", &["doctor"]);
    let fx = prepared.start().await;
    for _ in 0..5 {
        assert_eq!(
            fx.get("/patients/p-1", &ada).send().await.unwrap().status(),
            200
        );
    }
    assert!(
        eventually(WAIT, || async { distinct_seqs(&collector.lines()) == 5 }).await,
        "the collector got {:?}",
        collector.lines()
    );

    // Collector down: requests still go through, their records wait in the spool.
    collector.stop();
    for i in 0..7 {
        let path = if i % 2 == 0 {
            "/patients/p-1"
        } else {
            "/patients/p-2"
        };
        let status = fx.get(path, &ada).send().await.unwrap().status();
        assert!(status == 200 || status == 403, "{status}");
    }
    assert!(
        eventually(WAIT, || async {
            metric(&fx, r#"wardgate_audit_spool_bytes{sink="http"}"#)
                .await
                .is_some_and(|b| b > 0.0)
        })
        .await,
        "undelivered records are counted in the spool"
    );
    assert_eq!(
        readyz(&fx).await,
        200,
        "a spool with room keeps wardgate ready"
    );

    // wardgate restarts with a non-empty spool, then the collector comes back.
    let (_, prepared) = fx.finish().await;
    let spooled: u64 = std::fs::read_dir(prepared.dir.path().join("spool"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".spool"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(
        spooled > 0,
        "the spool on disk holds the undelivered records"
    );
    assert_eq!(distinct_seqs(&collector.lines()), 5);
    let fx = prepared.start().await;
    for _ in 0..2 {
        assert_eq!(
            fx.get("/patients/p-1", &ada).send().await.unwrap().status(),
            200
        );
    }
    collector.restart().await;
    assert!(
        eventually(WAIT, || async { distinct_seqs(&collector.lines()) == 14 }).await,
        "the collector got {} distinct records",
        distinct_seqs(&collector.lines())
    );
    assert_eq!(
        metric(&fx, "wardgate_audit_records_lost_total").await,
        Some(0.0)
    );
    let (records, prepared) = fx.finish().await;
    assert_eq!(records.len(), 14);
    assert_delivered_in_order(&records, &collector.lines());
    assert_eq!(
        wardgate::audit::verify::verify_files(&[&prepared.audit_path]),
        Ok(14),
        "one chain across the restart"
    );
    for post in collector.posts() {
        assert_eq!(post.headers["authorization"], "Bearer collector-secret");
        assert_eq!(post.headers["content-encoding"], "gzip");
        assert_eq!(post.headers["content-type"], "application/x-ndjson");
        assert!(post.lines.len() <= 4, "batch_size caps a POST");
    }
}

/// Sends allowed requests until one is refused; returns how many were allowed, and the 503.
async fn fill_the_spool(fx: &Fixture, token: &str) -> (usize, reqwest::Response) {
    for allowed in 0..40 {
        let resp = fx.get("/patients/p-1", token).send().await.unwrap();
        if resp.status() == 503 {
            return (allowed, resp);
        }
        assert_eq!(resp.status(), 200);
    }
    panic!("a 2 KiB spool did not fill up within 40 records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_means_503_and_nothing_forwarded_until_the_collector_returns() {
    let collector = Collector::start().await;
    collector.stop();
    let fx = fixture()
        .set(
            "audit.sinks",
            json!([
                { "type": "file", "path": "audit.jsonl" },
                http_sink(&collector, json!({ "spool_max_bytes": 2048 })),
            ]),
        )
        .start()
        .await;
    let ada = token("dr-ada", &["doctor"]);

    let (allowed, resp) = fill_the_spool(&fx, &ada).await;
    assert_eq!(resp.headers()["retry-after"], "1");
    let mut refused = vec![expect_problem(resp, 503).await];
    let forwarded = fx.backend().forwarded().len();
    for _ in 0..3 {
        let resp = fx.get("/patients/p-1", &ada).send().await.unwrap();
        refused.push(expect_problem(resp, 503).await);
    }
    assert_eq!(
        fx.backend().forwarded().len(),
        forwarded,
        "nothing is forwarded while records cannot be made durable"
    );
    assert_eq!(readyz(&fx).await, 503, "not ready while the spool is full");
    assert_eq!(metric(&fx, "wardgate_audit_backpressure").await, Some(1.0));

    collector.restart().await;
    assert!(
        eventually(WAIT, || async { readyz(&fx).await == 200 }).await,
        "ready again once the spool drains"
    );
    assert_eq!(
        fx.get("/patients/p-1", &ada).send().await.unwrap().status(),
        200
    );
    let total = allowed + refused.len() + 1;
    assert_eq!(
        fx.records(total).await.len(),
        total,
        "one record per request"
    );
    assert!(
        eventually(WAIT, || async {
            distinct_seqs(&collector.lines()) == total
        })
        .await,
        "the collector got {} of {total} records",
        distinct_seqs(&collector.lines())
    );
    assert_eq!(
        metric(&fx, "wardgate_audit_records_lost_total").await,
        Some(0.0)
    );
    let (records, _) = fx.finish().await;
    assert_eq!(records.len(), total);
    assert_delivered_in_order(&records, &collector.lines());
    for id in &refused {
        let r = record_by_id(&records, id);
        assert_eq!(r["status"], 503);
        assert_eq!(r["reason"], "audit_unavailable");
        assert_eq!(r["decision"], "deny");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_waiting_for_a_full_spool_survive_a_shutdown() {
    let collector = Collector::start().await;
    collector.stop();
    let prepared = fixture()
        .set(
            "audit.sinks",
            json!([
                { "type": "file", "path": "audit.jsonl" },
                http_sink(&collector, json!({ "spool_max_bytes": 2048 })),
            ]),
        )
        .set("audit.drain_timeout_ms", 200)
        .prepare()
        .await;
    let fx = prepared.start().await;
    let ada = token("dr-ada", &["doctor"]);
    let (allowed, resp) = fill_the_spool(&fx, &ada).await;
    expect_problem(resp, 503).await;
    for _ in 0..2 {
        let resp = fx.get("/patients/p-1", &ada).send().await.unwrap();
        expect_problem(resp, 503).await;
    }
    let total = allowed + 3;
    fx.records(total).await;
    // Shut down while the collector is away and records still wait for spool room: they go
    // to the spool regardless of its limit instead of dying with the process.
    let (_, prepared) = fx.finish().await;
    collector.restart().await;
    let fx = prepared.start().await;
    assert!(
        eventually(WAIT, || async {
            distinct_seqs(&collector.lines()) == total
        })
        .await,
        "the collector got {} of {total} records",
        distinct_seqs(&collector.lines())
    );
    let (records, _) = fx.finish().await;
    assert_eq!(records.len(), total);
    assert_delivered_in_order(&records, &collector.lines());
}
