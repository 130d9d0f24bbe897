//! The request path's pieces, one at a time: bearer-token verification without the
//! verified-token cache (a new token on every request) and with it (a steady client), the bare
//! signature check per algorithm, and the path rules plus route lookup.
//!
//! `cargo bench --bench request`
#![allow(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a benchmark whose set-up fails should stop loudly"
)]

#[path = "../tests/support/keys.rs"]
#[allow(
    dead_code,
    reason = "the benchmark uses a few of the test keys' helpers"
)]
mod keys;

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method, Uri};
use wardgate::auth::jwks::KeySet;
use wardgate::auth::Authenticator;
use wardgate::config::Config;
use wardgate::metrics::Metrics;
use wardgate::routes::check_target;

fn config(dir: &Path) -> Config {
    std::fs::write(dir.join("jwks.json"), keys::jwks().to_string()).expect("jwks");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let yaml = format!(
        r#"
listen: "127.0.0.1:0"
upstream: "http://127.0.0.1:9"
jwt:
  issuers:
    - {{ issuer: "{iss}", audiences: ["{aud}"], jwks_file: jwks.json, algorithms: ["RS256", "ES256"] }}
policies: {{ dir: "{p}", schema: "{p}/clinic.cedarschema", entities: "{p}/entities.json" }}
routes:
  - {{ method: GET,  path: "/patients",            action: ListPatients, resource: {{ type: PatientList, id: "all" }} }}
  - {{ method: GET,  path: "/patients/{{id}}",       action: ReadPatient,  resource: {{ type: Patient, id: "{{id}}" }} }}
  - {{ method: GET,  path: "/patients/{{id}}/notes", action: ReadNotes,    resource: {{ type: Patient, id: "{{id}}" }} }}
  - {{ method: POST, path: "/patients/{{id}}/notes", action: WriteNote,    resource: {{ type: Patient, id: "{{id}}" }} }}
audit: {{ sinks: [ {{ type: stdout }} ] }}
"#,
        iss = keys::ISSUER,
        aud = keys::AUDIENCE,
        p = shipped.display(),
    );
    let path = dir.join("wardgate.yaml");
    std::fs::write(&path, yaml).expect("write config");
    Config::load(&path).expect("config")
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    h
}

fn tokens(c: &mut Criterion) {
    wardgate::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let uncached = Authenticator::new(&cfg.jwt, 0, Metrics::new()).expect("authenticator");
    let cached = Authenticator::new(&cfg.jwt, 10_000, Metrics::new()).expect("authenticator");
    rt.block_on(uncached.start()).expect("keys");
    rt.block_on(cached.start()).expect("keys");
    let rs = bearer(&keys::token("dr-ada", &["doctor"]));
    let es = bearer(&keys::es256(&keys::claims("dr-ada", &["doctor"])));
    for h in [&rs, &es] {
        let p = rt
            .block_on(uncached.authenticate(h, None))
            .expect("verifies");
        assert_eq!(p.subject, "dr-ada");
    }

    let mut group = c.benchmark_group("token");
    group.bench_function("RS256 verify, no cache", |b| {
        b.iter(|| black_box(rt.block_on(uncached.authenticate(&rs, None)).is_ok()))
    });
    group.bench_function("ES256 verify, no cache", |b| {
        b.iter(|| black_box(rt.block_on(uncached.authenticate(&es, None)).is_ok()))
    });
    group.bench_function("RS256 cached", |b| {
        b.iter(|| black_box(rt.block_on(cached.authenticate(&rs, None)).is_ok()))
    });
    group.finish();

    // The signature alone, through the same key selection and header rules.
    let set = KeySet::parse(keys::jwks().to_string().as_bytes(), "bench").expect("key set");
    let algs = ["RS256".to_owned(), "ES256".to_owned()];
    let rs_token = keys::token("dr-ada", &["doctor"]);
    let es_token = keys::es256(&keys::claims("dr-ada", &["doctor"]));
    let mut group = c.benchmark_group("signature");
    for (name, token) in [("RS256", &rs_token), ("ES256", &es_token)] {
        assert!(wardgate::auth::jwt::verify_jws(&set, &algs, token).is_ok());
        group.bench_function(name, |b| {
            b.iter(|| black_box(wardgate::auth::jwt::verify_jws(&set, &algs, token).is_ok()))
        });
    }
    // For comparison: the same RS256 check through jsonwebtoken's RustCrypto provider, which
    // wardgate used before (it rebuilds the modulus' Montgomery form in portable code per call).
    let (message, signature) = rs_token.rsplit_once('.').expect("three parts");
    let rust_crypto_key = jsonwebtoken::DecodingKey::from_rsa_raw_components(
        &keys::keys().rsa_n,
        &keys::keys().rsa_e,
    );
    let verify_rust_crypto = || {
        jsonwebtoken::crypto::verify(
            signature,
            message.as_bytes(),
            &rust_crypto_key,
            jsonwebtoken::Algorithm::RS256,
        )
    };
    assert!(verify_rust_crypto().expect("verifies"));
    group.bench_function("RS256 via jsonwebtoken rust_crypto", |b| {
        b.iter(|| black_box(verify_rust_crypto().is_ok()))
    });
    group.finish();
}

fn routes(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let mut group = c.benchmark_group("route");
    for target in ["/patients/42", "/patients/42/notes?page=2", "/patients"] {
        let uri: Uri = target.parse().expect("uri");
        let path = check_target(&uri).expect("clean path");
        assert!(cfg.routes.find(&Method::GET, path).is_some());
        group.bench_function(target, |b| {
            b.iter(|| {
                let path = check_target(black_box(&uri)).expect("clean path");
                black_box(cfg.routes.find(&Method::GET, path).is_some())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, tokens, routes);
criterion_main!(benches);
