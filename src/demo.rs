//! `wardgate demo`: everything in one process, no other file or program needed.
//!
//! A throw-away P-256 signing key and its JWKS, a small records backend on loopback, the
//! shipped clinic policies (compiled into the binary), and wardgate in front. Prints
//! ready-to-paste `curl` lines with a token per demo role and where the audit log is.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::EncodePrivateKey;

use crate::config::Config;

const SCHEMA: &str = include_str!("../policies/clinic.cedarschema");
const POLICIES: &str = include_str!("../policies/clinic.cedar");
const ENTITIES: &str = include_str!("../policies/entities.json");
const ISSUER: &str = "https://idp.demo.wardgate";
const KID: &str = "demo-key-1";

/// A demo identity and what to try with it.
struct Persona {
    what: &'static str,
    sub: &'static str,
    roles: &'static [&'static str],
    extra: serde_json::Value,
    method: &'static str,
    path: &'static str,
    header: Option<&'static str>,
}

fn personas() -> Vec<Persona> {
    use serde_json::json;
    vec![
        Persona {
            what: "a doctor reads a patient in her care team (allowed)",
            sub: "dr-ada",
            roles: &["doctor"],
            extra: json!({"amr": ["pwd", "otp"], "department": "cardiology"}),
            method: "GET",
            path: "/patients/p-1/notes",
            header: None,
        },
        Persona {
            what: "the same doctor reads a patient outside her care team (refused)",
            sub: "dr-ada",
            roles: &["doctor"],
            extra: json!({"amr": ["pwd", "otp"], "department": "cardiology"}),
            method: "GET",
            path: "/patients/p-2",
            header: None,
        },
        Persona {
            what: "break-glass: the doctor states an emergency reason (allowed, reason audited)",
            sub: "dr-ada",
            roles: &["doctor"],
            extra: json!({"amr": ["pwd", "otp"], "department": "cardiology"}),
            method: "GET",
            path: "/patients/p-2",
            header: Some("X-Break-Glass: unconscious patient in ER"),
        },
        Persona {
            what: "a nurse reads a patient in her ward (allowed)",
            sub: "nurse-joy",
            roles: &["nurse"],
            extra: json!({"department": "cardiology"}),
            method: "GET",
            path: "/patients/p-1",
            header: None,
        },
        Persona {
            what: "a receptionist reads clinical notes (refused)",
            sub: "rx-bob",
            roles: &["receptionist"],
            extra: json!({}),
            method: "GET",
            path: "/patients/p-1/notes",
            header: None,
        },
        Persona {
            what: "a patient reads their own record (allowed)",
            sub: "pat-carol",
            roles: &["patient"],
            extra: json!({"patient_id": "p-2"}),
            method: "GET",
            path: "/patients/p-2",
            header: None,
        },
    ]
}

/// Runs the demo until ctrl-c or SIGTERM.
pub async fn run() -> anyhow::Result<()> {
    crate::install_crypto_provider();
    let dir = demo_dir(std::process::id());
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies)
        .with_context(|| format!("cannot create `{}`", dir.display()))?;
    write(&policies.join("clinic.cedarschema"), SCHEMA)?;
    write(&policies.join("clinic.cedar"), POLICIES)?;
    write(&policies.join("entities.json"), ENTITIES)?;

    let secret = p256::SecretKey::random(&mut rand_core::OsRng);
    let point =
        p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), false);
    let (Some(x), Some(y)) = (point.x(), point.y()) else {
        anyhow::bail!("cannot encode the demo public key");
    };
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": KID,
        "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
    }]});
    write(&dir.join("jwks.json"), &jwks.to_string())?;
    let der = secret
        .to_pkcs8_der()
        .context("cannot encode the demo key")?;
    let signing = EncodingKey::from_ec_der(der.as_bytes());

    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let backend_addr = backend.local_addr()?;
    tokio::spawn(serve_backend(backend));

    let listen = free_or_any(8080);
    let admin = free_or_any(9901);
    let yaml = format!(
        r#"
listen: "{listen}"
admin_listen: "{admin}"
upstream: "http://{backend_addr}"
jwt:
  issuers:
    - issuer: "{ISSUER}"
      audiences: ["records-api"]
      jwks_file: jwks.json
      algorithms: ["ES256"]
  attributes:
    department: department
    patient_id: patient_id
policies:
  dir: policies
  schema: policies/clinic.cedarschema
  entities: policies/entities.json
routes:
  - {{ method: GET,  path: "/patients",            action: ListPatients, resource: {{ type: PatientList, id: "all" }} }}
  - {{ method: GET,  path: "/patients/{{id}}",       action: ReadPatient,  resource: {{ type: Patient, id: "{{id}}" }} }}
  - {{ method: GET,  path: "/patients/{{id}}/notes", action: ReadNotes,    resource: {{ type: Patient, id: "{{id}}" }} }}
  - {{ method: POST, path: "/patients/{{id}}/notes", action: WriteNote,    resource: {{ type: Patient, id: "{{id}}" }} }}
audit:
  sinks:
    - {{ type: file, path: audit.jsonl }}
"#
    );
    let config_path = dir.join("wardgate.yaml");
    write(&config_path, &yaml)?;
    let config = Config::load(&config_path)?;
    let running = crate::app::start(config).await?;
    let base = format!("http://{}", running.proxy_addr);

    let now = crate::auth::unix_now();
    println!("wardgate demo: sidecar {base}  →  demo records backend http://{backend_addr}");
    println!("  config and policies: {}", dir.display());
    println!(
        "  audit log:           {}",
        dir.join("audit.jsonl").display()
    );
    println!(
        "  metrics:             http://{}/metrics",
        running.admin_addr
    );
    println!();
    for p in personas() {
        let mut claims = serde_json::json!({
            "iss": ISSUER, "aud": "records-api", "sub": p.sub, "roles": p.roles,
            "iat": now, "exp": now + 12 * 3600,
        });
        if let (Some(c), Some(extra)) = (claims.as_object_mut(), p.extra.as_object()) {
            c.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(KID.to_owned());
        let token =
            jsonwebtoken::encode(&header, &claims, &signing).context("cannot sign a demo token")?;
        let extra = p.header.map(|h| format!(" -H '{h}'")).unwrap_or_default();
        println!("# {} — {} {:?}", p.what, p.sub, p.roles);
        println!(
            "curl -si -X {} {base}{}{extra} -H 'Authorization: Bearer {token}'",
            p.method, p.path
        );
        println!();
    }
    println!("# verify the audit trail afterwards:");
    println!(
        "cargo run --release -- audit verify {}",
        dir.join("audit.jsonl").display()
    );
    println!("\nctrl-c stops the demo.");

    tokio::signal::ctrl_c().await?;
    running.shutdown().await;
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write `{}`", path.display()))
}

/// `127.0.0.1:port` if it is free, else any free port.
fn free_or_any(port: u16) -> SocketAddr {
    let want = SocketAddr::from(([127, 0, 0, 1], port));
    match std::net::TcpListener::bind(want) {
        Ok(_) => want,
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
    }
}

/// The demo records backend: answers every path with a little JSON naming who asked.
async fn serve_backend(listener: tokio::net::TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                let who = req
                    .headers()
                    .get("x-wardgate-subject")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let body = serde_json::json!({
                    "backend": "demo records API",
                    "method": req.method().as_str(),
                    "path": req.uri().path(),
                    "served_to": who,
                });
                let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
                *resp.status_mut() = StatusCode::OK;
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                Ok::<_, Infallible>(resp)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Where the demo of process `pid` keeps its config, policies, key set and audit log.
pub fn demo_dir(pid: u32) -> PathBuf {
    std::env::temp_dir().join(format!("wardgate-demo-{pid}"))
}
