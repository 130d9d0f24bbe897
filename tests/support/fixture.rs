//! A wardgate under test: a temp dir with a copy of the shipped `policies/`, a `wardgate.yaml`
//! pointing at a real JWKS server and a real records backend, and wardgate itself, started
//! in-process with `wardgate::app::start` (or only prepared, for the CLI and child-process tests).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::keys::{self, AUDIENCE, ISSUER};
use super::raw::{self, RawResponse};
use super::servers::{Backend, JwksServer};
use super::{read_audit, wait_for_records};

/// Builds a fixture; every setting has the SPEC's default shape.
pub struct FixtureBuilder {
    overrides: Vec<(String, Option<Value>)>,
    files: Vec<(String, String)>,
    jwks: Value,
    jwks_down_at_start: bool,
    wait_ready: bool,
}

/// Starts a builder with the default config.
pub fn fixture() -> FixtureBuilder {
    FixtureBuilder {
        overrides: Vec::new(),
        files: Vec::new(),
        jwks: Value::Null,
        jwks_down_at_start: false,
        wait_ready: true,
    }
}

/// The config every test starts from. `{backend}` and `{jwks}` are filled in at build time.
pub fn base_config() -> Value {
    json!({
        "listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0",
        "upstream": "http://{backend}",
        "mode": "enforce",
        "trusted_proxies": [],
        "jwt": {
            "issuers": [{
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "jwks_url": "{jwks}",
                "algorithms": ["RS256", "ES256"]
            }],
            "leeway_seconds": 30,
            "roles_claim": "roles",
            "attributes": { "department": "department", "patient_id": "patient_id" }
        },
        "policies": {
            "dir": "policies",
            "schema": "policies/clinic.cedarschema",
            "entities": "policies/entities.json",
            "namespace": "Clinic"
        },
        "routes": [
            { "method": "GET",  "path": "/patients",            "action": "ListPatients", "resource": { "type": "PatientList", "id": "all" } },
            { "method": "GET",  "path": "/patients/{id}",       "action": "ReadPatient",  "resource": { "type": "Patient", "id": "{id}" } },
            { "method": "GET",  "path": "/patients/{id}/notes", "action": "ReadNotes",    "resource": { "type": "Patient", "id": "{id}" } },
            { "method": "POST", "path": "/patients/{id}/notes", "action": "WriteNote",    "resource": { "type": "Patient", "id": "{id}" } }
        ],
        "audit": { "sinks": [ { "type": "file", "path": "audit.jsonl" } ] }
    })
}

impl FixtureBuilder {
    /// Sets a dotted key (`limits.upstream_timeout_ms`, `jwt.issuers.0.algorithms`); string
    /// values may use `{backend}` (its `IP:PORT`) and `{jwks}` (the JWKS URL).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.overrides.push((key.to_owned(), Some(value.into())));
        self
    }

    /// Removes a dotted key.
    pub fn unset(mut self, key: &str) -> Self {
        self.overrides.push((key.to_owned(), None));
        self
    }

    /// Writes an extra file (path relative to the fixture dir), e.g. `policies/broken.cedar`.
    pub fn file(mut self, rel: &str, content: &str) -> Self {
        self.files.push((rel.to_owned(), content.to_owned()));
        self
    }

    /// Serves this JWKS document instead of [`keys::jwks`].
    pub fn jwks(mut self, doc: Value) -> Self {
        self.jwks = doc;
        self
    }

    /// The JWKS server's port is closed when wardgate starts (see [`Fixture::jwks`] to restart).
    pub fn jwks_down_at_start(mut self) -> Self {
        self.jwks_down_at_start = true;
        self.wait_ready = false;
        self
    }

    /// Starts wardgate without waiting for `/readyz` (for tests where it must stay 503).
    pub fn no_wait_ready(mut self) -> Self {
        self.wait_ready = false;
        self
    }

    /// Writes everything and starts the JWKS server and backend, but not wardgate.
    pub async fn prepare(self) -> Prepared {
        let dir = tempfile::tempdir().expect("temp dir");
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
            &dir.path().join("policies"),
        );
        for (rel, content) in &self.files {
            let p = dir.path().join(rel);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(&p, content).expect("write fixture file");
        }
        let jwks_doc = if self.jwks.is_null() {
            keys::jwks()
        } else {
            self.jwks
        };
        let jwks = JwksServer::start(jwks_doc).await;
        if self.jwks_down_at_start {
            jwks.stop();
        }
        let backend = Backend::start().await;
        let mut config = base_config();
        for (key, value) in self.overrides {
            set_dotted(&mut config, &key, value);
        }
        fill_placeholders(&mut config, &backend.addr().to_string(), &jwks.url());
        let config_path = dir.path().join("wardgate.yaml");
        let yaml = serde_yaml::to_string(&config).expect("config as yaml");
        std::fs::write(&config_path, yaml).expect("write wardgate.yaml");
        Prepared {
            audit_path: dir.path().join("audit.jsonl"),
            config_path,
            config,
            backend,
            jwks,
            dir,
            wait_ready: self.wait_ready,
        }
    }

    /// Prepares and starts wardgate in-process; waits for `/readyz` unless the JWKS is down.
    pub async fn start(self) -> Fixture {
        self.prepare().await.start().await
    }
}

/// Files and servers ready; wardgate not started.
pub struct Prepared {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub config: Value,
    pub audit_path: PathBuf,
    pub backend: Backend,
    pub jwks: JwksServer,
    wait_ready: bool,
}

impl Prepared {
    pub async fn start(self) -> Fixture {
        let config = wardgate::config::Config::load(&self.config_path)
            .unwrap_or_else(|e| panic!("fixture config refused:\n{e}"));
        let running = wardgate::app::start(config)
            .await
            .unwrap_or_else(|e| panic!("wardgate did not start: {e:#}"));
        let fx = Fixture {
            proxy: running.proxy_addr,
            admin: running.admin_addr,
            running: Some(running),
            client: client(),
            prepared: self,
        };
        if fx.prepared.wait_ready {
            fx.wait_ready().await;
        }
        fx
    }
}

/// A reqwest client that never uses a proxy from the environment.
pub fn client() -> reqwest::Client {
    super::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("reqwest client")
}

/// A running wardgate and everything around it.
pub struct Fixture {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub client: reqwest::Client,
    pub prepared: Prepared,
    running: Option<wardgate::app::Running>,
}

impl Fixture {
    pub fn backend(&self) -> &Backend {
        &self.prepared.backend
    }

    pub fn jwks(&self) -> &JwksServer {
        &self.prepared.jwks
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.proxy)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// `GET` with `Authorization: Bearer <token>`.
    pub fn get(&self, path_and_query: &str, token: &str) -> reqwest::RequestBuilder {
        self.client
            .get(self.url(path_and_query))
            .header("authorization", format!("Bearer {token}"))
    }

    /// `method` with `Authorization: Bearer <token>`.
    pub fn request(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path_and_query))
            .header("authorization", format!("Bearer {token}"))
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let resp = self
            .client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        resp.text().await.expect("metrics text")
    }

    /// Sends dr-ada's `GET /patients/p-1` in the background and returns once the backend has it
    /// (the backend should be slow, so that the request stays in flight).
    pub async fn request_in_flight(&self) -> tokio::task::JoinHandle<reqwest::Result<u16>> {
        let req = self.get("/patients/p-1", &super::token("dr-ada", &["doctor"]));
        let handle = tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()) });
        let reached = super::eventually(Duration::from_secs(3), || async {
            !self.backend().requests().is_empty()
        })
        .await;
        assert!(reached, "the request never reached the backend");
        handle
    }

    /// A raw request to the proxy listener (see [`raw::request`]).
    pub async fn raw(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> RawResponse {
        raw::request(self.proxy, method, target, headers).await
    }

    /// Polls `/readyz` until it answers 200 (10 s at most).
    pub async fn wait_ready(&self) {
        let url = self.admin_url("/readyz");
        let ok = super::eventually(Duration::from_secs(10), || async {
            matches!(self.client.get(&url).send().await, Ok(r) if r.status() == 200)
        })
        .await;
        assert!(ok, "wardgate's /readyz never answered 200");
    }

    /// The audit records once at least `n` are on disk (5 s at most; panics otherwise).
    pub async fn records(&self, n: usize) -> Vec<Value> {
        wait_for_records(&self.prepared.audit_path, n).await
    }

    /// The audit records on disk now.
    pub fn records_now(&self) -> Vec<Value> {
        read_audit(&self.prepared.audit_path)
    }

    /// Takes the running wardgate out, to shut it down by hand while requests are in flight.
    pub fn take_running(&mut self) -> wardgate::app::Running {
        self.running.take().expect("wardgate is running")
    }

    /// Shuts wardgate down (flushing the audit sinks) and returns every audit record.
    pub async fn finish(mut self) -> (Vec<Value>, Prepared) {
        if let Some(r) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(15), r.shutdown())
                .await
                .expect("Running::shutdown took longer than 15 s");
        }
        let records = read_audit(&self.prepared.audit_path);
        (records, self.prepared)
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir policies");
    for entry in std::fs::read_dir(from).expect("read policies/") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy policy file");
        }
    }
}

fn set_dotted(root: &mut Value, key: &str, value: Option<Value>) {
    let parts: Vec<&str> = key.split('.').collect();
    let (last, path) = parts.split_last().expect("non-empty key");
    let mut cur = root;
    for p in path {
        cur = match p.parse::<usize>() {
            Ok(i) if cur.is_array() => &mut cur[i],
            _ => {
                if cur.get(*p).is_none() {
                    cur[*p] = json!({});
                }
                &mut cur[*p]
            }
        };
    }
    match (value, last.parse::<usize>()) {
        (Some(v), Ok(i)) if cur.is_array() => cur[i] = v,
        (Some(v), _) => cur[*last] = v,
        (None, Ok(i)) if cur.is_array() => {
            cur.as_array_mut().expect("array").remove(i);
        }
        (None, _) => {
            cur.as_object_mut().expect("object").remove(*last);
        }
    }
}

fn fill_placeholders(v: &mut Value, backend: &str, jwks: &str) {
    match v {
        Value::String(s) => *s = s.replace("{backend}", backend).replace("{jwks}", jwks),
        Value::Array(a) => a
            .iter_mut()
            .for_each(|x| fill_placeholders(x, backend, jwks)),
        Value::Object(m) => m
            .values_mut()
            .for_each(|x| fill_placeholders(x, backend, jwks)),
        _ => {}
    }
}
