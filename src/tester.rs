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
use crate::policy::{Decision, EntityResolver, Explanation, PolicyEngine, RequestFacts};
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

/// The pieces a case needs: the same engine and token rules as `wardgate run`.
pub struct Harness<'c> {
    config: &'c Config,
    engine: PolicyEngine,
    auth: Authenticator,
    default_issuer: String,
}

impl<'c> Harness<'c> {
    pub fn new(config: &'c Config) -> Result<Self, TestError> {
        crate::install_crypto_provider();
        let setup = |e: &dyn std::fmt::Display| TestError::Setup(e.to_string());
        let metrics = Metrics::new();
        let resolver = EntityResolver::from_config(config, &metrics).map_err(|e| setup(&e))?;
        let (engine, _) = PolicyEngine::new(
            config.policies.clone(),
            config.routes.clone(),
            resolver,
            metrics.clone(),
        )
        .map_err(|e| setup(&e))?;
        let auth = Authenticator::new(&config.jwt, 1, metrics).map_err(|e| setup(&e))?;
        let default_issuer = config
            .jwt
            .issuers
            .first()
            .map(|i| i.issuer.clone())
            .unwrap_or_default();
        Ok(Self {
            config,
            engine,
            auth,
            default_issuer,
        })
    }
}

/// Runs every case of `files` against the config's policies.
pub async fn run(config: &Config, files: &[PathBuf]) -> Result<Report, TestError> {
    let h = Harness::new(config)?;
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
            let outcome = decide(&h, &case.token, &case.request, None).await;
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

/// Decides one request the way live traffic is decided; fills `explain` when given.
async fn decide(
    h: &Harness<'_>,
    token: &serde_json::Map<String, serde_json::Value>,
    request: &CaseRequest,
    explain: Option<&mut Explained>,
) -> Outcome {
    let deny = |reason: &str| Outcome {
        allowed: false,
        reason: reason.to_owned(),
        policies: Vec::new(),
        errors: Vec::new(),
    };
    let mut claims = token.clone();
    claims
        .entry("iss")
        .or_insert_with(|| serde_json::Value::String(h.default_issuer.clone()));
    let principal = match h
        .auth
        .principal_from_claims(&serde_json::Value::Object(claims))
    {
        Ok(p) => p,
        Err(e) => return deny(e.reason()),
    };
    let Ok(method) = request.method.parse::<http::Method>() else {
        return deny("bad_request: method");
    };
    let Ok(uri) = request.path.parse::<http::Uri>() else {
        return deny("bad_path");
    };
    let Ok(path) = check_target(&uri) else {
        return deny("bad_path");
    };
    let Some(route) = h.config.routes.find(&method, path) else {
        return deny("no_route");
    };
    let break_glass = request
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-break-glass"))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty());
    let facts = RequestFacts {
        method: method.as_str(),
        path,
        client_ip: request.client_ip.unwrap_or(IpAddr::from([127, 0, 0, 1])),
        break_glass_reason: break_glass,
    };
    let snap = h.engine.snapshot();
    let d: Decision = match explain {
        Some(out) => {
            let (d, ex) = h.engine.explain(&snap, &principal, &route, &facts).await;
            out.explanation = Some(ex);
            out.decision = Some(d.clone());
            d
        }
        None => h.engine.decide(&snap, &principal, &route, &facts).await,
    };
    Outcome {
        allowed: d.allowed(),
        reason: d.deny.map_or("allowed", |r| r.as_str()).to_owned(),
        policies: d.policies,
        errors: d.errors,
    }
}

/// What `wardgate explain` prints.
#[derive(Debug, Default)]
pub struct Explained {
    pub decision: Option<Decision>,
    pub explanation: Option<Explanation>,
}

/// `wardgate explain`: one request, the Cedar request built for it, the decision, the
/// determining policies and any evaluation errors, as text for a person.
pub async fn explain(
    config: &Config,
    claims: serde_json::Map<String, serde_json::Value>,
    method: &str,
    path: &str,
    headers: BTreeMap<String, String>,
) -> Result<String, TestError> {
    use std::fmt::Write as _;
    let h = Harness::new(config)?;
    let request = CaseRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        headers,
        client_ip: None,
    };
    let mut ex = Explained::default();
    let outcome = decide(&h, &claims, &request, Some(&mut ex)).await;
    let mut out = String::new();
    let _ = writeln!(out, "request:   {method} {path}");
    let _ = writeln!(
        out,
        "policies:  {} (version {})",
        h.engine.snapshot().policy_count,
        h.engine.snapshot().version
    );
    match (&ex.decision, &ex.explanation) {
        (Some(d), Some(e)) => {
            let _ = writeln!(out, "principal: {}", d.principal);
            let _ = writeln!(out, "action:    {}", d.action);
            let _ = writeln!(out, "resource:  {}", d.resource);
            let _ = writeln!(out, "context:   {}", e.context);
            let _ = writeln!(out, "entities:");
            for entity in e.entities.as_array().into_iter().flatten() {
                let is_action = entity
                    .pointer("/uid/type")
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|t| t.ends_with("Action"));
                if !is_action {
                    let _ = writeln!(out, "  {entity}");
                }
            }
        }
        _ => {
            let _ = writeln!(
                out,
                "(no Cedar request was built: the request was refused before evaluation)"
            );
        }
    }
    let _ = writeln!(
        out,
        "decision:  {} ({})",
        if outcome.allowed { "allow" } else { "deny" },
        outcome.reason
    );
    let _ = writeln!(
        out,
        "determining policies: {}",
        if outcome.policies.is_empty() {
            "none".to_owned()
        } else {
            outcome.policies.join(", ")
        }
    );
    if outcome.errors.is_empty() {
        let _ = writeln!(out, "errors:    none");
    } else {
        let _ = writeln!(out, "errors:");
        for e in &outcome.errors {
            let _ = writeln!(out, "  {e}");
        }
    }
    if !outcome.allowed
        && outcome.policies.is_empty()
        && outcome.errors.is_empty()
        && outcome.reason == "policy"
    {
        let _ = writeln!(
            out,
            "why:       no permit policy applies to this principal, action and resource"
        );
    }
    Ok(out)
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
fn is_case_file(p: &Path) -> bool {
    p.extension().is_some_and(|x| x == "yaml" || x == "yml")
}
