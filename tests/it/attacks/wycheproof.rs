//! Wycheproof (issue 6, family 3): the C2SP/wycheproof JOSE vectors in
//! `tests/data/wycheproof/` (a copy of the shared test data; see its README) through wardgate's own key-selection and
//! signature layer: [`KeySet::parse`] builds the key set from each group's key exactly as a
//! fetched JWKS is built, and [`verify_jws`] applies the header rules, the algorithm allow-list
//! (here every algorithm wardgate supports), `kid` selection and the signature check — the same
//! functions live traffic goes through, minus the claim rules (the payloads are mostly `foo`).
//!
//! Every disagreement with a vector's label is listed in [`EXCEPTIONS`] with its reason, and the
//! test asserts that each listed case still behaves as listed — an exception that stops
//! disagreeing fails the test too, so the list cannot rot.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};
use wardgate::auth::jwks::KeySet;
use wardgate::auth::jwt::verify_jws;
use wardgate::config::SUPPORTED_ALGORITHMS;

/// Where wardgate deliberately answers otherwise than a vector's label, by file and `tcId`.
/// Every entry is a vector labelled `valid` that wardgate refuses: wardgate never accepts a
/// vector labelled `invalid`.
const EXCEPTIONS: &[(&str, u64, &str)] = &[
    // Symmetric keys are never verification keys in a sidecar (README: HS* and `oct` refused).
    ("sig", 1, "HS256: wardgate refuses symmetric (oct) keys"),
    (
        "sig",
        348,
        "HS256 (RFC 7520 figure 35): wardgate refuses symmetric keys",
    ),
    (
        "sig",
        352,
        "HS256 (RFC 7520 figure 35): wardgate refuses symmetric keys",
    ),
    ("sig", 357, "HS256: wardgate refuses symmetric keys"),
    ("sig", 358, "HS256: wardgate refuses symmetric keys"),
    ("sig", 359, "HS256: wardgate refuses symmetric keys"),
    ("sig", 376, "HS256: wardgate refuses symmetric keys"),
    ("sig", 377, "HS256: wardgate refuses symmetric keys"),
    ("key", 2, "HS256 key set: wardgate refuses symmetric keys"),
    (
        "key",
        13,
        "HS256 with a long key: wardgate refuses symmetric keys",
    ),
    (
        "key",
        14,
        "HS384 with a long key: wardgate refuses symmetric keys",
    ),
    (
        "key",
        15,
        "HS512 with a long key: wardgate refuses symmetric keys",
    ),
    // README: mislabelled — they contain `?`, which is not base64url; wardgate refuses.
    (
        "sig",
        372,
        "mislabelled valid: `?` in the header is not base64url",
    ),
    (
        "sig",
        373,
        "mislabelled valid: `?` in the payload is not base64url",
    ),
    // README: mislabelled — header PS384 against a key whose own `alg` is PS256.
    (
        "sig",
        346,
        "mislabelled valid: alg PS384 against a key whose alg is PS256",
    ),
    (
        "sig",
        350,
        "mislabelled valid: alg PS384 against a key whose alg is PS256",
    ),
    // ES512 / P-521 is not among the algorithms wardgate (jsonwebtoken) verifies.
    (
        "sig",
        347,
        "ES512 on P-521: not a supported algorithm; the key is left out",
    ),
    (
        "sig",
        351,
        "ES512 on P-521: not a supported algorithm; the key is left out",
    ),
];

/// Mislabelled `invalid` vectors (README) that wardgate refuses anyway, for the symmetric-key
/// reason: listed so the harness states it knows them.
const MISLABELLED_INVALID: &[u64] = &[367, 370];

fn vectors(file: &str) -> Value {
    let dir = std::env::var_os("WARDGATE_WYCHEPROOF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/wycheproof"));
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the Wycheproof vectors at {}: {e}",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("vectors are JSON")
}

/// A group's key as a JWKS document: its public key (or key set) when it has one, else the
/// private one (a symmetric key has no public form).
fn key_set_doc(group: &Value) -> Value {
    let key = group.get("public").unwrap_or(&group["private"]);
    if key.get("keys").is_some() {
        key.clone()
    } else {
        json!({ "keys": [key] })
    }
}

/// wardgate's verdict on one vector: `Ok` when it would accept the signature.
fn verdict(set: &Option<KeySet>, jws: &Value) -> Result<(), String> {
    let Some(set) = set else {
        return Err("no usable key in the group's key set".into());
    };
    let Some(compact) = jws.as_str() else {
        return Err("not a compact serialization".into());
    };
    let algs: Vec<String> = SUPPORTED_ALGORITHMS
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
    verify_jws(set, &algs, compact)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn run(file: &str, tag: &str) -> (usize, Vec<String>, BTreeMap<u64, String>) {
    let doc = vectors(file);
    let mut count = 0;
    let mut failures = Vec::new();
    let mut disagreements = BTreeMap::new();
    for group in doc["testGroups"].as_array().expect("testGroups") {
        let set = KeySet::parse(key_set_doc(group).to_string().as_bytes(), "wycheproof").ok();
        for t in group["tests"].as_array().expect("tests") {
            count += 1;
            let id = t["tcId"].as_u64().expect("tcId");
            let valid = t["result"] == "valid";
            let got = verdict(&set, &t["jws"]);
            if valid != got.is_ok() {
                let why = match &got {
                    Ok(()) => "accepted".to_owned(),
                    Err(e) => format!("refused: {e}"),
                };
                disagreements.insert(id, format!("{} ({why})", t["comment"]));
                if got.is_ok() {
                    failures.push(format!(
                        "{tag} tcId {id} `{}`: labelled invalid, wardgate ACCEPTS it",
                        t["comment"]
                    ));
                }
            }
        }
    }
    (count, failures, disagreements)
}

fn check(file: &str, tag: &str, expected_count: usize) {
    let (count, mut failures, disagreements) = run(file, tag);
    assert_eq!(count, expected_count, "{file}: number of vectors");
    let listed: BTreeMap<u64, &str> = EXCEPTIONS
        .iter()
        .filter(|(f, _, _)| *f == tag)
        .map(|(_, id, why)| (*id, *why))
        .collect();
    for (id, what) in &disagreements {
        if !listed.contains_key(id) {
            failures.push(format!("{tag} tcId {id}: unexplained disagreement: {what}"));
        }
    }
    for (id, why) in &listed {
        if !disagreements.contains_key(id) {
            failures.push(format!(
                "{tag} tcId {id}: listed as an exception ({why}) but agrees with its label now"
            ));
        }
    }
    eprintln!(
        "{file}: {count} vectors, {} agree, {} listed exceptions",
        count - disagreements.len(),
        disagreements.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn json_web_signature_vectors() {
    check("json_web_signature_test.json", "sig", 401);
    // The two mislabelled `invalid` vectors are refused (for the symmetric key).
    let doc = vectors("json_web_signature_test.json");
    for group in doc["testGroups"].as_array().unwrap() {
        let set = KeySet::parse(key_set_doc(group).to_string().as_bytes(), "wycheproof").ok();
        for t in group["tests"].as_array().unwrap() {
            if MISLABELLED_INVALID.contains(&t["tcId"].as_u64().unwrap()) {
                assert!(verdict(&set, &t["jws"]).is_err(), "tcId {}", t["tcId"]);
            }
        }
    }
}

#[test]
fn json_web_key_vectors() {
    check("json_web_key_test.json", "key", 26);
}

/// The valid asymmetric vectors are the ones wardgate must accept: a sanity floor, so that a
/// harness bug that refuses everything cannot pass as agreement.
#[test]
fn the_valid_asymmetric_vectors_are_accepted() {
    let doc = vectors("json_web_signature_test.json");
    let mut accepted = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        let set = KeySet::parse(key_set_doc(group).to_string().as_bytes(), "wycheproof").ok();
        for t in group["tests"].as_array().unwrap() {
            if verdict(&set, &t["jws"]).is_ok() {
                accepted += 1;
            }
        }
    }
    assert!(accepted >= 30, "only {accepted} vectors verified");
}
