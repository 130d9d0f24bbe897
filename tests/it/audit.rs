//! The audit log itself: one record per request whatever the outcome, in `seq` order, each
//! linked to the one before by the SPEC's hash chain.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

use crate::support::fixture::Fixture;
use crate::support::*;

/// The audit record's fields (SPEC, "The audit record"), sorted.
const SPEC_FIELDS: [&str; 23] = [
    "action",
    "break_glass",
    "break_glass_reason",
    "client_ip",
    "decision",
    "decision_id",
    "errors",
    "hash",
    "latency_us",
    "method",
    "mfa",
    "mode",
    "path",
    "policies",
    "policy_version",
    "prev_hash",
    "principal",
    "reason",
    "resource",
    "roles",
    "seq",
    "status",
    "time",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_is_recorded_in_one_unbroken_hash_chain() {
    let fx = fixture().start().await;
    let ada = token("dr-ada", &["doctor"]);
    let mut statuses = Vec::new();
    statuses.push(
        fx.get("/patients/p-1", &ada)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
    );
    statuses.push(
        fx.client
            .get(fx.url("/patients/p-1"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
    );
    statuses.push(
        fx.get("/patients/p-2", &ada)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
    );
    statuses.push(fx.raw("GET", "/patients//p-1", &[]).await.status);
    statuses.push(
        fx.get("/nowhere", &ada)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
    );
    statuses.push(
        fx.get("/patients/p-1?note=caf%C3%A9%20%22quoted%22", &ada)
            .header("X-Break-Glass", r#"chest "pain" \ a/b <&>"#)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
    );
    // Upstream down: allowed, recorded with the 502.
    fx.backend().server.stop();
    statuses.push(
        fx.get("/patients/p-1", &ada)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
    );
    assert_eq!(statuses, [200, 401, 403, 400, 403, 200, 502]);

    let (records, _) = fx.finish().await;
    assert_eq!(records.len(), statuses.len(), "{records:#?}");
    let mut seen_ids = std::collections::HashSet::new();
    for (i, r) in records.iter().enumerate() {
        if i == 0 {
            assert_eq!(r["prev_hash"], "0".repeat(64), "first record's prev_hash");
        } else {
            let prev = &records[i - 1];
            assert_eq!(
                r["seq"].as_u64(),
                prev["seq"].as_u64().map(|s| s + 1),
                "seq runs without gaps"
            );
            assert_eq!(
                r["prev_hash"],
                prev["hash"],
                "record {i} links to record {}",
                i - 1
            );
        }
        assert_eq!(
            r["hash"].as_str().unwrap_or_default(),
            expected_hash(r),
            "record {i}'s hash is SHA-256(prev_hash ‖ JCS(record without hash)): {r}"
        );
        let time = r["time"].as_str().unwrap_or_default();
        assert!(
            time.ends_with('Z') && time.contains('T'),
            "`time` is RFC 3339 UTC: {time}"
        );
        assert!(
            seen_ids.insert(r["decision_id"].to_string()),
            "decision ids are unique"
        );
        assert!(r["mode"] == "enforce", "{r}");
        let mut keys: Vec<&str> = r
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "candidate_decision")
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys, SPEC_FIELDS,
            "the SPEC's fields, no more, no fewer: {r}"
        );
    }
    let statuses_recorded: Vec<u64> = records
        .iter()
        .filter_map(|r| r["status"].as_u64())
        .collect();
    let mut sorted_want: Vec<u64> = statuses.iter().map(|s| *s as u64).collect();
    let mut sorted_got = statuses_recorded.clone();
    sorted_want.sort_unstable();
    sorted_got.sort_unstable();
    assert_eq!(
        sorted_got, sorted_want,
        "each outcome recorded with its status"
    );
}

// ---------------------------------------------------------------------------------------------
// Shared by the sink modules.

/// Checks that `delivered` (JSON lines as a sink's receiver got them, in arrival order) holds
/// every record of `expected` (the file sink's trail) in `seq` order, each exactly as written;
/// a line may repeat (at-least-once) only as an exact copy of an earlier one with its `seq`.
pub(crate) fn assert_delivered_in_order(expected: &[Value], delivered: &[String]) {
    let mut seen: BTreeMap<u64, Value> = BTreeMap::new();
    let mut first_seen = Vec::new();
    for line in delivered {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("delivered line is not JSON ({e}): {line}"));
        let seq = v["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no seq: {line}"));
        match seen.get(&seq) {
            Some(earlier) => assert_eq!(
                earlier, &v,
                "seq {seq} delivered twice with different content"
            ),
            None => {
                first_seen.push(seq);
                seen.insert(seq, v);
            }
        }
    }
    let want: Vec<u64> = expected
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        first_seen,
        want,
        "every record delivered, in seq order ({} lines delivered)",
        delivered.len()
    );
    for r in expected {
        assert_eq!(
            &seen[&r["seq"].as_u64().unwrap()],
            r,
            "delivered as written"
        );
    }
}

/// Distinct `seq`s among delivered lines.
pub(crate) fn distinct_seqs(delivered: &[String]) -> usize {
    delivered
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["seq"].as_u64())
        .collect::<std::collections::BTreeSet<u64>>()
        .len()
}

/// The value of a metric series from `/metrics` (`series` as printed, labels included).
pub(crate) async fn metric(fx: &Fixture, series: &str) -> Option<f64> {
    let text = fx
        .client
        .get(fx.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `/readyz` status.
pub(crate) async fn readyz(fx: &Fixture) -> u16 {
    fx.client
        .get(fx.admin_url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `wardgate audit verify FILE…`: exit success and stdout.
fn verify(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .arg("audit")
        .arg("verify")
        .args(files)
        .output()
        .expect("run wardgate audit verify");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_or_a_deleted_line_makes_verify_fail_naming_the_record() {
    let fx = fixture().start().await;
    let ada = token("dr-ada", &["doctor"]);
    for _ in 0..5 {
        assert_eq!(
            fx.get("/patients/p-1", &ada).send().await.unwrap().status(),
            200
        );
    }
    let (records, prepared) = fx.finish().await;
    assert_eq!(records.len(), 5);
    let path = prepared.audit_path.clone();
    let (ok, out) = verify(std::slice::from_ref(&path));
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "ok: 5 records");
    let original = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = original.lines().collect();

    // One byte of record 3 changed; the line is still valid JSON.
    let mut flipped: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    assert!(flipped[2].contains(r#""path":"/patients/p-1""#));
    flipped[2] = flipped[2].replacen(r#""path":"/patients/p-1""#, r#""path":"/patients/q-1""#, 1);
    std::fs::write(&path, flipped.join("\n") + "\n").unwrap();
    let (ok, out) = verify(std::slice::from_ref(&path));
    assert!(!ok, "a changed record must fail: {out}");
    assert!(
        out.contains(":3: record 3:") && out.contains("altered"),
        "{out}"
    );

    // Line 3 deleted: record 4 names the gap.
    let mut deleted: Vec<&str> = lines.clone();
    deleted.remove(2);
    std::fs::write(&path, deleted.join("\n") + "\n").unwrap();
    let (ok, out) = verify(std::slice::from_ref(&path));
    assert!(!ok, "a missing record must fail: {out}");
    assert!(
        out.contains("record 4:") && out.contains("expected seq 3"),
        "{out}"
    );

    // A structural byte of line 2 broken: named by its place.
    let mut broken: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    broken[1].replace_range(0..1, "[");
    std::fs::write(&path, broken.join("\n") + "\n").unwrap();
    let (ok, out) = verify(std::slice::from_ref(&path));
    assert!(!ok, "{out}");
    assert!(out.contains(":2: record after 1: not JSON"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_files_and_a_restart_verify_as_one_chain() {
    let prepared = fixture()
        .set(
            "audit.sinks",
            json!([{ "type": "file", "path": "audit.jsonl", "max_bytes": 4096, "fsync": "always" }]),
        )
        .prepare()
        .await;
    let ada = token("dr-ada", &["doctor"]);
    let fx = prepared.start().await;
    for i in 0..16 {
        let path = if i % 3 == 0 {
            "/patients/p-2"
        } else {
            "/patients/p-1"
        };
        fx.get(path, &ada).send().await.unwrap();
    }
    let (_, prepared) = fx.finish().await;
    // Restarted: the chain continues from the newest file.
    let fx = prepared.start().await;
    for _ in 0..4 {
        fx.get("/patients/p-1", &ada).send().await.unwrap();
    }
    let (_, prepared) = fx.finish().await;

    let dir = prepared.dir.path();
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("audit.") && n.ends_with(".jsonl") && n != "audit.jsonl"
        })
        .collect();
    rotated.sort();
    assert!(
        rotated.len() >= 3,
        "20 records of ~700 bytes in 4 KiB files: {rotated:?}"
    );
    for f in &rotated {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len <= 4096, "{} is {len} bytes", f.display());
    }
    let mut all = rotated.clone();
    all.push(prepared.audit_path.clone());
    let (ok, out) = verify(&all);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "ok: 20 records", "{all:?}");
    // Each rotated file is named after its first record.
    let first = read_audit(&rotated[1])[0]["seq"].as_u64().unwrap();
    assert!(
        rotated[1]
            .to_string_lossy()
            .contains(&format!("audit.{first:020}.jsonl")),
        "{rotated:?}"
    );

    // A whole file left out is a gap.
    let mut gap = all.clone();
    gap.remove(1);
    let (ok, out) = verify(&gap);
    assert!(!ok && out.contains("expected seq"), "{out}");
}
