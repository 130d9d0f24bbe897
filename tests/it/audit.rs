//! The audit log itself: one record per request whatever the outcome, in `seq` order, each
//! linked to the one before by the SPEC's hash chain.

use crate::support::*;

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
    assert_eq!(statuses, [200, 401, 403, 400, 403, 200]);

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
