//! The `syslog` sink against a real rsyslog (started by the test on a loopback port): every
//! record arrives as an RFC 5424 message, in order, across an rsyslog stop and restart; the
//! same over TLS (RFC 5425) with rsyslog's `ossl` driver.

use std::time::Duration;

use serde_json::{json, Value};

use crate::audit::{assert_delivered_in_order, distinct_seqs, metric};
use crate::support::pki::Ca;
use crate::support::rsyslog::{Rsyslog, RsyslogTls};
use crate::support::*;

const WAIT: Duration = Duration::from_secs(20);

fn syslog_sink(address: &str, extra: Value) -> Value {
    let mut sink = json!({
        "type": "syslog",
        "address": address,
        "spool_dir": "spool-syslog",
        "confirm_ms": 50,
        "retry_initial_ms": 20,
        "retry_max_ms": 200,
    });
    for (k, v) in extra.as_object().unwrap() {
        sink[k] = v.clone();
    }
    sink
}

fn messages(rsyslog: &Rsyslog) -> Vec<String> {
    rsyslog.received().into_iter().map(|r| r.msg).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_gets_every_record_in_order_across_its_restart() {
    let mut rsyslog = Rsyslog::start();
    let fx = fixture()
        .set(
            "audit.sinks",
            json!([
                { "type": "file", "path": "audit.jsonl" },
                syslog_sink(&rsyslog.address(), json!({})),
            ]),
        )
        .set("audit.drain_timeout_ms", 2000)
        .start()
        .await;
    let ada = token("dr-ada", &["doctor"]);
    for _ in 0..5 {
        assert_eq!(
            fx.get("/patients/p-1", &ada).send().await.unwrap().status(),
            200
        );
    }
    assert!(
        eventually(WAIT, || async { distinct_seqs(&messages(&rsyslog)) == 5 }).await,
        "rsyslog got {:?}\n{}",
        rsyslog.received(),
        rsyslog.log()
    );

    tokio::task::block_in_place(|| rsyslog.stop());
    for i in 0..6 {
        let path = if i % 2 == 0 {
            "/patients/p-2"
        } else {
            "/patients/p-1"
        };
        let status = fx.get(path, &ada).send().await.unwrap().status();
        assert!(status == 200 || status == 403, "{status}");
    }
    fx.records(11).await;
    tokio::task::block_in_place(|| rsyslog.restart());
    assert!(
        eventually(WAIT, || async { distinct_seqs(&messages(&rsyslog)) == 11 }).await,
        "rsyslog got {} distinct records:\n{:#?}",
        distinct_seqs(&messages(&rsyslog)),
        rsyslog.received()
    );
    assert_eq!(
        metric(&fx, "wardgate_audit_records_lost_total").await,
        Some(0.0)
    );
    let (records, _) = fx.finish().await;
    assert_eq!(records.len(), 11);
    assert_delivered_in_order(&records, &messages(&rsyslog));
    for r in rsyslog.received() {
        // authpriv (10) at informational (6); rsyslog parsed the RFC 5424 header.
        assert_eq!(
            (r.pri.as_str(), r.app_name.as_str(), r.msgid.as_str()),
            ("86", "wardgate", "audit")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_over_tls_gets_every_record() {
    let ca = Ca::new("wardgate test syslog CA");
    let leaf = ca.leaf("rsyslog");
    let rsyslog = Rsyslog::start_with(Some(RsyslogTls {
        ca_pem: ca.pem(),
        cert_pem: leaf.cert_pem,
        key_pem: leaf.key_pem,
    }));
    let fx = fixture()
        .file("syslog-ca.pem", &ca.pem())
        .set(
            "audit.sinks",
            json!([
                { "type": "file", "path": "audit.jsonl" },
                syslog_sink(&rsyslog.address(), json!({
                    "facility": "local3",
                    "tls": { "ca_file": "syslog-ca.pem", "server_name": "localhost" },
                })),
            ]),
        )
        .start()
        .await;
    let ada = token("dr-ada", &["doctor"]);
    for _ in 0..4 {
        fx.get("/patients/p-1", &ada).send().await.unwrap();
    }
    assert!(
        eventually(WAIT, || async { distinct_seqs(&messages(&rsyslog)) == 4 }).await,
        "rsyslog got {:?}\n{}",
        rsyslog.received(),
        rsyslog.log()
    );
    let (records, _) = fx.finish().await;
    assert_delivered_in_order(&records, &messages(&rsyslog));
    assert!(
        rsyslog.received().iter().all(|r| r.pri == "158"),
        "local3.info"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syslog_receiver_with_an_untrusted_certificate_gets_nothing() {
    let ca = Ca::new("the receiver's CA");
    let leaf = ca.leaf("rsyslog");
    let rsyslog = Rsyslog::start_with(Some(RsyslogTls {
        ca_pem: ca.pem(),
        cert_pem: leaf.cert_pem,
        key_pem: leaf.key_pem,
    }));
    let other = Ca::new("a CA wardgate trusts");
    let fx = fixture()
        .file("syslog-ca.pem", &other.pem())
        .set(
            "audit.sinks",
            json!([
                { "type": "file", "path": "audit.jsonl" },
                syslog_sink(&rsyslog.address(), json!({
                    "tls": { "ca_file": "syslog-ca.pem", "server_name": "localhost" },
                })),
            ]),
        )
        .set("audit.drain_timeout_ms", 200)
        .start()
        .await;
    let ada = token("dr-ada", &["doctor"]);
    fx.get("/patients/p-1", &ada).send().await.unwrap();
    assert!(
        eventually(WAIT, || async {
            metric(&fx, r#"wardgate_audit_sink_errors_total{sink="syslog"}"#)
                .await
                .is_some_and(|n| n >= 2.0)
        })
        .await,
        "handshakes fail and are retried"
    );
    let (_, prepared) = fx.finish().await;
    assert!(messages(&rsyslog).is_empty(), "{:?}", rsyslog.received());
    let spooled: u64 = std::fs::read_dir(prepared.dir.path().join("spool-syslog"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".spool"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(spooled > 0, "the record waits in the spool");
}
