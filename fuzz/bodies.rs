//! The fuzz target bodies, shared by the cargo-fuzz targets in `fuzz_targets/` and by the
//! corpus run in `cargo test` (`tests/it/attacks/fuzz_corpus.rs`). Each takes arbitrary bytes,
//! must never panic on its own, and asserts the invariants wardgate's security rests on.

use std::path::Path;
use std::sync::OnceLock;

use wardgate::auth::jwks::KeySet;
use wardgate::auth::jwt::{preparse, verify_jws};
use wardgate::config::Config;
use wardgate::routes::{check_target, RawRoute, RouteTable};

fn routes() -> &'static RouteTable {
    static ROUTES: OnceLock<RouteTable> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let raw: Vec<RawRoute> = serde_yaml::from_str(
            r#"
- { method: GET,  path: "/patients",                action: ListPatients, resource: { type: PatientList, id: "all" } }
- { method: GET,  path: "/patients/{id}",           action: ReadPatient,  resource: { type: Patient, id: "{id}" } }
- { method: GET,  path: "/patients/{id}/notes",     action: ReadNotes,    resource: { type: Patient, id: "{id}" } }
- { method: POST, path: "/patients/{id}/notes",     action: WriteNote,    resource: { type: Patient, id: "{id}" } }
"#,
        )
        .expect("route yaml");
        RouteTable::compile(raw).expect("routes compile")
    })
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn decode(seg: &str) -> Vec<u8> {
    let b = seg.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let v = hex(b[i + 1]).expect("checked escape") << 4
                | hex(b[i + 2]).expect("checked escape");
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The path canonicalizer: whatever it accepts is a path no backend can read differently.
pub fn path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = text.parse::<http::Uri>() else {
        return;
    };
    let Ok(p) = check_target(&uri) else {
        return;
    };
    assert_eq!(p, uri.path(), "the authorized path is the forwarded path");
    assert!(p.starts_with('/'), "{p:?}");
    if p != "/" {
        for seg in p.split('/').skip(1) {
            assert!(!seg.is_empty(), "empty segment in {p:?}");
            assert!(!seg.contains(['\\', ';']), "{p:?}");
            let d = decode(seg);
            assert!(d != b"." && d != b"..", "dot segment in {p:?}");
            assert!(
                !d.iter()
                    .any(|c| matches!(c, b'/' | b'\\' | b';' | b'%' | 0..=0x1f | 0x7f)),
                "a separator or control hides in {p:?}"
            );
            let s = String::from_utf8(d).expect("decoded segments are UTF-8");
            assert!(
                !s.ends_with('.') && !s.starts_with(' ') && !s.ends_with(' '),
                "{p:?}"
            );
        }
    }
    for m in [http::Method::GET, http::Method::HEAD, http::Method::POST] {
        if let Some(found) = routes().find(&m, p) {
            let segs: Vec<&str> = p.split('/').skip(1).collect();
            if found.resource_type == "Patient" {
                let id = String::from_utf8(decode(segs[1])).expect("utf-8");
                assert_eq!(found.resource_id, id, "{p:?}");
            }
        }
    }
}

fn keys() -> &'static (KeySet, Vec<String>) {
    static KEYS: OnceLock<(KeySet, Vec<String>)> = OnceLock::new();
    KEYS.get_or_init(|| {
        // Public keys from the Wycheproof JOSE vectors (RS256_2048 and kid-ec-sign).
        let doc = r#"{"keys":[
          {"kty":"RSA","alg":"RS256","kid":"RS256_2048","use":"sig",
           "n":"orRRoH0KpfluRVZxUTVQUUqKW0YuvvcXCU-h_ugiJOY3-XRtP3yv0xh42AMltu9aFwD2WQO0aUKeidbqyIRQl7WrOTGJ25JRLtincRoSU_rNIPecFegkfz0-QuRuSMmOJUov6XZTE6A-_48X4aApOXofomqNzib0kO2BKZYV2YFMItphBCjgnH2WWFlCZvXAIdD87KCNlFoSvoLeTR7Oa0wDFFtdNJXU7VQR64eNrwX9evw-Ca2g8RJkIvWQl1oZaYFvSGmLy7obTZyuedRg2Pn4Xnl1AF2bwixOWsD3waRdElaaYoB9O5oC5aUw53MGb0U9H1tMLpz3ggKD90K51Q",
           "e":"AQAB"},
          {"kty":"EC","crv":"P-256","alg":"ES256","kid":"kid-ec-sign","use":"sig",
           "x":"04N0xi21hshyvBp7I167sbE_bXqyqkAPfefdklMO7wY","y":"UI8exy-C06a7DUnjIdENkxeFtHM4-l_41LqEw9nVgmw"}
        ]}"#;
        let set = KeySet::parse(doc.as_bytes(), "fuzz").expect("fuzz key set");
        let algs = wardgate::config::SUPPORTED_ALGORITHMS
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
        (set, algs)
    })
}

/// The token pre-parser and the key-set verification behind it: arbitrary bytes never panic,
/// and whatever passes the pre-parser or verifies obeys the header and key rules.
pub fn token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parts) = preparse(text) {
        assert!(text.len() <= wardgate::auth::MAX_TOKEN_BYTES);
        assert!(!parts.kid.is_empty());
        assert_eq!(text.split('.').count(), 3);
        let _ = parts.claims();
        let _ = parts.payload();
    }
    // Seeds include genuine signatures: whatever verifies must have passed every rule.
    let (set, algs) = keys();
    if verify_jws(set, algs, text).is_ok() {
        let parts = preparse(text).expect("a verified token pre-parses");
        assert!(
            set.get(&parts.kid).is_some(),
            "verified under an unknown kid"
        );
        assert!(
            algs.contains(&parts.alg),
            "verified with alg {:?}",
            parts.alg
        );
    }
}

/// Config loading: any text gives a config or a list of errors, never a panic, and the
/// errors render.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_yaml_str(text, Path::new("/nonexistent/wardgate.yaml")) {
        Ok(_) => {}
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
