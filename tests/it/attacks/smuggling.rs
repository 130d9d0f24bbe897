//! Request smuggling (issue 6, family 5, second half): framing that two HTTP/1.1 parsers could
//! read differently. wardgate never relays framing — hyper parses the client's message and the
//! upstream request is framed anew — so the property that matters is: after each case the
//! backend saw at most one request, never the request hidden in the body, and the next request
//! on the client's connection is either answered as itself or refused by a closed connection.
//!
//! Deliberately allowed (hyper's handling, RFC 9112 §6.1 and §6.3): `Content-Length` together
//! with `Transfer-Encoding: chunked` is read as chunked, `Content-Length` is dropped and the
//! connection is closed after the answer, so the tail is never read as a request; a repeated
//! `chunked` coding is read once. Both forward one re-framed request, asserted below. Bad
//! framing hyper's parser refuses (obfuscated `Transfer-Encoding`, `Content-Length: +6`,
//! differing lengths) is answered 400 by hyper and audited by wardgate.
//!
//! HTTP/2 is not served: a prior-knowledge preface gets no answer and is no request.

use std::time::Duration;

use super::{Case, Want};
use crate::support::hostile::Conn;
use crate::support::*;

const NOTES: &str = "/patients/p-1/notes";

/// The request hidden in a body; the backend must never see its target. It carries no token:
/// read as a request of its own it is a 401, so only a desync could get it forwarded.
fn smuggled(_auth: &str) -> String {
    "GET /patients/p-2?smuggled=1 HTTP/1.1\r\nHost: x\r\n\r\n".to_owned()
}

fn post(auth: &str, framing: &str, body: &str) -> String {
    format!("POST {NOTES} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: text/plain\r\n{framing}\r\n{body}")
}

struct Smuggle {
    name: &'static str,
    bytes: String,
    /// The first answer's status.
    status: u16,
    /// Who answers.
    by: By,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum By {
    /// Forwarded, re-framed (one POST reaches the backend).
    Backend,
    /// Refused by wardgate's head rules (400 problem+json, connection closed).
    Wardgate,
    /// Refused by hyper's parser (400, audited without a decision id).
    Hyper,
}

fn cases(auth: &str) -> Vec<Smuggle> {
    let tail = smuggled(auth);
    let s = |name, bytes, status, by_hyper: bool| Smuggle {
        name,
        bytes,
        status,
        by: if by_hyper { By::Hyper } else { By::Backend },
    };
    let w = |name, bytes| Smuggle {
        name,
        bytes,
        status: 400,
        by: By::Wardgate,
    };
    vec![
        s(
            "CL then TE",
            post(
                auth,
                "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                &format!("0\r\n\r\n{tail}"),
            ),
            200,
            false,
        ),
        s(
            "TE then CL",
            post(
                auth,
                "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                &format!("5c\r\n{}\r\n0\r\n\r\n{tail}", "x".repeat(0x5c)),
            ),
            200,
            false,
        ),
        w(
            "TE chunked twice",
            post(
                auth,
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                &format!("0\r\n\r\n{tail}"),
            ),
        ),
        w(
            "TE chunked, chunked",
            post(
                auth,
                "Transfer-Encoding: chunked, chunked\r\n",
                &format!("0\r\n\r\n{tail}"),
            ),
        ),
        w(
            "TE gzip, chunked",
            post(
                auth,
                "Transfer-Encoding: gzip, chunked\r\n",
                &format!("0\r\n\r\n{tail}"),
            ),
        ),
        s(
            "TE xchunked with CL",
            post(
                auth,
                "Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n",
                &format!("0\r\n\r\n{tail}"),
            ),
            400,
            true,
        ),
        s(
            "TE chunked, identity",
            post(
                auth,
                "Transfer-Encoding: chunked, identity\r\n",
                &format!("0\r\n\r\n{tail}"),
            ),
            400,
            true,
        ),
        s(
            "TE identity with CL",
            post(
                auth,
                "Transfer-Encoding: identity\r\nContent-Length: 5\r\n",
                &format!("0\r\n\r\n{tail}"),
            ),
            400,
            true,
        ),
        s(
            "TE with a space before the colon",
            post(
                auth,
                "Transfer-Encoding : chunked\r\nContent-Length: 5\r\n",
                &format!("0\r\n\r\n{tail}"),
            ),
            400,
            true,
        ),
        s(
            "TE folded onto a continuation line",
            post(
                auth,
                "Transfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n",
                &format!("0\r\n\r\n{tail}"),
            ),
            400,
            true,
        ),
        s(
            "TE with a vertical tab",
            post(
                auth,
                "Transfer-Encoding:\u{b}chunked\r\nContent-Length: 5\r\n",
                &format!("0\r\n\r\n{tail}"),
            ),
            400,
            true,
        ),
        s(
            "TE on HTTP/1.0",
            post(
                auth,
                "Transfer-Encoding: chunked\r\n",
                &format!("0\r\n\r\n{tail}"),
            )
            .replacen("HTTP/1.1", "HTTP/1.0", 1),
            400,
            true,
        ),
        s(
            "Content-Length: +6",
            post(auth, "Content-Length: +6\r\n", &format!("abcdef{tail}")),
            400,
            true,
        ),
        s(
            "Content-Length: -1",
            post(auth, "Content-Length: -1\r\n", &format!("abcdef{tail}")),
            400,
            true,
        ),
        s(
            "Content-Length in hex",
            post(auth, "Content-Length: 0x6\r\n", &format!("abcdef{tail}")),
            400,
            true,
        ),
        s(
            "Content-Length: 6, 6",
            post(auth, "Content-Length: 6, 6\r\n", &format!("abcdef{tail}")),
            400,
            true,
        ),
        s(
            "two differing Content-Lengths",
            post(
                auth,
                "Content-Length: 6\r\nContent-Length: 7\r\n",
                &format!("abcdefg{tail}"),
            ),
            400,
            true,
        ),
        s(
            "Content-Length over u64",
            post(
                auth,
                "Content-Length: 18446744073709551616\r\n",
                &format!("abcdef{tail}"),
            ),
            400,
            true,
        ),
        s(
            "a header without a colon",
            post(
                auth,
                "Transfer-Encoding chunked\r\n",
                &format!("0\r\n\r\n{tail}"),
            ),
            400,
            true,
        ),
        s(
            "NUL in a header value",
            post(
                auth,
                "Content-Length: 6\r\nX-A: a\u{0}b\r\n",
                &format!("abcdef{tail}"),
            ),
            400,
            true,
        ),
    ]
}

/// Body framing errors surface while the (allowed) request is already on its way: the backend
/// may see the head once, never a second request, and the client gets a 5xx or a cut.
fn body_cases(auth: &str) -> Vec<(&'static str, String)> {
    let tail = smuggled(auth);
    vec![
        (
            "chunk size over 64 bits",
            post(
                auth,
                "Transfer-Encoding: chunked\r\n",
                &format!("FFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n{tail}"),
            ),
        ),
        (
            "chunk lines ending in a bare LF",
            post(
                auth,
                "Transfer-Encoding: chunked\r\n",
                &format!("3\nabc\n0\n\n{tail}"),
            ),
        ),
        (
            "chunk size with a plus sign",
            post(
                auth,
                "Transfer-Encoding: chunked\r\n",
                &format!("+3\r\nabc\r\n0\r\n\r\n{tail}"),
            ),
        ),
        (
            "chunk data longer than its size",
            post(
                auth,
                "Transfer-Encoding: chunked\r\n",
                &format!("3\r\nabcdef\r\n0\r\n\r\n{tail}"),
            ),
        ),
    ]
}

/// Sends `bytes`, reads the first answer, then tries a follow-up request on the same connection.
/// Returns the first answer's status (None: closed) and the follow-up's (None: closed).
async fn with_follow_up(
    addr: std::net::SocketAddr,
    bytes: &[u8],
    follow_up: &str,
) -> (Option<u16>, Option<u16>) {
    let mut c = Conn::open(addr).await;
    c.write(bytes).await;
    let first = c.try_read_response(false).await.map(|r| r.status);
    if first.is_none() || !c.write(follow_up.as_bytes()).await {
        return (first, None);
    }
    let second = c.try_read_response(false).await.map(|r| r.status);
    (first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggled_requests_never_reach_the_backend() {
    let fx = fixture().start().await;
    let auth = format!(
        "Bearer {}",
        token_amr("dr-ada", &["doctor"], &["pwd", "otp"])
    );
    let all = cases(&auth);
    let mut failures = Vec::new();
    let mut follow_ups_answered = 0;
    for (i, case) in all.iter().enumerate() {
        let before = fx.backend().forwarded().len();
        let follow_up = format!(
            "GET /patients/p-1?follow-up={i} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
        );
        let (first, second) = with_follow_up(fx.proxy, case.bytes.as_bytes(), &follow_up).await;
        if first != Some(case.status) {
            failures.push(format!(
                "{}: first answer {first:?}, want {}",
                case.name, case.status
            ));
        }
        let seen: Vec<String> = fx.backend().forwarded()[before..]
            .iter()
            .map(|r| r.target.clone())
            .collect();
        let want_posts = usize::from(case.by == By::Backend);
        let posts = seen.iter().filter(|t| *t == NOTES).count();
        if posts != want_posts {
            failures.push(format!(
                "{}: backend saw {posts} POSTs, want {want_posts}: {seen:?}",
                case.name
            ));
        }
        if seen.iter().any(|t| t.contains("smuggled")) {
            failures.push(format!(
                "{}: the smuggled request reached the backend: {seen:?}",
                case.name
            ));
        }
        match second {
            None => {}
            Some(200) => {
                follow_ups_answered += 1;
                if !seen
                    .iter()
                    .any(|t| *t == format!("/patients/p-1?follow-up={i}"))
                {
                    failures.push(format!(
                        "{}: a 200 for the follow-up, but the backend saw {seen:?}",
                        case.name
                    ));
                }
            }
            Some(s) => failures.push(format!("{}: the follow-up got {s}", case.name)),
        }
    }
    eprintln!("{follow_ups_answered} follow-ups answered on the same connection, the rest closed");
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // One record per message: each forwarded request and each message hyper refused.
    let by = |b: By| all.iter().filter(|c| c.by == b).count();
    // A hidden request that is read at all is read as a request of its own: a 401.
    let hidden = records
        .iter()
        .filter(|r| r["path"] == "/patients/p-2")
        .inspect(|r| assert_eq!(r["status"], 401, "{r}"))
        .count();
    assert_eq!(
        records.len(),
        forwarded.len() + by(By::Hyper) + by(By::Wardgate) + hidden,
        "{records:#?}"
    );
    assert_eq!(
        records
            .iter()
            .filter(|r| r["reason"] == "bad_request: unparseable")
            .count(),
        by(By::Hyper)
    );
    assert_eq!(
        records
            .iter()
            .filter(|r| r["reason"] == "bad_request: transfer_encoding")
            .count(),
        by(By::Wardgate)
    );
    for f in &forwarded {
        if f.target == NOTES {
            // Re-framed: the backend got the chunked-decoded body, never the smuggled tail.
            assert!(
                f.body_len < 0x5d,
                "{} body bytes reached the backend",
                f.body_len
            );
        }
        record_by_id(&records, f.header("x-wardgate-decision-id"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_chunked_bodies_reach_the_backend_at_most_once() {
    let fx = fixture()
        .set("limits", serde_json::json!({ "upstream_timeout_ms": 3000 }))
        .start()
        .await;
    let auth = format!(
        "Bearer {}",
        token_amr("dr-ada", &["doctor"], &["pwd", "otp"])
    );
    let mut failures = Vec::new();
    for (name, bytes) in body_cases(&auth) {
        let before = fx.backend().forwarded().len();
        let mut c = Conn::open(fx.proxy).await;
        c.write(bytes.as_bytes()).await;
        let first = c.try_read_response(false).await.map(|r| r.status);
        if matches!(first, Some(s) if s < 500) && first != Some(200) {
            failures.push(format!("{name}: answer {first:?}"));
        }
        // The connection does not go on to read the tail as a request.
        let _ = c.closed_within(Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let seen: Vec<String> = fx.backend().forwarded()[before..]
            .iter()
            .map(|r| r.target.clone())
            .collect();
        if seen.len() > 1 || seen.iter().any(|t| t.contains("smuggled")) {
            failures.push(format!("{name}: the backend saw {seen:?}"));
        }
    }
    let (records, _) = fx.finish().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(records.len(), body_cases(&auth).len(), "{records:#?}");
    for r in &records {
        assert_eq!(r["decision"], "allow", "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_not_served() {
    let fx = fixture().start().await;
    let auth = format!("Bearer {}", token("dr-ada", &["doctor"]));
    // Prior knowledge: the connection preface, then a SETTINGS frame.
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let answer = crate::support::hostile::try_send(fx.proxy, &preface).await;
    assert!(
        answer.as_ref().is_none_or(|r| r.status >= 400),
        "an HTTP/2 preface got {answer:?}"
    );
    // h2c upgrade: served as HTTP/1.1, the upgrade headers are hop-by-hop and dropped.
    let cases = [Case::get(
        "h2c upgrade",
        "/patients/p-1",
        &[
            ("Authorization", &auth),
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ],
        Want::refused(200, ""),
    )];
    let responses = super::send_all(fx.proxy, &cases).await;
    assert_eq!(responses[0].as_ref().map(|r| r.status), Some(200));
    // Normal traffic is served after both.
    let ok = fx
        .get("/patients/p-1", &token("dr-ada", &["doctor"]))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert_eq!(forwarded.len(), 2);
    for f in &forwarded {
        assert!(f.headers.get("upgrade").is_none() && f.headers.get("http2-settings").is_none());
    }
    // The preface is no request: only the two forwarded requests are recorded.
    assert_eq!(records.len(), 2, "{records:#?}");
}
