//! Slow clients (issue 6, family 6): connections that drip their request head are closed by
//! `limits.header_read_timeout_ms` while normal traffic keeps being served; a request body that
//! stalls ends in the upstream timeout. A connection closed before its head was complete is no
//! request and leaves no audit record. HTTP/2 is not served, so there is no rapid-reset surface
//! (see `smuggling.rs`).

use std::time::Duration;

use serde_json::json;
use tokio::task::JoinSet;

use crate::support::hostile::Conn;
use crate::support::*;

/// Generous bounds: these fail only when a connection is never cut, not when it is cut late.
const CUT_WITHIN: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dripping_request_heads_are_cut_while_normal_traffic_is_served() {
    let fx = fixture()
        .set("limits", json!({ "header_read_timeout_ms": 400 }))
        .start()
        .await;
    let auth = format!("Bearer {}", token("dr-ada", &["doctor"]));
    let head = format!("GET /patients/p-1 HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n");
    let mut drips = JoinSet::new();
    for _ in 0..20 {
        let head = head.clone().into_bytes();
        let addr = fx.proxy;
        drips.spawn(async move {
            let mut c = Conn::open(addr).await;
            // One byte every 150 ms: never a complete head before the timeout.
            for b in head.iter().take(40) {
                if !c.write(&[*b]).await {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            c.closed_within(CUT_WITHIN).await
        });
    }
    // Meanwhile, normal requests are answered.
    let t = token("dr-ada", &["doctor"]);
    let mut served = 0;
    for _ in 0..10 {
        let r = fx.get("/patients/p-1", &t).send().await.unwrap();
        assert_eq!(r.status(), 200);
        served += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while let Some(r) = drips.join_next().await {
        let bytes = r.unwrap().unwrap_or_else(|got| {
            panic!("a dripping connection was still open after {CUT_WITHIN:?}; got {got:?}")
        });
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(" 200 "),
            "a dripped request was answered: {text}"
        );
    }
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert_eq!(
        forwarded.len(),
        served,
        "no dripped request reached the backend"
    );
    assert_eq!(records.len(), served, "{records:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_cut_too() {
    let fx = fixture()
        .set("limits", json!({ "header_read_timeout_ms": 300 }))
        .start()
        .await;
    let mut idle = Conn::open(fx.proxy).await;
    let mut partial = Conn::open(fx.proxy).await;
    partial.write(b"GET /patients/p-1 HTTP/1.1\r\nHost:").await;
    assert!(
        idle.closed_within(CUT_WITHIN).await.is_ok(),
        "an idle connection stayed open"
    );
    assert!(
        partial.closed_within(CUT_WITHIN).await.is_ok(),
        "a half-sent head stayed open"
    );
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert!(forwarded.is_empty());
    assert!(records.is_empty(), "{records:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_ends_in_the_upstream_timeout() {
    let fx = fixture()
        .set("limits", json!({ "upstream_timeout_ms": 500 }))
        .start()
        .await;
    let auth = format!(
        "Bearer {}",
        token_amr("dr-ada", &["doctor"], &["pwd", "otp"])
    );
    let mut c = Conn::open(fx.proxy).await;
    c.write(
        format!(
            "POST /patients/p-1/notes HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 1000\r\n\r\npartial body"
        )
        .as_bytes(),
    )
    .await;
    let resp = tokio::time::timeout(CUT_WITHIN, c.try_read_response(false))
        .await
        .expect("a stalled body was never answered")
        .expect("an answer, not a bare close");
    assert_eq!(resp.status, 504, "{resp:?}");
    let id = assert_problem(resp.header("content-type"), &resp.body, 504);
    drop(c);
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert!(forwarded.len() <= 1, "{forwarded:#?}");
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = record_by_id(&records, &id);
    assert_eq!(r["decision"], "allow");
    assert_eq!(r["status"], 504);
}
