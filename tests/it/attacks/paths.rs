//! Paths (issue 6, family 4): the backend must never receive a path that its own
//! normalization would turn into one wardgate did not authorize. `tests/it/routing.rs` holds the
//! first cases; these extend them to encodings, look-alikes, matrix parameters, trailing
//! characters, other request-target forms, `Host`, method case and method/URL overrides.
//!
//! Override headers (`X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`,
//! `X-Original-URL`, `X-Rewrite-URL`, …) are refused with 400 rather than stripped: a client
//! that sends one wants another method or URL than the one wardgate would decide on.
//!
//! Fragments: hyper's request-target parser drops a `#fragment` before wardgate sees the request,
//! so what is authorized and what is forwarded are both the path without it (asserted below).

use super::{assert_refused, Case, Want};
use crate::support::raw::request_head;
use crate::support::*;

fn auth() -> String {
    format!("Bearer {}", token("dr-ada", &["doctor"]))
}

fn get(target: &str, want: Want) -> Case {
    Case::get(
        format!("GET {target}"),
        target,
        &[("Authorization", &auth())],
        want,
    )
}

fn raw(name: &str, text: &str, want: Want) -> Case {
    Case::new(name, text.as_bytes().to_vec(), want)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_are_refused_and_never_forwarded() {
    let fx = fixture().start().await;
    let a = auth();
    let mut cases: Vec<Case> = [
        // Dot segments, plain, encoded and with `;`.
        "/patients/.%2E/admin",
        "/patients/%2e./admin",
        "/patients/%2E%2e/admin",
        "/patients/..;/admin",
        "/patients/p-1/..;",
        "/patients/p-1/.;/notes",
        "/patients/p-2/%2e%2e/p-1",
        "/patients/p-1/%2e",
        // Empty segments, leading and inside; trailing `/`, `.`, spaces.
        "//patients/p-1",
        "///patients/p-1",
        "/patients/p-1//notes",
        "/patients/p-1/",
        "/patients/p-1/notes/",
        "/patients/p-1.",
        "/patients/p-1..",
        "/patients/p-1%20",
        "/patients/%20p-1",
        "/patients/p-1%09",
        // Encoded separators and escapes.
        "/patients/p-1%2Fnotes",
        "/patients/p-1%2fnotes",
        "/patients/..%2Fadmin",
        "/patients/p-1%5Cnotes",
        "/patients/p-1%5c..%5cp-2",
        "/patients/p-1%3Bx",
        "/patients/p-1%00",
        "/patients/p-1%00.json",
        "/patients/p-1%0a",
        "/patients/p-1%0d%0aX-Injected:%201",
        "/patients/p-1%7F",
        // Bad and double encoding.
        "/patients/%ZZ",
        "/patients/%2",
        "/patients/%",
        "/patients/%u002e%u002e",
        "/patients/%%32%65%%32%65",
        "/patients/%252e%252e/admin",
        "/patients/%252F",
        "/patients/p-1%25",
        // Escapes that are not UTF-8 (overlong `.` and `/`), and Unicode look-alikes.
        "/patients/%C0%AE%C0%AE/admin",
        "/patients/%C0%AF",
        "/patients/%E0%80%AE",
        "/patients/%FF",
        "/patients/%EF%BC%8E%EF%BC%8E/admin",
        "/patients/p-1%EF%BC%8Fnotes",
        "/patients/%E2%80%A5/admin",
        "/patients/p-1%EF%BC%BCnotes",
        "/patients/p-1%E2%88%95notes",
        // Matrix parameters.
        "/patients/p-1;jsessionid=abc",
        "/patients;x=1/p-1",
        "/patients/p-1;/notes",
        // Raw backslashes.
        "/patients\\p-1",
        // Other request-target forms.
        "http://127.0.0.1/patients/p-1",
        "https://127.0.0.1/patients/p-1",
        "HTTP://127.0.0.1:80/patients/p-1",
        "http://evil.test/patients/p-1",
        "//127.0.0.1/patients/p-1",
    ]
    .into_iter()
    .map(|t| get(t, Want::bad_path()))
    .collect();
    cases.push(Case::new(
        "OPTIONS *",
        request_head("OPTIONS", "*", &[("Authorization", &a)]),
        Want::bad_path(),
    ));
    cases.push(Case::new(
        "CONNECT authority-form",
        request_head("CONNECT", "127.0.0.1:443", &[("Authorization", &a)]),
        Want::bad_path(),
    ));
    // What no route names: method and path case (matching is case-sensitive).
    for (method, target) in [
        ("get", "/patients/p-1"),
        ("GeT", "/patients/p-1"),
        ("post", "/patients/p-1/notes"),
        ("DELETE", "/patients/p-1"),
        ("PATCH", "/patients/p-1"),
        ("GET", "/PATIENTS/p-1"),
        ("GET", "/patients/p-1/NOTES"),
        ("GET", "/patients/p-1/notes/extra"),
    ] {
        cases.push(Case::new(
            format!("{method} {target}"),
            request_head(method, target, &[("Authorization", &a)]),
            Want::refused(403, "no_route"),
        ));
    }
    // Host: exactly one (RFC 9112 §3.2).
    cases.push(raw(
        "two Host headers",
        &format!(
            "GET /patients/p-1 HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.test\r\nAuthorization: {a}\r\nConnection: close\r\n\r\n"
        ),
        Want::refused(400, "bad_request: host"),
    ));
    cases.push(raw(
        "no Host on HTTP/1.1",
        &format!("GET /patients/p-1 HTTP/1.1\r\nAuthorization: {a}\r\nConnection: close\r\n\r\n"),
        Want::refused(400, "bad_request: host"),
    ));
    // Method and URL overrides.
    for (name, value) in [
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "PUT"),
        ("x-http-method-override", "GET"),
        ("X-Original-URL", "/patients/p-2"),
        ("X-Original-URI", "/patients/p-2"),
        ("X-Rewrite-URL", "/admin"),
        ("X-Override-URL", "/admin"),
    ] {
        cases.push(Case::get(
            format!("{name}: {value}"),
            "/patients/p-1",
            &[("Authorization", &a), (name, value)],
            Want::refused(400, "bad_request: override_header"),
        ));
    }
    cases.push(Case::new(
        "raw non-ASCII in the path",
        request_head("GET", "/patients/p-\u{e9}", &[("Authorization", &a)]),
        Want::bad_path(),
    ));
    // What hyper's parser refuses before there is a request: spaces and controls.
    for (name, target) in [
        ("a space in the path", "/patients/p 1"),
        ("a raw tab in the path", "/patients/p\t1"),
        ("a raw DEL in the path", "/patients/p\u{7f}1"),
    ] {
        cases.push(Case::new(
            name,
            request_head("GET", target, &[("Authorization", &a)]),
            Want::hyper(400),
        ));
    }
    eprintln!("{} hostile path cases", cases.len());
    assert_refused(fx, &cases).await;
}

/// What passes is forwarded byte for byte, and decided on exactly what is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_passes_is_forwarded_exactly_as_it_was_decided() {
    let fx = fixture().start().await;
    let a = auth();
    // (target sent, status, target the backend must see, audit resource)
    let cases = [
        (
            "/patients/p-1?x=/../y&z=%2e%2e",
            200,
            Some("/patients/p-1?x=/../y&z=%2e%2e"),
            r#"Clinic::Patient::"p-1""#,
        ),
        // Percent-encoded unreserved characters are the same path (RFC 3986 §6.2.2.2).
        (
            "/p%61tients/p%2D1",
            200,
            Some("/p%61tients/p%2D1"),
            r#"Clinic::Patient::"p-1""#,
        ),
        (
            "/patients/%70-1/notes",
            200,
            Some("/patients/%70-1/notes"),
            r#"Clinic::Patient::"p-1""#,
        ),
        // A fragment is dropped by the parser: decided and forwarded without it.
        (
            "/patients/p-1#frag",
            200,
            Some("/patients/p-1"),
            r#"Clinic::Patient::"p-1""#,
        ),
        // …so it cannot carry a traversal: this is a request for p-2, which dr-ada may not read.
        (
            "/patients/p-2#/../p-1",
            403,
            None,
            r#"Clinic::Patient::"p-2""#,
        ),
        // Case is not folded: `P-1` is another resource, which nobody knows (deny).
        ("/patients/P-1", 403, None, r#"Clinic::Patient::"P-1""#),
    ];
    let mut failures = Vec::new();
    for (target, status, _, _) in &cases {
        let resp = fx.raw("GET", target, &[("Authorization", &a)]).await;
        if resp.status != *status {
            failures.push(format!("{target}: status {}, want {status}", resp.status));
        }
    }
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let want_forwarded: Vec<&str> = cases.iter().filter_map(|c| c.2).collect();
    let got: Vec<&str> = forwarded.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(got, want_forwarded, "the backend saw other targets");
    assert_eq!(records.len(), cases.len(), "{records:#?}");
    for (i, (target, status, _, resource)) in cases.iter().enumerate() {
        let r = &records[i];
        assert_eq!(r["status"], *status, "{target}: {r}");
        assert_eq!(r["resource"], *resource, "{target}: {r}");
    }
    for f in &forwarded {
        let r = record_by_id(&records, f.header("x-wardgate-decision-id"));
        assert_eq!(r["decision"], "allow");
    }
}
