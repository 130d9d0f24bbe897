//! Audit pipeline benchmarks (`cargo bench --bench audit`): sealing a record (canonical JSON
//! plus SHA-256), the request path's hand-off (`admit` + `record`), and the throughput the
//! writer sustains into a file sink with `fsync: { interval_ms: 1000 }`. Results and how to
//! read them: BENCHMARKS.md.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark that cannot set up should stop loudly"
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use wardgate::audit::{Auditor, ChainHead, DecisionRecord};
use wardgate::config::{AuditConfig, FileSinkConfig, Fsync, SinkConfig};
use wardgate::metrics::Metrics;

/// A typical allowed read, about 750 bytes as a line.
fn record() -> DecisionRecord {
    DecisionRecord {
        action: Some(r#"Clinic::Action::"ReadPatient""#.into()),
        client_ip: "10.12.0.7".into(),
        decision: "allow".into(),
        decision_id: "019a4e6c-2f1d-7c3a-9d2e-5b8f0a1c3e44".into(),
        latency_us: 412,
        method: "GET".into(),
        mfa: true,
        mode: "enforce".into(),
        path: "/patients/p-1".into(),
        policies: vec!["doctor-reads-care-team".into()],
        policy_version: Some(
            "sha256:9bd4598c22f8d7fa66c479a508c9c04ff74b2560d64f05ee04ca4e1a76ef8189".into(),
        ),
        principal: Some(r#"Clinic::User::"dr-ada""#.into()),
        resource: Some(r#"Clinic::Patient::"p-1""#.into()),
        roles: vec!["doctor".into()],
        status: 200,
        // As the proxy leaves it: the writer formats `time` from `at`.
        at: Some(std::time::SystemTime::now()),
        ..DecisionRecord::default()
    }
}

fn file_auditor(dir: &std::path::Path) -> Auditor {
    let cfg = AuditConfig {
        sinks: vec![SinkConfig::File(FileSinkConfig {
            path: dir.join("audit.jsonl"),
            fsync: Fsync::Interval(Duration::from_millis(1000)),
            max_bytes: None,
        })],
        // Room for every record a measurement pushes before it flushes.
        queue_capacity: 10_000_000,
        drain_timeout: Duration::from_secs(30),
    };
    Auditor::start(&cfg, Metrics::new()).expect("auditor")
}

fn audit(c: &mut Criterion) {
    let mut g = c.benchmark_group("audit");

    g.throughput(Throughput::Elements(1));
    let mut head = ChainHead::default();
    let mut out = Vec::with_capacity(4096);
    g.bench_function("seal (canonical JSON + SHA-256)", |b| {
        b.iter_batched_ref(
            record,
            |r| {
                out.clear();
                head.seal_into(r, &mut out);
            },
            BatchSize::SmallInput,
        );
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auditor = file_auditor(dir.path());
    g.bench_function("hand-off on the request path (admit + record)", |b| {
        b.iter_custom(|iters| {
            let recs: Vec<DecisionRecord> = (0..iters).map(|_| record()).collect();
            let start = Instant::now();
            for r in recs {
                let slot = auditor.admit().ok();
                auditor.record(slot, r);
            }
            let spent = start.elapsed();
            rt.block_on(auditor.flush());
            spent
        });
    });

    const N: u64 = 10_000;
    g.throughput(Throughput::Elements(N));
    g.sample_size(20);
    g.bench_function("10k records into the file sink, fsync interval 1 s", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let recs: Vec<DecisionRecord> = (0..N).map(|_| record()).collect();
                let start = Instant::now();
                for r in recs {
                    let slot = auditor.admit().ok();
                    auditor.record(slot, r);
                }
                rt.block_on(auditor.flush());
                total += start.elapsed();
            }
            total
        });
    });
    g.finish();
    rt.block_on(auditor.shutdown());
    let written = std::fs::metadata(PathBuf::from(dir.path()).join("audit.jsonl"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(written > 0, "the file sink received the records");
}

criterion_group!(benches, audit);
criterion_main!(benches);
