//! `wardgate.yaml`: raw serde structs (unknown keys refused) checked into a compiled [`Config`].
//!
//! Parsing happens in two stages. [`RawConfig`] mirrors the file; [`Config::from_yaml_str`] turns
//! it into typed values (socket addresses, URLs, algorithm sets, compiled routes, paths resolved
//! against the config file's folder) and reports every problem at once, each named by its dotted
//! key and the file it came from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::routes::{RouteTable, RouteTableError};

/// Signature algorithms wardgate accepts in an issuer's allow-list (asymmetric only: a shared
/// secret in a sidecar's config is a key every pod could forge tokens with).
pub const SUPPORTED_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Every problem found in one config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for e in &self.errors {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{}: {e}", self.file.display())?;
        }
        Ok(())
    }
}

/// One problem in a config file, named by its dotted key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read file: {0}")]
    Read(std::io::Error),
    #[error("{0}")]
    Syntax(String),
    #[error("`{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Stage one: the file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    #[serde(default = "default_admin_listen")]
    admin_listen: String,
    upstream: String,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default)]
    tls: Option<RawTls>,
    #[serde(default)]
    upstream_tls: Option<RawUpstreamTls>,
    jwt: RawJwt,
    policies: RawPolicies,
    #[serde(default)]
    entities_url: Option<String>,
    routes: Vec<crate::routes::RawRoute>,
    audit: crate::audit::config::RawAudit,
    #[serde(default)]
    limits: RawLimits,
}

fn default_admin_listen() -> String {
    "127.0.0.1:9901".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: PathBuf,
    key_file: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstreamTls {
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    issuers: Vec<RawIssuer>,
    #[serde(default = "default_leeway")]
    leeway_seconds: u64,
    #[serde(default = "default_roles_claim")]
    roles_claim: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    /// Principal attribute that receives the token's scopes (`scope`, else `scp`) as a
    /// `Set<String>`; off unless set, since the schema's User type must declare it.
    #[serde(default)]
    scopes_attribute: Option<String>,
}

fn default_leeway() -> u64 {
    30
}

fn default_roles_claim() -> String {
    "roles".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    issuer: String,
    audiences: Vec<String>,
    #[serde(default)]
    jwks_url: Option<String>,
    #[serde(default)]
    jwks_file: Option<PathBuf>,
    /// Find `jwks_uri` in `{issuer}/.well-known/openid-configuration` (OIDC discovery).
    #[serde(default)]
    discovery: bool,
    algorithms: Vec<String>,
    #[serde(default = "default_jwks_refresh")]
    jwks_refresh_seconds: u64,
}

fn default_jwks_refresh() -> u64 {
    300
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicies {
    dir: PathBuf,
    schema: PathBuf,
    #[serde(default)]
    entities: Option<PathBuf>,
    #[serde(default = "default_namespace")]
    namespace: String,
    /// A second policy folder evaluated beside the enforced one, never enforced.
    #[serde(default)]
    candidate_dir: Option<PathBuf>,
}

fn default_namespace() -> String {
    "Clinic".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default = "d_max_header_bytes")]
    max_header_bytes: usize,
    #[serde(default = "d_header_read_timeout_ms")]
    header_read_timeout_ms: u64,
    #[serde(default = "d_upstream_connect_timeout_ms")]
    upstream_connect_timeout_ms: u64,
    #[serde(default = "d_upstream_timeout_ms")]
    upstream_timeout_ms: u64,
    #[serde(default = "d_upstream_idle_timeout_ms")]
    upstream_idle_timeout_ms: u64,
    #[serde(default = "d_token_cache_entries")]
    token_cache_entries: u64,
    #[serde(default = "d_entity_cache_entries")]
    entity_cache_entries: u64,
    #[serde(default = "d_entity_cache_ttl_ms")]
    entity_cache_ttl_ms: u64,
    #[serde(default = "d_entity_fetch_timeout_ms")]
    entity_fetch_timeout_ms: u64,
    #[serde(default = "d_shutdown_grace_ms")]
    shutdown_grace_ms: u64,
    #[serde(default = "d_decision_cache_entries")]
    decision_cache_entries: u64,
}

fn d_max_header_bytes() -> usize {
    16 * 1024
}
fn d_header_read_timeout_ms() -> u64 {
    10_000
}
fn d_upstream_connect_timeout_ms() -> u64 {
    2_000
}
fn d_upstream_timeout_ms() -> u64 {
    30_000
}
fn d_upstream_idle_timeout_ms() -> u64 {
    60_000
}
fn d_token_cache_entries() -> u64 {
    10_000
}
fn d_entity_cache_entries() -> u64 {
    10_000
}
fn d_entity_cache_ttl_ms() -> u64 {
    5_000
}
fn d_entity_fetch_timeout_ms() -> u64 {
    2_000
}
fn d_shutdown_grace_ms() -> u64 {
    20_000
}
fn d_decision_cache_entries() -> u64 {
    10_000
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: d_max_header_bytes(),
            header_read_timeout_ms: d_header_read_timeout_ms(),
            upstream_connect_timeout_ms: d_upstream_connect_timeout_ms(),
            upstream_timeout_ms: d_upstream_timeout_ms(),
            upstream_idle_timeout_ms: d_upstream_idle_timeout_ms(),
            token_cache_entries: d_token_cache_entries(),
            entity_cache_entries: d_entity_cache_entries(),
            entity_cache_ttl_ms: d_entity_cache_ttl_ms(),
            entity_fetch_timeout_ms: d_entity_fetch_timeout_ms(),
            shutdown_grace_ms: d_shutdown_grace_ms(),
            decision_cache_entries: d_decision_cache_entries(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stage two: checked values.

/// `enforce` denies what the policies deny; `shadow` decides and audits but always forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from (for messages); relative paths below are already resolved.
    pub source: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub upstream: Upstream,
    /// Trust and client certificate for an `https` upstream.
    pub upstream_tls: crate::tls::UpstreamTls,
    /// HTTPS on `listen`: certificate chain and key files (PEM).
    pub tls: Option<TlsFiles>,
    pub mode: Mode,
    pub trusted_proxies: Vec<IpNet>,
    pub jwt: JwtConfig,
    pub policies: PolicyFiles,
    pub entities_url: Option<String>,
    pub routes: RouteTable,
    pub audit: AuditConfig,
    pub limits: Limits,
}

/// The listener's certificate chain and private key (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The records backend.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `http` scheme plus authority, e.g. `http://127.0.0.1:3000`.
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub issuers: Vec<IssuerConfig>,
    pub leeway: Duration,
    /// Dotted path to the roles array, split into its segments.
    pub roles_claim: Vec<String>,
    /// Principal attribute name → dotted claim path (split).
    pub attributes: Vec<(String, Vec<String>)>,
    /// Principal attribute that holds the token's scopes, when configured.
    pub scopes_attribute: Option<String>,
}

#[derive(Debug, Clone)]
pub struct IssuerConfig {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub keys: KeySource,
    pub algorithms: Vec<String>,
    pub jwks_refresh: Duration,
}

#[derive(Debug, Clone)]
pub enum KeySource {
    Url(String),
    File(PathBuf),
    /// OIDC discovery: the `openid-configuration` document's URL; its `jwks_uri` is then
    /// fetched like [`KeySource::Url`].
    Discovery(String),
}

#[derive(Debug, Clone)]
pub struct PolicyFiles {
    pub dir: PathBuf,
    pub schema: PathBuf,
    pub entities: Option<PathBuf>,
    pub namespace: String,
    /// Candidate policies (same schema and entities), decided beside the enforced set.
    pub candidate_dir: Option<PathBuf>,
}

impl PolicyFiles {
    /// The candidate set's files: the enforced set's with `candidate_dir` as the folder.
    pub fn candidate(&self) -> Option<PolicyFiles> {
        self.candidate_dir.as_ref().map(|dir| PolicyFiles {
            dir: dir.clone(),
            candidate_dir: None,
            ..self.clone()
        })
    }
}

// The `audit:` section is raw-parsed and checked in its own module.
pub use crate::audit::config::{
    AuditConfig, FileSinkConfig, Fsync, HttpSinkConfig, Retry, SinkConfig, SpoolConfig,
    SyslogSinkConfig, SyslogTls,
};

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub upstream_idle_timeout: Duration,
    pub token_cache_entries: u64,
    pub entity_cache_entries: u64,
    pub entity_cache_ttl: Duration,
    pub entity_fetch_timeout: Duration,
    /// In-flight requests get this long to finish at shutdown.
    pub shutdown_grace: Duration,
    /// Decisions kept for a client repeating the same request (0: none).
    pub decision_cache_entries: u64,
}

impl Config {
    /// Reads and checks a config file; relative paths inside it are taken from its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: path.to_path_buf(),
            errors: vec![ConfigError::Read(e)],
        })?;
        Self::from_yaml_str(&text, path)
    }

    /// Checks config text; `source` names it in errors and anchors its relative paths.
    pub fn from_yaml_str(text: &str, source: &Path) -> Result<Config, ConfigErrors> {
        let fail = |errors| ConfigErrors {
            file: source.to_path_buf(),
            errors,
        };
        let raw: RawConfig = serde_yaml::from_str(text)
            .map_err(|e| fail(vec![ConfigError::Syntax(e.to_string())]))?;
        let base = source.parent().map(Path::to_path_buf).unwrap_or_default();
        check(raw, &base, source).map_err(fail)
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn split_path(key: &str, path: &str, errors: &mut Vec<ConfigError>) -> Vec<String> {
    let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
    if parts.iter().any(String::is_empty) {
        errors.push(invalid(key, format!("`{path}` is not a dotted claim path")));
    }
    parts
}

fn check(raw: RawConfig, base: &Path, source: &Path) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();

    let addr = |key: &str, v: &str, errors: &mut Vec<ConfigError>| -> SocketAddr {
        v.parse().unwrap_or_else(|_| {
            errors.push(invalid(key, format!("`{v}` is not an IP address and port")));
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    };
    let listen = addr("listen", &raw.listen, &mut errors);
    let admin_listen = addr("admin_listen", &raw.admin_listen, &mut errors);

    let upstream = match raw.upstream.parse::<http::Uri>() {
        Ok(uri) => match (uri.scheme(), uri.authority(), uri.path()) {
            (Some(s), Some(a), "/" | "")
                if (s == &http::uri::Scheme::HTTP || s == &http::uri::Scheme::HTTPS)
                    && !a.as_str().contains('@') =>
            {
                Some(Upstream {
                    scheme: s.clone(),
                    authority: a.clone(),
                })
            }
            _ => {
                errors.push(invalid(
                    "upstream",
                    format!(
                        "`{}` must be `http(s)://host:port` with no path and no credentials",
                        raw.upstream
                    ),
                ));
                None
            }
        },
        Err(_) => {
            errors.push(invalid(
                "upstream",
                format!("`{}` is not a URL", raw.upstream),
            ));
            None
        }
    };

    let mut trusted_proxies = Vec::new();
    for (i, p) in raw.trusted_proxies.iter().enumerate() {
        let parsed = p
            .parse::<IpNet>()
            .or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(n) => trusted_proxies.push(n),
            Err(_) => errors.push(invalid(
                format!("trusted_proxies[{i}]"),
                format!("`{p}` is not a CIDR or IP address"),
            )),
        }
    }

    let tls = raw.tls.map(|t| TlsFiles {
        cert_file: resolve(base, &t.cert_file),
        key_file: resolve(base, &t.key_file),
    });
    let upstream_https = upstream
        .as_ref()
        .is_some_and(|u| u.scheme == http::uri::Scheme::HTTPS);
    let mut upstream_tls = crate::tls::UpstreamTls::default();
    if let Some(ut) = raw.upstream_tls {
        if !upstream_https {
            errors.push(invalid(
                "upstream_tls",
                "applies only to an `https://` upstream",
            ));
        }
        upstream_tls.ca_file = ut.ca_file.as_deref().map(|p| resolve(base, p));
        match (ut.cert_file, ut.key_file) {
            (Some(c), Some(k)) => {
                upstream_tls.client_cert = Some((resolve(base, &c), resolve(base, &k)))
            }
            (None, None) => {}
            _ => errors.push(invalid(
                "upstream_tls.cert_file",
                "a client certificate needs both `cert_file` and `key_file`",
            )),
        }
    }

    // jwt
    if raw.jwt.issuers.is_empty() {
        errors.push(invalid("jwt.issuers", "at least one issuer is required"));
    }
    let mut issuers = Vec::new();
    for (i, iss) in raw.jwt.issuers.into_iter().enumerate() {
        let key = |k: &str| format!("jwt.issuers[{i}].{k}");
        if iss.issuer.is_empty() {
            errors.push(invalid(key("issuer"), "must not be empty"));
        }
        if iss.audiences.is_empty() || iss.audiences.iter().any(String::is_empty) {
            errors.push(invalid(
                key("audiences"),
                "list at least one audience, none empty",
            ));
        }
        let keys = match (iss.discovery, iss.jwks_url, iss.jwks_file) {
            (true, None, None) => {
                let url = discovery_url(&iss.issuer);
                match reqwest::Url::parse(&url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => {
                        Some(KeySource::Discovery(url))
                    }
                    _ => {
                        errors.push(invalid(
                            key("discovery"),
                            format!("the issuer `{}` is not an http(s) URL", iss.issuer),
                        ));
                        None
                    }
                }
            }
            (true, _, _) => {
                errors.push(invalid(
                    key("discovery"),
                    "give `discovery: true` or `jwks_url` or `jwks_file`, not more than one",
                ));
                None
            }
            (false, jwks_url, jwks_file) => match (jwks_url, jwks_file) {
                (Some(u), None) => match reqwest::Url::parse(&u) {
                    Ok(url) if matches!(url.scheme(), "http" | "https") => Some(KeySource::Url(u)),
                    _ => {
                        errors.push(invalid(
                            key("jwks_url"),
                            format!("`{u}` is not an http(s) URL"),
                        ));
                        None
                    }
                },
                (None, Some(f)) => Some(KeySource::File(resolve(base, &f))),
                (Some(_), Some(_)) => {
                    errors.push(invalid(
                        key("jwks_url"),
                        "give `jwks_url` or `jwks_file`, not both",
                    ));
                    None
                }
                (None, None) => {
                    errors.push(invalid(
                        key("jwks_url"),
                        "give `jwks_url`, `jwks_file` or `discovery: true`",
                    ));
                    None
                }
            },
        };
        if iss.algorithms.is_empty() {
            errors.push(invalid(key("algorithms"), "list at least one algorithm"));
        }
        for a in &iss.algorithms {
            if !SUPPORTED_ALGORITHMS.contains(&a.as_str()) {
                errors.push(invalid(
                    key("algorithms"),
                    format!(
                        "`{a}` is not allowed; choose from {}",
                        SUPPORTED_ALGORITHMS.join(", ")
                    ),
                ));
            }
        }
        if iss.jwks_refresh_seconds < 10 {
            errors.push(invalid(key("jwks_refresh_seconds"), "must be at least 10"));
        }
        if issuers
            .iter()
            .any(|o: &IssuerConfig| o.issuer == iss.issuer)
        {
            errors.push(invalid(
                key("issuer"),
                format!("`{}` is listed twice", iss.issuer),
            ));
        }
        if let Some(keys) = keys {
            issuers.push(IssuerConfig {
                issuer: iss.issuer,
                audiences: iss.audiences,
                keys,
                algorithms: iss.algorithms,
                jwks_refresh: Duration::from_secs(iss.jwks_refresh_seconds),
            });
        }
    }
    let roles_claim = split_path("jwt.roles_claim", &raw.jwt.roles_claim, &mut errors);
    let mut attributes = Vec::new();
    for (name, path) in &raw.jwt.attributes {
        let k = format!("jwt.attributes.{name}");
        if matches!(name.as_str(), "roles" | "issuer") {
            errors.push(invalid(&k, format!("`{name}` is set by wardgate itself")));
        }
        if !is_identifier(name) {
            errors.push(invalid(
                &k,
                format!("`{name}` is not a Cedar attribute name"),
            ));
        }
        attributes.push((name.clone(), split_path(&k, path, &mut errors)));
    }
    if let Some(name) = &raw.jwt.scopes_attribute {
        let k = "jwt.scopes_attribute";
        if matches!(name.as_str(), "roles" | "issuer") {
            errors.push(invalid(k, format!("`{name}` is set by wardgate itself")));
        } else if raw.jwt.attributes.contains_key(name) {
            errors.push(invalid(
                k,
                format!("`{name}` is also set by `jwt.attributes.{name}`"),
            ));
        } else if !is_identifier(name) {
            errors.push(invalid(
                k,
                format!("`{name}` is not a Cedar attribute name"),
            ));
        }
    }

    // policies
    if !is_identifier(&raw.policies.namespace) {
        errors.push(invalid(
            "policies.namespace",
            format!("`{}` is not a Cedar namespace", raw.policies.namespace),
        ));
    }
    let policies = PolicyFiles {
        dir: resolve(base, &raw.policies.dir),
        schema: resolve(base, &raw.policies.schema),
        entities: raw.policies.entities.as_deref().map(|p| resolve(base, p)),
        namespace: raw.policies.namespace,
        candidate_dir: raw
            .policies
            .candidate_dir
            .as_deref()
            .map(|p| resolve(base, p)),
    };

    if let Some(u) = &raw.entities_url {
        let probe = u.replace("{type}", "T").replace("{id}", "i");
        match reqwest::Url::parse(&probe) {
            Ok(url) if url.scheme() == "http" || url.scheme() == "https" => {}
            _ => errors.push(invalid(
                "entities_url",
                format!("`{u}` is not an http(s) URL"),
            )),
        }
        if !u.contains("{id}") {
            errors.push(invalid("entities_url", "must contain `{id}`"));
        }
    }

    let routes = match RouteTable::compile(raw.routes) {
        Ok(t) => Some(t),
        Err(errs) => {
            errors.extend(errs.into_iter().map(|RouteTableError { index, message }| {
                invalid(format!("routes[{index}]"), message)
            }));
            None
        }
    };

    let audit = crate::audit::config::check(raw.audit, base, &mut errors);

    let l = raw.limits;
    if l.max_header_bytes < 1024 || l.max_header_bytes > 1024 * 1024 {
        errors.push(invalid(
            "limits.max_header_bytes",
            "must be between 1024 and 1048576",
        ));
    }
    for (k, v) in [
        ("limits.header_read_timeout_ms", l.header_read_timeout_ms),
        (
            "limits.upstream_connect_timeout_ms",
            l.upstream_connect_timeout_ms,
        ),
        ("limits.upstream_timeout_ms", l.upstream_timeout_ms),
        (
            "limits.upstream_idle_timeout_ms",
            l.upstream_idle_timeout_ms,
        ),
        ("limits.entity_fetch_timeout_ms", l.entity_fetch_timeout_ms),
    ] {
        if v == 0 {
            errors.push(invalid(k, "must be greater than 0"));
        }
    }
    let limits = Limits {
        max_header_bytes: l.max_header_bytes,
        header_read_timeout: Duration::from_millis(l.header_read_timeout_ms),
        upstream_connect_timeout: Duration::from_millis(l.upstream_connect_timeout_ms),
        upstream_timeout: Duration::from_millis(l.upstream_timeout_ms),
        upstream_idle_timeout: Duration::from_millis(l.upstream_idle_timeout_ms),
        token_cache_entries: l.token_cache_entries,
        entity_cache_entries: l.entity_cache_entries,
        entity_cache_ttl: Duration::from_millis(l.entity_cache_ttl_ms),
        entity_fetch_timeout: Duration::from_millis(l.entity_fetch_timeout_ms),
        shutdown_grace: Duration::from_millis(l.shutdown_grace_ms),
        decision_cache_entries: l.decision_cache_entries,
    };

    match (errors.is_empty(), upstream, routes) {
        (true, Some(upstream), Some(routes)) => Ok(Config {
            source: source.to_path_buf(),
            listen,
            admin_listen,
            upstream,
            upstream_tls,
            tls,
            mode: raw.mode,
            trusted_proxies,
            jwt: JwtConfig {
                issuers,
                leeway: Duration::from_secs(raw.jwt.leeway_seconds),
                roles_claim,
                attributes,
                scopes_attribute: raw.jwt.scopes_attribute,
            },
            policies,
            entities_url: raw.entities_url,
            routes,
            audit,
            limits,
        }),
        _ => Err(errors),
    }
}

/// The OIDC discovery document of `issuer`: any trailing `/` trimmed, then
/// `/.well-known/openid-configuration` appended (OpenID Connect Discovery 1.0 §4).
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// A Cedar identifier: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen: "127.0.0.1:8080"
upstream: "http://127.0.0.1:3000"
jwt:
  issuers:
    - issuer: "https://idp.example"
      audiences: ["records-api"]
      jwks_file: jwks.json
      algorithms: ["RS256", "ES256"]
policies:
  dir: policies
  schema: policies/clinic.cedarschema
routes:
  - { method: GET, path: "/patients/{id}", action: ReadPatient, resource: { type: Patient, id: "{id}" } }
audit:
  sinks:
    - { type: file, path: audit.jsonl }
"#;

    fn errors_of(text: &str) -> String {
        match Config::from_yaml_str(text, Path::new("conf/wardgate.yaml")) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn good_config_resolves_paths_against_its_folder() {
        let c = Config::from_yaml_str(GOOD, Path::new("conf/wardgate.yaml")).expect("valid");
        assert_eq!(c.policies.dir, Path::new("conf/policies"));
        assert!(
            matches!(&c.jwt.issuers[0].keys, KeySource::File(p) if p == Path::new("conf/jwks.json"))
        );
        assert_eq!(c.admin_listen.port(), 9901);
        assert_eq!(c.mode, Mode::Enforce);
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let e = errors_of(
            &GOOD
                .replace("mode_x", "")
                .replace("listen:", "lisen: x\nlisten:"),
        );
        assert!(e.starts_with("conf/wardgate.yaml: "), "{e}");
        assert!(e.contains("unknown field `lisen`"), "{e}");
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let bad = GOOD
            .replace("127.0.0.1:8080", "localhost")
            .replace("\"RS256\", ", "\"none\", ")
            .replace("audiences: [\"records-api\"]", "audiences: []");
        let e = errors_of(&bad);
        assert!(
            e.contains("`listen`: `localhost` is not an IP address and port"),
            "{e}"
        );
        assert!(
            e.contains("`jwt.issuers[0].algorithms`: `none` is not allowed"),
            "{e}"
        );
        assert!(e.contains("`jwt.issuers[0].audiences`"), "{e}");
    }

    #[test]
    fn discovery_is_read_from_the_issuer_url() {
        let c = Config::from_yaml_str(
            &GOOD
                .replace(
                    "jwks_file: jwks.json",
                    "discovery: true\n      jwks_refresh_seconds: 60",
                )
                .replace("https://idp.example", "https://idp.example/realms/clinic/"),
            Path::new("conf/wardgate.yaml"),
        )
        .expect("valid");
        assert!(matches!(
            &c.jwt.issuers[0].keys,
            KeySource::Discovery(u)
                if u == "https://idp.example/realms/clinic/.well-known/openid-configuration"
        ));
    }

    #[test]
    fn discovery_with_another_key_source_is_refused() {
        let e = errors_of(&GOOD.replace(
            "jwks_file: jwks.json",
            "jwks_url: https://idp.example/jwks\n      discovery: true",
        ));
        assert!(e.contains("`jwt.issuers[0].discovery`"), "{e}");
        let e = errors_of(&GOOD.replace("jwks_file", "discovery: true\n      jwks_file"));
        assert!(e.contains("`jwt.issuers[0].discovery`"), "{e}");
        let e = errors_of(
            &GOOD
                .replace("jwks_file: jwks.json", "discovery: true")
                .replace("https://idp.example", "idp.example"),
        );
        assert!(
            e.contains(
                "`jwt.issuers[0].discovery`: the issuer `idp.example` is not an http(s) URL"
            ),
            "{e}"
        );
    }

    #[test]
    fn scopes_attribute_must_be_a_free_cedar_name() {
        let with =
            |name: &str| GOOD.replace("jwt:\n", &format!("jwt:\n  scopes_attribute: \"{name}\"\n"));
        assert_eq!(errors_of(&with("scopes")), "");
        for bad in ["roles", "issuer", "my-scopes"] {
            let e = errors_of(&with(bad));
            assert!(e.contains("`jwt.scopes_attribute`"), "{bad}: {e}");
        }
        let e = errors_of(
            &with("dept").replace("jwt:\n", "jwt:\n  attributes: { dept: department }\n"),
        );
        assert!(e.contains("`jwt.scopes_attribute`"), "{e}");
    }

    #[test]
    fn hmac_algorithms_are_refused() {
        let e = errors_of(&GOOD.replace("\"ES256\"", "\"HS256\""));
        assert!(e.contains("`HS256` is not allowed"), "{e}");
    }

    #[test]
    fn bad_route_is_named_by_index() {
        let e = errors_of(&GOOD.replace("/patients/{id}", "patients/{id}"));
        assert!(e.contains("`routes[0]`"), "{e}");
    }

    #[test]
    fn no_sinks_is_refused() {
        let e = errors_of(
            &GOOD
                .replace("    - { type: file, path: audit.jsonl }\n", "")
                .replace("sinks:", "sinks: []"),
        );
        assert!(e.contains("`audit.sinks`"), "{e}");
    }
}
