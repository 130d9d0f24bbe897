//! Decision time against the size of the policy set: the shipped clinic policies plus N − 9
//! role-scoped permits (`principal in Clinic::Role::"roleI"`, one action each, a `when` clause),
//! the shape the shared performance notes measured unindexed (16 µs at 10 policies, 12.8 ms at
//! 10,000). The request is a doctor reading a patient in her care team; the decision cache is
//! not involved (`PolicyEngine::decide`), so each iteration builds the entities, validates the
//! request and evaluates the slice the index hands out.
//!
//! `cargo bench --bench decision`
#![allow(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a benchmark whose set-up fails should stop loudly"
)]

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use wardgate::auth::Authenticator;
use wardgate::config::Config;
use wardgate::metrics::Metrics;
use wardgate::policy::{PolicyEngine, RequestFacts};

const ACTIONS: [&str; 4] = ["ListPatients", "ReadPatient", "ReadNotes", "WriteNote"];

fn setup(dir: &Path, n: usize) -> Config {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).expect("mkdir");
    for f in ["clinic.cedarschema", "clinic.cedar", "entities.json"] {
        std::fs::copy(shipped.join(f), policies.join(f)).expect("copy");
    }
    let mut extra = String::new();
    for i in 0..n.saturating_sub(9) {
        let action = ACTIONS[i % ACTIONS.len()];
        let resource = if action == "ListPatients" {
            "Clinic::PatientList"
        } else {
            "Clinic::Patient"
        };
        let when = if action == "ListPatients" {
            "true".to_owned()
        } else {
            format!("resource.ward == \"ward-{i}\"")
        };
        extra.push_str(&format!(
            "@id(\"generated-{i}\")\npermit (principal in Clinic::Role::\"role{i}\", action == Clinic::Action::\"{action}\", resource is {resource}) when {{ {when} }};\n"
        ));
    }
    std::fs::write(policies.join("generated.cedar"), extra).expect("write");
    let yaml = r#"
listen: "127.0.0.1:0"
upstream: "http://127.0.0.1:9"
jwt:
  issuers:
    - { issuer: "https://idp.bench", audiences: ["records-api"], jwks_file: jwks.json, algorithms: ["RS256"] }
  attributes: { department: department, patient_id: patient_id }
policies: { dir: policies, schema: policies/clinic.cedarschema, entities: policies/entities.json }
routes:
  - { method: GET, path: "/patients/{id}", action: ReadPatient, resource: { type: Patient, id: "{id}" } }
audit: { sinks: [ { type: stdout } ] }
"#;
    let path = dir.join("wardgate.yaml");
    std::fs::write(&path, yaml).expect("write config");
    Config::load(&path).expect("config")
}

fn decisions(c: &mut Criterion) {
    wardgate::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("decision");
    for n in [10usize, 100, 1_000, 10_000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = setup(dir.path(), n);
        let (engine, _) = PolicyEngine::new(
            config.policies.clone(),
            config.routes.clone(),
            None,
            Metrics::new(),
        )
        .expect("policies load");
        let snap = engine.snapshot();
        assert_eq!(snap.policy_count, n);
        let auth = Authenticator::new(&config.jwt, 1, Metrics::new()).expect("auth");
        let principal = auth
            .principal_from_claims(&serde_json::json!({"iss": "https://idp.bench", "sub": "dr-ada", "roles": ["doctor"]}))
            .expect("principal");
        let route = config
            .routes
            .find(&http::Method::GET, "/patients/p-1")
            .expect("route");
        let facts = RequestFacts {
            method: "GET",
            path: "/patients/p-1",
            client_ip: IpAddr::from([127, 0, 0, 1]),
            break_glass_reason: None,
        };
        let d = rt.block_on(engine.decide(&snap, &principal, &route, &facts));
        assert!(d.allowed(), "{d:?}");
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| black_box(rt.block_on(engine.decide(&snap, &principal, &route, &facts))))
        });
    }
    group.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
