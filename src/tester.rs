//! `wardgate test`: policy test files run through the same route mapping, entity loading and
//! evaluation as live traffic; only the token's signature, expiry and audience go unchecked.
//!
//! ```yaml
//! cases:
//!   - name: a doctor reads a patient in their care team
//!     token: { sub: dr-ada, roles: [doctor], amr: [pwd, otp] }
//!     request: { method: GET, path: /patients/p-1, headers: { X-Break-Glass: "" } }
//!     expect: allow
//!     policies: [doctor-reads-care-team]      # optional: the determining policies, exactly
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::{Decision, PolicyEngine, RequestFacts};
use crate::routes::check_target;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    token: serde_json::Map<String, serde_json::Value>,
    request: CaseRequest,
    expect: Expect,
    #[serde(default)]
    policies: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseRequest {
    method: String,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    client_ip: Option<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
}

/// The outcome of a whole run.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    pub failed: usize,
    /// One line per failing case.
    pub failures: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("{}: cannot read: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", .path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Setup(String),
}

/// What one case was decided as (before comparing with `expect`).
struct Outcome {
    allowed: bool,
    reason: String,
    policies: Vec<String>,
    errors: Vec<String>,
}

/// The `*.yaml`/`*.yml` files under `paths` (folders are searched, not recursively), sorted.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, TestError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let rd = std::fs::read_dir(p).map_err(|source| TestError::Read {
                path: p.clone(),
                source,
            })?;
            let mut files: Vec<PathBuf> = rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|f| f.is_file() && is_case_file(f))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Runs every case of `files` against the config's policies.
pub async fn run(config: &Config, files: &[PathBuf]) -> Result<Report, TestError> {
    crate::install_crypto_provider();
    let metrics = Metrics::new();
    let resolver = match &config.entities_url {
        Some(url) => Some(
            crate::policy::EntityResolver::new(
                url.clone(),
                config.limits.entity_cache_entries,
                config.limits.entity_cache_ttl,
                config.limits.entity_fetch_timeout,
                metrics.clone(),
            )
            .map_err(|e| TestError::Setup(e.to_string()))?,
        ),
        None => None,
    };
    let (engine, _) = PolicyEngine::new(
        config.policies.clone(),
        config.routes.clone(),
        resolver,
        metrics.clone(),
    )
    .map_err(|e| TestError::Setup(e.to_string()))?;
    let auth =
        Authenticator::new(&config.jwt, 1, metrics).map_err(|e| TestError::Setup(e.to_string()))?;
    let default_issuer = config
        .jwt
        .issuers
        .first()
        .map(|i| i.issuer.clone())
        .unwrap_or_default();

    let mut report = Report::default();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|source| TestError::Read {
            path: file.clone(),
            source,
        })?;
        let cases: CaseFile = serde_yaml::from_str(&text).map_err(|e| TestError::Parse {
            path: file.clone(),
            message: e.to_string(),
        })?;
        for (i, case) in cases.cases.into_iter().enumerate() {
            let outcome = decide(config, &engine, &auth, &default_issuer, &case).await;
            let mut problems = Vec::new();
            if outcome.allowed != (case.expect == Expect::Allow) {
                problems.push(format!(
                    "expected {}, got {} ({})",
                    if case.expect == Expect::Allow {
                        "allow"
                    } else {
                        "deny"
                    },
                    if outcome.allowed { "allow" } else { "deny" },
                    outcome.reason
                ));
            }
            if let Some(want) = &case.policies {
                let mut want = want.clone();
                want.sort();
                if want != outcome.policies {
                    problems.push(format!(
                        "expected determining policies {want:?}, got {:?}",
                        outcome.policies
                    ));
                }
            }
            if problems.is_empty() {
                report.passed += 1;
            } else {
                report.failed += 1;
                let mut line = format!(
                    "FAIL {} cases[{i}] `{}`: {}",
                    file.display(),
                    case.name,
                    problems.join("; ")
                );
                if !outcome.policies.is_empty() {
                    line.push_str(&format!("; determining: {:?}", outcome.policies));
                }
                if !outcome.errors.is_empty() {
                    line.push_str(&format!("; errors: {:?}", outcome.errors));
                }
                report.failures.push(line);
            }
        }
    }
    Ok(report)
}

async fn decide(
    config: &Config,
    engine: &PolicyEngine,
    auth: &Authenticator,
    default_issuer: &str,
    case: &Case,
) -> Outcome {
    let deny = |reason: &str| Outcome {
        allowed: false,
        reason: reason.to_owned(),
        policies: Vec::new(),
        errors: Vec::new(),
    };
    let mut claims = case.token.clone();
    claims
        .entry("iss")
        .or_insert_with(|| serde_json::Value::String(default_issuer.to_owned()));
    let principal = match auth.principal_from_claims(&serde_json::Value::Object(claims)) {
        Ok(p) => p,
        Err(e) => return deny(e.reason()),
    };
    let Ok(method) = case.request.method.parse::<http::Method>() else {
        return deny("bad_request: method");
    };
    let Ok(uri) = case.request.path.parse::<http::Uri>() else {
        return deny("bad_path");
    };
    let Ok(path) = check_target(&uri) else {
        return deny("bad_path");
    };
    let Some(route) = config.routes.find(&method, path) else {
        return deny("no_route");
    };
    let break_glass = case
        .request
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-break-glass"))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty());
    let facts = RequestFacts {
        method: method.as_str(),
        path,
        client_ip: case
            .request
            .client_ip
            .unwrap_or(IpAddr::from([127, 0, 0, 1])),
        break_glass_reason: break_glass,
    };
    let snap = engine.snapshot();
    let d: Decision = engine.decide(&snap, &principal, &route, &facts).await;
    Outcome {
        allowed: d.allowed(),
        reason: d.deny.map_or("allowed", |r| r.as_str()).to_owned(),
        policies: d.policies,
        errors: d.errors,
    }
}

/// The default test folder: `tests/` inside `policies.dir`.
pub fn default_paths(config: &Config) -> Vec<PathBuf> {
    vec![config.policies.dir.join("tests")]
}

/// Formats the closing line.
pub fn summary(r: &Report) -> String {
    format!("{} passed, {} failed", r.passed, r.failed)
}

/// Whether a path looks like a test file.
pub fn is_case_file(p: &Path) -> bool {
    p.extension().is_some_and(|x| x == "yaml" || x == "yml")
}
