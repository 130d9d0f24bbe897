//! Headers (issue 6, family 5, first half): identity a client asserts itself never reaches the
//! backend, `Connection` cannot remove what wardgate injects, what a client says about
//! forwarding is kept only from a trusted proxy, and header blocks too big or too many are 431.
//!
//! Trusted-proxy setting: from a peer outside `trusted_proxies` (default: none), `Forwarded`,
//! `X-Forwarded-*` (host, proto, port, prefix, …), `X-Real-IP` and the CDN client-IP headers are
//! dropped and `X-Forwarded-For` is replaced by the peer address; from a trusted peer they are
//! kept and the peer is appended to `X-Forwarded-For`. Identity headers are dropped from anyone.

use serde_json::json;

use super::{assert_refused, Case, Want};
use crate::support::raw::request_head;
use crate::support::*;

/// Client-sent identity, from the families other proxies and frameworks read.
const IDENTITY: &[(&str, &str)] = &[
    ("X-Wardgate-Subject", "admin"),
    ("X-Wardgate-Roles", "admin"),
    ("X-Wardgate-Decision-Id", "forged"),
    ("X-Wardgate-Mfa", "true"),
    ("X-User", "admin"),
    ("X-User-Id", "1"),
    ("X-Username", "admin"),
    ("X-Forwarded-User", "admin"),
    ("X-Forwarded-Email", "admin@clinic.example"),
    ("X-Forwarded-Preferred-Username", "admin"),
    ("X-Forwarded-Groups", "admins"),
    ("X-Forwarded-Access-Token", "t"),
    ("X-Remote-User", "admin"),
    ("X-Remote-Group", "admins"),
    ("Remote-User", "admin"),
    ("X-Auth-Request-User", "admin"),
    ("X-Auth-Request-Email", "admin@clinic.example"),
    ("X-Auth-Request-Groups", "admins"),
    ("X-Auth-Request-Access-Token", "t"),
    ("X-Auth-User", "admin"),
    ("X-Authenticated-User", "admin"),
    ("X-Authenticated-Userid", "admin"),
    ("X-Email", "admin@clinic.example"),
    ("X-Roles", "admin"),
    ("X-Groups", "admins"),
    ("X-Principal", "admin"),
    ("X-Id-Token", "t"),
    ("X-Access-Token", "t"),
    ("X-Userinfo", "e30"),
    ("X-Jwt-Assertion", "t"),
    ("X-Webauth-User", "admin"),
    ("X-Amzn-Oidc-Identity", "admin"),
    ("X-Amzn-Oidc-Data", "t"),
    (
        "X-Goog-Authenticated-User-Email",
        "accounts.google.com:admin@clinic.example",
    ),
    ("X-Goog-Iap-Jwt-Assertion", "t"),
    ("X-Ms-Client-Principal-Name", "admin"),
    ("X-Ms-Client-Principal-Id", "1"),
    ("X-Consumer-Username", "admin"),
    ("X-Forwarded-Client-Cert", "Hash=x;Subject=\"CN=admin\""),
    ("X-Ssl-Client-Dn", "CN=admin"),
    ("Ssl-Client-Verify", "SUCCESS"),
    ("X-Client-Cert", "x"),
];

/// What a client says about forwarding.
const FORWARDING: &[(&str, &str)] = &[
    ("Forwarded", "for=10.0.0.1;host=admin.internal;proto=https"),
    ("X-Forwarded-Host", "admin.internal"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Port", "443"),
    ("X-Forwarded-Prefix", "/admin"),
    ("X-Forwarded-Server", "admin.internal"),
    ("X-Real-IP", "10.0.0.1"),
    ("X-Client-IP", "10.0.0.1"),
    ("True-Client-IP", "10.0.0.1"),
    ("CF-Connecting-IP", "10.0.0.1"),
];

fn all_headers(auth: &str) -> Vec<(&str, &str)> {
    let mut h = vec![("Authorization", auth)];
    h.extend_from_slice(IDENTITY);
    h.extend_from_slice(FORWARDING);
    h.push(("X-Forwarded-For", "10.0.0.1"));
    h.push(("X-Request-Id", "kept-1"));
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_and_forwarding_claims_from_an_untrusted_client_never_reach_the_backend() {
    let fx = fixture().start().await;
    let auth = format!("Bearer {}", token("dr-ada", &["doctor"]));
    let resp = fx.raw("GET", "/patients/p-1", &all_headers(&auth)).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert_eq!(forwarded.len(), 1);
    let got = &forwarded[0];
    let mut leaked = Vec::new();
    for (name, _) in IDENTITY.iter().chain(FORWARDING) {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("x-wardgate-") && lower != "x-wardgate-mfa" {
            continue;
        }
        if got.headers.contains_key(lower.as_str()) {
            leaked.push(*name);
        }
    }
    assert!(leaked.is_empty(), "reached the backend: {leaked:?}");
    assert_eq!(got.header("x-wardgate-subject"), "dr-ada");
    assert_eq!(got.header("x-wardgate-roles"), "doctor");
    assert_ne!(got.header("x-wardgate-decision-id"), "forged");
    assert_eq!(got.header("x-forwarded-for"), "127.0.0.1");
    assert_eq!(got.header("x-request-id"), "kept-1");
    assert_eq!(records.len(), 1);
    record_by_id(&records, got.header("x-wardgate-decision-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_keeps_its_forwarding_headers_but_not_identity() {
    let fx = fixture()
        .set("trusted_proxies", json!(["127.0.0.1/32"]))
        .start()
        .await;
    let auth = format!("Bearer {}", token("dr-ada", &["doctor"]));
    let resp = fx.raw("GET", "/patients/p-1", &all_headers(&auth)).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    let got = &forwarded[0];
    for (name, value) in FORWARDING {
        assert_eq!(got.header(&name.to_ascii_lowercase()), *value, "{name}");
    }
    for (name, _) in IDENTITY {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("x-wardgate-") && lower != "x-wardgate-mfa" {
            continue;
        }
        assert!(
            !got.headers.contains_key(lower.as_str()),
            "{name} reached the backend"
        );
    }
    assert_eq!(got.header("x-forwarded-for"), "10.0.0.1, 127.0.0.1");
    assert_eq!(records.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_remove_what_wardgate_injects() {
    let fx = fixture().start().await;
    let auth = format!("Bearer {}", token("dr-ada", &["doctor", "nurse"]));
    let mut statuses = Vec::new();
    for connection in [
        "X-Wardgate-Subject, X-Wardgate-Roles, X-Wardgate-Decision-Id",
        "close, x-wardgate-subject",
        "X-Forwarded-For",
        "Authorization, X-Wardgate-Roles",
        "keep-alive, Upgrade, HTTP2-Settings, X-Wardgate-Decision-Id",
    ] {
        let resp = fx
            .raw(
                "GET",
                "/patients/p-1",
                &[
                    ("Authorization", &auth),
                    ("Connection", connection),
                    ("Upgrade", "h2c"),
                    ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
                ],
            )
            .await;
        statuses.push(resp.status);
    }
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(forwarded.len(), 5);
    for got in &forwarded {
        assert_eq!(got.header("x-wardgate-subject"), "dr-ada");
        assert_eq!(got.header("x-wardgate-roles"), "doctor,nurse");
        assert_eq!(got.header("x-forwarded-for"), "127.0.0.1");
        record_by_id(&records, got.header("x-wardgate-decision-id"));
        for h in ["upgrade", "http2-settings"] {
            assert!(!got.headers.contains_key(h), "{h} reached the backend");
        }
    }
    assert_eq!(records.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_or_too_large_headers_are_431() {
    let fx = fixture()
        .set("limits", json!({ "max_header_bytes": 32 * 1024 }))
        .start()
        .await;
    let auth = format!("Bearer {}", token("dr-ada", &["doctor"]));
    // `request_head` adds Host and Connection: with Authorization, 3 fields before the padding.
    let padded = |n: usize| -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("X-Pad-{i}"), "v".to_owned()))
            .collect()
    };
    let head = |extra: &[(String, String)]| {
        let mut h: Vec<(&str, &str)> = vec![("Authorization", &auth)];
        h.extend(extra.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        request_head("GET", "/patients/p-1", &h)
    };
    let exactly_100 = head(&padded(97));
    let big = "a".repeat(64 * 1024);
    let huge = "a".repeat(1024 * 1024);
    let cases = vec![
        Case::new(
            "101 header fields",
            head(&padded(98)),
            Want::refused(431, "headers_too_large"),
        ),
        Case::new(
            "300 header fields",
            head(&padded(297)),
            Want::refused(431, "headers_too_large"),
        ),
        Case::new(
            "one 64 KiB header",
            request_head(
                "GET",
                "/patients/p-1",
                &[("Authorization", &auth), ("X-Big", &big)],
            ),
            Want::refused(431, "headers_too_large"),
        ),
        Case::new(
            "a 64 KiB header in 1 KiB pieces",
            head(
                &(0..64)
                    .map(|i| (format!("X-Piece-{i}"), "b".repeat(1000)))
                    .collect::<Vec<_>>(),
            ),
            Want::refused(431, "headers_too_large"),
        ),
        // Over hyper's hard cap (4 × max_header_bytes): hyper answers, wardgate still audits.
        Case::new(
            "one 1 MiB header",
            request_head(
                "GET",
                "/patients/p-1",
                &[("Authorization", &auth), ("X-Huge", &huge)],
            ),
            Want::hyper(431),
        ),
        Case::new("1,000 header fields", head(&padded(1000)), Want::hyper(431)),
    ];
    // The boundary passes: 100 fields is served.
    let ok = super::send_all(
        fx.proxy,
        &[Case::new("100 fields", exactly_100, Want::refused(200, ""))],
    )
    .await;
    assert_eq!(
        ok[0].as_ref().map(|r| r.status),
        Some(200),
        "100 header fields are allowed: {:?}",
        ok[0]
            .as_ref()
            .map(|r| format!("{:?} {}", r.headers, String::from_utf8_lossy(&r.body)))
    );
    let responses = super::send_all(fx.proxy, &cases).await;
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    let failures = super::check_refusals(&cases, &responses, &records);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        forwarded.len(),
        1,
        "only the 100-field request is forwarded"
    );
    assert_eq!(records.len(), cases.len() + 1);
}

/// Refused, not stripped: requests that ask for another method or URL (see `paths.rs`) and GET
/// or HEAD with a body (a backend that ignores a GET body's framing would read it as the next
/// request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_head_with_a_body_are_refused() {
    let fx = fixture().start().await;
    let auth = format!("Bearer {}", token("dr-ada", &["doctor"]));
    let smuggled = format!(
        "GET /patients/p-2?smuggled=1 HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n"
    );
    let cases = vec![
        Case::new(
            "GET with Content-Length and a request as its body",
            format!(
                "GET /patients/p-1 HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{smuggled}",
                smuggled.len()
            )
            .into_bytes(),
            Want::refused(400, "bad_request: body_not_allowed"),
        ),
        Case::new(
            "GET with a chunked body",
            format!(
                "GET /patients/p-1 HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            )
            .into_bytes(),
            Want::refused(400, "bad_request: body_not_allowed"),
        ),
    ];
    assert_refused(fx, &cases).await;
}
