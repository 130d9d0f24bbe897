//! Forwarding: what the backend receives for an allowed request (target, identity headers,
//! body), the header rules on the way up, and the upstream and header-size failures.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::servers::{closed_port, sha256_hex};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doctor_reads_a_patient_and_the_backend_sees_exactly_what_was_authorized() {
    let fx = fixture().start().await;
    let resp = fx
        .get("/patients/p-1?x=1&y=%20", &token("dr-ada", &["doctor"]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("the backend's JSON comes back");
    assert_eq!(body["ok"], true);

    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert_eq!(forwarded.len(), 1, "{forwarded:#?}");
    let got = &forwarded[0];
    assert_eq!(got.method, "GET");
    assert_eq!(got.target, "/patients/p-1?x=1&y=%20");
    assert_eq!(got.header("x-wardgate-subject"), "dr-ada");
    assert_eq!(got.header("x-wardgate-roles"), "doctor");
    let decision_id = got.header("x-wardgate-decision-id").to_owned();
    // A body-less request stays body-less: no chunked framing invented on the way.
    assert_eq!(got.body_len, 0);
    assert!(
        got.headers.get("transfer-encoding").is_none(),
        "a GET without a body was forwarded with Transfer-Encoding: {:?}",
        got.headers
    );
    assert!(
        got.headers
            .get("content-length")
            .is_none_or(|v| v.as_bytes() == b"0"),
        "{:?}",
        got.headers
    );

    assert_eq!(records.len(), 1, "{records:#?}");
    let r = record_by_id(&records, &decision_id);
    assert_eq!(r["decision"], "allow");
    assert_eq!(r["status"], 200);
    assert_eq!(r["mode"], "enforce");
    assert_eq!(r["principal"], r#"Clinic::User::"dr-ada""#);
    assert_eq!(r["roles"], json!(["doctor"]));
    assert_eq!(r["action"], r#"Clinic::Action::"ReadPatient""#);
    assert_eq!(r["resource"], r#"Clinic::Patient::"p-1""#);
    assert!(
        policies_of(r).contains(&"doctor-reads-care-team".to_owned()),
        "{r}"
    );
    assert_eq!(r["errors"], json!([]));
    assert!(r["reason"].is_null(), "{r}");
    assert_eq!(r["method"], "GET");
    assert!(
        r["path"]
            .as_str()
            .unwrap_or_default()
            .starts_with("/patients/p-1"),
        "{r}"
    );
    assert_eq!(r["client_ip"], "127.0.0.1");
    assert_eq!(r["mfa"], false);
    assert_eq!(r["break_glass"], false);
    assert!(r["break_glass_reason"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn note_writes_need_mfa_and_the_body_arrives_byte_for_byte() {
    let fx = fixture().start().await;
    let note = br#"{"text":"BP 120/80, review in 2 weeks","author":"dr-ada","tags":["cardio"]}"#;

    let resp = fx
        .request(
            reqwest::Method::POST,
            "/patients/p-1/notes",
            &token_amr("dr-ada", &["doctor"], &["pwd", "otp"]),
        )
        .header("content-type", "application/json")
        .body(note.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let resp = fx
        .request(
            reqwest::Method::POST,
            "/patients/p-1/notes",
            &token_amr("dr-ada", &["doctor"], &["pwd"]),
        )
        .header("content-type", "application/json")
        .body(note.to_vec())
        .send()
        .await
        .unwrap();
    let denied = expect_problem(resp, 403).await;

    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert_eq!(
        forwarded.len(),
        1,
        "only the MFA write is forwarded: {forwarded:#?}"
    );
    let got = &forwarded[0];
    assert_eq!(got.method, "POST");
    assert_eq!(got.target, "/patients/p-1/notes");
    assert_eq!(got.body_len, note.len() as u64);
    assert_eq!(got.body_sha256, sha256_hex(note));
    assert_eq!(got.header("content-type"), "application/json");

    assert_eq!(records.len(), 2, "{records:#?}");
    let allowed = record_by_id(&records, got.header("x-wardgate-decision-id"));
    assert_eq!(allowed["decision"], "allow");
    assert_eq!(allowed["mfa"], true);
    assert_eq!(allowed["action"], r#"Clinic::Action::"WriteNote""#);
    assert!(policies_of(allowed).contains(&"doctor-writes-care-team-notes".to_owned()));

    let r = record_by_id(&records, &denied);
    assert_eq!(r["decision"], "deny");
    assert_eq!(r["status"], 403);
    assert_eq!(r["mfa"], false);
    assert_eq!(r["reason"], "policy");
    assert!(
        policies_of(r).contains(&"writes-require-mfa".to_owned()),
        "the forbid decides: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sent_wardgate_headers_are_replaced() {
    let fx = fixture().start().await;
    let resp = fx
        .get("/patients/p-1", &token("dr-ada", &["doctor", "nurse"]))
        .header("X-Wardgate-Subject", "admin")
        .header("X-Wardgate-Roles", "admin")
        .header("X-Wardgate-Decision-Id", "forged")
        .header("X-Wardgate-Impersonate", "dr-grace")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    let got = &got[0];
    assert_eq!(got.header("x-wardgate-subject"), "dr-ada");
    let roles: Vec<String> = got
        .header("x-wardgate-roles")
        .split(',')
        .map(|r| r.trim().to_owned())
        .collect();
    assert_eq!(roles, ["doctor", "nurse"]);
    let id = got.header("x-wardgate-decision-id");
    assert_ne!(id, "forged");
    assert!(
        got.headers.get("x-wardgate-impersonate").is_none(),
        "{:?}",
        got.headers
    );
    assert_eq!(records.len(), 1);
    record_by_id(&records, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
    let fx = fixture().start().await;
    let auth = format!("Bearer {}", token("dr-ada", &["doctor"]));
    let resp = fx
        .raw(
            "GET",
            "/patients/p-1",
            &[
                ("Authorization", &auth),
                ("Connection", "close, X-Foo"),
                ("X-Foo", "secret-hop"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Authorization", "Basic cHJveHk6cGFzcw=="),
                ("X-Bar", "kept"),
            ],
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let got = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert_eq!(got.len(), 1);
    let got = &got[0];
    for h in ["x-foo", "keep-alive", "proxy-authorization"] {
        assert!(
            got.headers.get(h).is_none(),
            "`{h}` reached the backend: {:?}",
            got.headers
        );
    }
    for v in got.headers_named("connection") {
        assert!(!v.to_ascii_lowercase().contains("x-foo"), "connection: {v}");
    }
    assert_eq!(got.header("x-bar"), "kept");
    assert_eq!(records.len(), 1);
}

/// `Connection: host` strips the client's `Host` as hop-by-hop; the upstream still gets one
/// (HTTP/1.1 requires it), naming the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_always_gets_a_host() {
    let fx = fixture().start().await;
    let auth = format!("Bearer {}", token("dr-ada", &["doctor"]));
    let resp = fx
        .raw(
            "GET",
            "/patients/p-1",
            &[("Authorization", &auth), ("Connection", "close, Host")],
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let got = fx.backend().forwarded();
    let backend = fx.backend().addr().to_string();
    fx.finish().await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("host"), backend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_from_an_untrusted_peer_is_replaced() {
    let fx = fixture().start().await;
    let t = token("dr-ada", &["doctor"]);
    let resp = fx
        .get("/patients/p-1", &t)
        .header("X-Forwarded-For", "1.2.3.4")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = fx.get("/patients/p-1", &t).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let got = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert_eq!(
        got[0].headers_named("x-forwarded-for").join(", "),
        "127.0.0.1"
    );
    assert_eq!(
        got[1].headers_named("x-forwarded-for").join(", "),
        "127.0.0.1"
    );
    assert_eq!(records.len(), 2);
    assert!(
        records.iter().all(|r| r["client_ip"] == "127.0.0.1"),
        "{records:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_from_a_trusted_proxy_is_kept_and_appended() {
    let fx = fixture()
        .set("trusted_proxies", json!(["127.0.0.1/32"]))
        .start()
        .await;
    let resp = fx
        .get("/patients/p-1", &token("dr-ada", &["doctor"]))
        .header("X-Forwarded-For", "1.2.3.4")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    let xff: Vec<String> = got[0]
        .headers_named("x-forwarded-for")
        .join(",")
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    assert_eq!(xff, ["1.2.3.4", "127.0.0.1"]);
    assert_eq!(records.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_a_502_recorded_as_allowed() {
    let closed = closed_port().await;
    let fx = fixture()
        .set("upstream", format!("http://{closed}"))
        .start()
        .await;
    let resp = fx
        .get("/patients/p-1", &token("dr-ada", &["doctor"]))
        .send()
        .await
        .unwrap();
    let id = expect_problem(resp, 502).await;
    let (records, _) = fx.finish().await;
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = record_by_id(&records, &id);
    assert_eq!(r["decision"], "allow");
    assert_eq!(r["status"], 502);
    assert!(policies_of(r).contains(&"doctor-reads-care-team".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_a_504_recorded_as_allowed() {
    let fx = fixture()
        .set("limits", json!({ "upstream_timeout_ms": 300 }))
        .start()
        .await;
    fx.backend().set_delay(Duration::from_millis(3000));
    let started = Instant::now();
    let resp = fx
        .get("/patients/p-1", &token("dr-ada", &["doctor"]))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let id = expect_problem(resp, 504).await;
    assert!(
        elapsed < Duration::from_millis(2500),
        "the 504 came after {elapsed:?}, past the 300 ms upstream timeout"
    );
    fx.backend().set_delay(Duration::ZERO);
    let (records, _) = fx.finish().await;
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = record_by_id(&records, &id);
    assert_eq!(r["decision"], "allow");
    assert_eq!(r["status"], 504);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_block_over_the_limit_is_a_431() {
    let fx = fixture()
        .set("limits", json!({ "max_header_bytes": 4096 }))
        .start()
        .await;
    let auth = format!("Bearer {}", token("dr-ada", &["doctor"]));
    // Under the limit: served, so the 431 below is about size and nothing else.
    let small_pad = "a".repeat(1500);
    let ok = fx
        .raw(
            "GET",
            "/patients/p-1",
            &[("Authorization", &auth), ("X-Pad", &small_pad)],
        )
        .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let big_pad = "a".repeat(6000);
    let resp = fx
        .raw(
            "GET",
            "/patients/p-1",
            &[("Authorization", &auth), ("X-Pad", &big_pad)],
        )
        .await;
    assert_eq!(resp.status, 431, "{resp:?}");
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert_eq!(forwarded.len(), 1, "the oversized request is not forwarded");
    assert_eq!(
        records.len(),
        2,
        "one record per request, the 431 included: {records:#?}"
    );
    let r = records
        .iter()
        .find(|r| r["status"] == 431)
        .unwrap_or_else(|| panic!("no audit record with status 431: {records:#?}"));
    assert_eq!(r["decision"], "deny");
    let id = assert_problem(resp.header("content-type"), &resp.body, 431);
    assert_eq!(r["decision_id"], id.as_str());
}
