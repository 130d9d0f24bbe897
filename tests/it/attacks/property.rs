//! The path property (issue 6, family 8): for random request paths, either wardgate refuses the
//! path (400, nothing forwarded), or its decision on the path it forwards equals its decision on
//! that path after RFC 3986 §6.2.2 normalization (hex digits upper-cased, unreserved
//! characters decoded, dot segments removed) — so a backend that normalizes cannot be steered to
//! a resource other than the one authorized. An allowed path reaches the backend byte for byte.
//!
//! Paths are built from the route table's words, percent-encoded at random, mixed with the
//! hostile pieces of `paths.rs`; principals are a doctor, a nurse, a receptionist and a patient.

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::json;

use crate::support::fixture::Fixture;
use crate::support::hostile::try_send;
use crate::support::raw::request_head;
use crate::support::*;

const WORDS: &[&str] = &[
    "patients", "notes", "p-1", "p-2", "p-3", "P-1", "all", "x_~y",
];
const HOSTILE: &[&str] = &[
    ".",
    "..",
    "",
    "%2e",
    "%2E%2e",
    "%2f",
    "%5C",
    "%00",
    "%0a",
    "%zz",
    "%2",
    "%25",
    "%252e",
    "a;b",
    "%3B",
    "%C3%A9",
    "%C0%AE",
    "%EF%BC%8F",
    "p-1.",
    "%20p",
    "p%20",
    "\\",
    "%7E",
    "%5F",
];

/// A word with each character kept or percent-encoded (hex digits in either case).
fn encoded_word() -> impl Strategy<Value = String> {
    (
        prop::sample::select(WORDS),
        prop::collection::vec((any::<bool>(), any::<bool>()), 12),
    )
        .prop_map(|(w, flips)| {
            w.chars()
                .zip(flips.iter().cycle())
                .map(|(c, (enc, lower))| match (enc, lower) {
                    (true, true) => format!("%{:02x}", c as u32),
                    (true, false) => format!("%{:02X}", c as u32),
                    _ => c.to_string(),
                })
                .collect()
        })
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(WORDS).prop_map(str::to_owned),
        3 => encoded_word(),
        2 => prop::sample::select(HOSTILE).prop_map(str::to_owned),
    ]
}

fn path() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(segment(), 1..4),
        prop::sample::select(&["", "?x=1", "?a=%2e%2e/../b", "?access=1#frag"][..]),
    )
        .prop_map(|(segs, query)| format!("/{}{query}", segs.join("/")))
}

/// RFC 3986 §6.2.2: percent-encoding case and unreserved-character normalization, then
/// `remove_dot_segments` (§5.2.4). The query is kept as it is.
fn normalize(target: &str) -> String {
    let (path, query) = match target.find(['?', '#']) {
        Some(i) => target.split_at(i),
        None => (target, ""),
    };
    let b = path.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = &path[i + 1..i + 3];
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                let c = v as char;
                if c.is_ascii_alphanumeric() || "-._~".contains(c) {
                    out.push(c);
                } else {
                    out.push('%');
                    out.push_str(&hex.to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    format!("{}{query}", remove_dot_segments(&out))
}

fn remove_dot_segments(input: &str) -> String {
    let mut input = input.to_owned();
    let mut output = String::new();
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../") {
            input = rest.to_owned();
        } else if let Some(rest) = input.strip_prefix("./") {
            input = rest.to_owned();
        } else if input.starts_with("/./") {
            input = input[2..].to_owned();
        } else if input == "/." {
            input = "/".to_owned();
        } else if input.starts_with("/../") || input == "/.." {
            input = if input == "/.." {
                "/".to_owned()
            } else {
                input[3..].to_owned()
            };
            match output.rfind('/') {
                Some(i) => output.truncate(i),
                None => output.clear(),
            }
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input = input[end..].to_owned();
        }
    }
    output
}

/// One request; its status (`None`: closed unanswered) and what the backend got for it.
async fn ask(
    fx: &Fixture,
    auth: &str,
    target: &str,
    sent: &AtomicUsize,
) -> (Option<u16>, Vec<String>) {
    sent.fetch_add(1, Ordering::SeqCst);
    let before = fx.backend().forwarded().len();
    let r = try_send(
        fx.proxy,
        &request_head("GET", target, &[("Authorization", auth)]),
    )
    .await
    .map(|r| r.status);
    let seen = fx.backend().forwarded()[before..]
        .iter()
        .map(|r| r.target.clone())
        .collect();
    (r, seen)
}

#[test]
fn normalization_is_rfc_3986() {
    assert_eq!(normalize("/a/b/c/./../../g"), "/a/g");
    assert_eq!(normalize("/p%61tients/p%2d1"), "/patients/p-1");
    assert_eq!(normalize("/a/%2f/%7e"), "/a/%2F/~");
    assert_eq!(normalize("/a/..?x=/../y"), "/?x=/../y");
}

#[test]
fn the_decision_survives_rfc_3986_normalization() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fx = rt.block_on(fixture().start());
    let mut nurse = claims("nurse-joy", &["nurse"]);
    nurse.insert("department".into(), json!("cardiology"));
    let mut patient = claims("pat-carol", &["patient"]);
    patient.insert("patient_id".into(), json!("p-2"));
    let tokens = [
        token("dr-ada", &["doctor"]),
        rs256(&nurse),
        token("rx-bob", &["receptionist"]),
        rs256(&patient),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 192,
        failure_persistence: None,
        ..Config::default()
    });
    let sent = AtomicUsize::new(0);
    let counters = std::sync::Mutex::new((0usize, 0usize));
    let result = runner.run(&(path(), 0..tokens.len()), |(target, who)| {
        let auth = format!("Bearer {}", tokens[who]);
        rt.block_on(async {
            let (first, seen) = ask(&fx, &auth, &target, &sent).await;
            let Some(first) = first else {
                return Err(TestCaseError::fail(format!("{target}: no answer")));
            };
            if first == 400 {
                prop_assert!(seen.is_empty(), "{target}: refused but forwarded {seen:?}");
                counters.lock().unwrap().0 += 1;
                return Ok(());
            }
            prop_assert!(first == 200 || first == 403, "{target}: status {first}");
            if first == 200 {
                let without_fragment = target.split('#').next().unwrap_or_default();
                prop_assert_eq!(
                    seen.clone(),
                    vec![without_fragment.to_owned()],
                    "{}",
                    target
                );
            } else {
                prop_assert!(seen.is_empty(), "{target}: denied but forwarded {seen:?}");
            }
            let normalized = normalize(&target);
            let (second, _) = ask(&fx, &auth, &normalized, &sent).await;
            prop_assert_eq!(
                Some(first),
                second,
                "decision on `{}` differs from the one on its normalization `{}`",
                target,
                normalized
            );
            counters.lock().unwrap().1 += 1;
            Ok(())
        })
    });
    let (refused, compared) = *counters.lock().unwrap();
    let (records, _) = rt.block_on(fx.finish());
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!("{refused} paths refused, {compared} compared with their normalization");
    assert!(
        compared >= 40,
        "too few paths got past the path rules: {compared}"
    );
    assert!(refused >= 20, "too few hostile paths: {refused}");
    assert_eq!(
        records.len(),
        sent.load(Ordering::SeqCst),
        "one audit record per request"
    );
}
