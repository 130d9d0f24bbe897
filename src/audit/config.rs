//! The `audit:` section of `wardgate.yaml`: raw serde structs (unknown keys refused) and their
//! check into [`AuditConfig`], every problem named by its dotted key (`audit.sinks[1].url`).
//!
//! Secrets (the `http` sink's `headers`) are never echoed: not in errors, not in `Debug`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::config::ConfigError;

/// Records held in memory (requests in flight included) before new requests get 503.
pub const DEFAULT_QUEUE_CAPACITY: usize = 16_384;
/// How long spooled sinks may keep delivering at shutdown.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 5_000;
/// A file sink rotates before it grows past this (0: never).
pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// A spool refuses more than this many undelivered bytes.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1024 * 1024 * 1024;
/// `fsync: { interval_ms }` when `fsync` is not given.
pub const DEFAULT_FSYNC_INTERVAL_MS: u64 = 1_000;

// ---------------------------------------------------------------------------------------------
// Stage one: the file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    sinks: Vec<RawSink>,
    #[serde(default = "d_queue_capacity")]
    queue_capacity: usize,
    #[serde(default = "d_drain_timeout_ms")]
    drain_timeout_ms: u64,
}

fn d_queue_capacity() -> usize {
    DEFAULT_QUEUE_CAPACITY
}
fn d_drain_timeout_ms() -> u64 {
    DEFAULT_DRAIN_TIMEOUT_MS
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum RawSink {
    File {
        path: PathBuf,
        #[serde(default)]
        fsync: Option<serde_yaml::Value>,
        #[serde(default)]
        max_bytes: Option<u64>,
    },
    Stdout {},
    Http {
        url: String,
        #[serde(default)]
        spool_dir: Option<PathBuf>,
        #[serde(default)]
        spool_max_bytes: Option<u64>,
        #[serde(default)]
        fsync: Option<serde_yaml::Value>,
        #[serde(default)]
        batch_size: Option<usize>,
        #[serde(default)]
        linger_ms: Option<u64>,
        #[serde(default)]
        gzip: bool,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        headers_from_env: BTreeMap<String, String>,
        #[serde(default)]
        timeout_ms: Option<u64>,
        #[serde(default)]
        retry_initial_ms: Option<u64>,
        #[serde(default)]
        retry_max_ms: Option<u64>,
    },
    Syslog {
        address: String,
        #[serde(default)]
        spool_dir: Option<PathBuf>,
        #[serde(default)]
        spool_max_bytes: Option<u64>,
        #[serde(default)]
        fsync: Option<serde_yaml::Value>,
        #[serde(default)]
        batch_size: Option<usize>,
        #[serde(default)]
        facility: Option<String>,
        #[serde(default)]
        hostname: Option<String>,
        #[serde(default)]
        app_name: Option<String>,
        #[serde(default)]
        confirm_ms: Option<u64>,
        #[serde(default)]
        retry_initial_ms: Option<u64>,
        #[serde(default)]
        retry_max_ms: Option<u64>,
        #[serde(default)]
        tls: Option<RawSyslogTls>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSyslogTls {
    ca_file: PathBuf,
    #[serde(default)]
    server_name: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Stage two: checked values.

/// The checked `audit:` section.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub sinks: Vec<SinkConfig>,
    /// Records in memory (requests in flight, queued, or waiting for a sink) before new
    /// requests are refused with 503.
    pub queue_capacity: usize,
    /// At shutdown: how long the writer and the spooled sinks may keep delivering.
    pub drain_timeout: Duration,
}

impl AuditConfig {
    /// One file sink at `path`, everything else default (for the demo and tests).
    pub fn file(path: PathBuf) -> Self {
        Self {
            sinks: vec![SinkConfig::File(FileSinkConfig {
                path,
                fsync: Fsync::default(),
                max_bytes: None,
            })],
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            drain_timeout: Duration::from_millis(DEFAULT_DRAIN_TIMEOUT_MS),
        }
    }
}

#[derive(Debug, Clone)]
pub enum SinkConfig {
    File(FileSinkConfig),
    Stdout,
    Http(HttpSinkConfig),
    Syslog(SyslogSinkConfig),
}

/// When written lines are forced to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// After every batch the writer hands over.
    Always,
    /// At most this long after a write.
    Interval(Duration),
}

impl Fsync {
    /// Whether data first left unsynced at `dirty_since` is due for an fsync at `now` under an
    /// `interval` policy (`always` syncs with every batch instead).
    pub fn interval_due(
        self,
        dirty_since: Option<std::time::Instant>,
        now: std::time::Instant,
    ) -> bool {
        matches!((self, dirty_since), (Fsync::Interval(every), Some(since)) if now.duration_since(since) >= every)
    }
}

impl Default for Fsync {
    fn default() -> Self {
        Fsync::Interval(Duration::from_millis(DEFAULT_FSYNC_INTERVAL_MS))
    }
}

#[derive(Debug, Clone)]
pub struct FileSinkConfig {
    pub path: PathBuf,
    pub fsync: Fsync,
    /// Rotate before the file would grow past this; `None`: never.
    pub max_bytes: Option<u64>,
}

/// A network sink's disk spool.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub fsync: Fsync,
}

/// Retries: exponential backoff from `initial` to `max`, with jitter.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub initial: Duration,
    pub max: Duration,
}

/// Header names and values sent to the collector. `Debug` shows the names only.
#[derive(Clone, Default)]
pub struct SecretHeaders(pub Vec<(HeaderName, HeaderValue)>);

impl fmt::Debug for SecretHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| format!("{n}: <redacted>")))
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct HttpSinkConfig {
    pub url: reqwest::Url,
    pub spool: SpoolConfig,
    pub batch_size: usize,
    pub linger: Duration,
    pub gzip: bool,
    pub headers: SecretHeaders,
    pub timeout: Duration,
    pub retry: Retry,
}

#[derive(Debug, Clone)]
pub struct SyslogSinkConfig {
    /// `host:port` (a name is resolved at each connect).
    pub address: String,
    pub spool: SpoolConfig,
    pub batch_size: usize,
    /// The RFC 5424 facility code (severity is always informational).
    pub facility: u8,
    pub hostname: String,
    pub app_name: String,
    /// How long a connection must stay up after a write before its records count as delivered.
    pub confirm: Duration,
    pub retry: Retry,
    pub tls: Option<SyslogTls>,
}

#[derive(Debug, Clone)]
pub struct SyslogTls {
    pub ca_file: PathBuf,
    pub server_name: String,
}

const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("audit", 13),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn fsync_of(key: &str, v: Option<serde_yaml::Value>, errors: &mut Vec<ConfigError>) -> Fsync {
    use serde_yaml::Value;
    let bad = |errors: &mut Vec<ConfigError>| {
        errors.push(invalid(
            key,
            "expected `always` or `{ interval_ms: N }` with N > 0",
        ));
        Fsync::default()
    };
    match v {
        None => Fsync::default(),
        Some(Value::String(s)) if s == "always" => Fsync::Always,
        Some(Value::Mapping(m)) if m.len() == 1 => {
            match m.get("interval_ms").and_then(Value::as_u64) {
                Some(ms) if ms > 0 => Fsync::Interval(Duration::from_millis(ms)),
                _ => bad(errors),
            }
        }
        Some(_) => bad(errors),
    }
}

fn positive(key: &str, v: Option<u64>, default: u64, errors: &mut Vec<ConfigError>) -> u64 {
    match v {
        Some(0) => {
            errors.push(invalid(key, "must be greater than 0"));
            default
        }
        Some(n) => n,
        None => default,
    }
}

fn batch_size_of(
    key: &str,
    v: Option<usize>,
    default: usize,
    errors: &mut Vec<ConfigError>,
) -> usize {
    match v {
        Some(n) if n == 0 || n > 10_000 => {
            errors.push(invalid(key, "must be between 1 and 10000"));
            default
        }
        Some(n) => n,
        None => default,
    }
}

fn retry_of(
    prefix: &str,
    initial: Option<u64>,
    max: Option<u64>,
    errors: &mut Vec<ConfigError>,
) -> Retry {
    let initial = positive(&format!("{prefix}.retry_initial_ms"), initial, 200, errors);
    let max = positive(&format!("{prefix}.retry_max_ms"), max, 30_000, errors);
    if max < initial {
        errors.push(invalid(
            format!("{prefix}.retry_max_ms"),
            "must not be below `retry_initial_ms`",
        ));
    }
    Retry {
        initial: Duration::from_millis(initial),
        max: Duration::from_millis(max.max(initial)),
    }
}

/// The spool keys as written: `spool_dir`, `spool_max_bytes`, `fsync`.
type RawSpool = (Option<PathBuf>, Option<u64>, Option<serde_yaml::Value>);

fn spool_of(
    prefix: &str,
    base: &Path,
    kind: &str,
    index: usize,
    (dir, max_bytes, fsync): RawSpool,
    errors: &mut Vec<ConfigError>,
) -> SpoolConfig {
    let dir = match dir {
        Some(d) if d.as_os_str().is_empty() => {
            errors.push(invalid(format!("{prefix}.spool_dir"), "must not be empty"));
            d
        }
        Some(d) => resolve(base, &d),
        None => base.join("spool").join(format!("{kind}-{index}")),
    };
    let max_bytes = match max_bytes {
        Some(n) if n < 1024 => {
            errors.push(invalid(
                format!("{prefix}.spool_max_bytes"),
                "must be at least 1024",
            ));
            DEFAULT_SPOOL_MAX_BYTES
        }
        Some(n) => n,
        None => DEFAULT_SPOOL_MAX_BYTES,
    };
    SpoolConfig {
        dir,
        max_bytes,
        fsync: fsync_of(&format!("{prefix}.fsync"), fsync, errors),
    }
}

fn system_hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if clean.is_empty() {
        "-".to_owned()
    } else {
        clean
    }
}

/// An RFC 5424 header field: printable US-ASCII, no spaces, at most `max` long.
fn syslog_field(key: &str, v: &str, max: usize, errors: &mut Vec<ConfigError>) {
    if v.is_empty() || v.len() > max || !v.chars().all(|c| c.is_ascii_graphic()) {
        errors.push(invalid(
            key,
            format!("`{v}` must be 1 to {max} printable ASCII characters without spaces"),
        ));
    }
}

/// Checks the raw `audit:` section; relative paths are taken from `base`.
pub fn check(raw: RawAudit, base: &Path, errors: &mut Vec<ConfigError>) -> AuditConfig {
    if raw.sinks.is_empty() {
        errors.push(invalid(
            "audit.sinks",
            "at least one sink is required: every decision must be recorded",
        ));
    }
    if raw.queue_capacity < 16 || raw.queue_capacity > 10_000_000 {
        errors.push(invalid(
            "audit.queue_capacity",
            "must be between 16 and 10000000",
        ));
    }
    let mut sinks = Vec::new();
    let mut spool_dirs: Vec<(PathBuf, String)> = Vec::new();
    let mut file_paths: Vec<(PathBuf, String)> = Vec::new();
    for (i, s) in raw.sinks.into_iter().enumerate() {
        let prefix = format!("audit.sinks[{i}]");
        let k = |name: &str| format!("{prefix}.{name}");
        let sink = match s {
            RawSink::File {
                path,
                fsync,
                max_bytes,
            } => {
                if path.as_os_str().is_empty() {
                    errors.push(invalid(k("path"), "must not be empty"));
                }
                let max_bytes = match max_bytes.unwrap_or(DEFAULT_MAX_BYTES) {
                    0 => None,
                    n if n < 4096 => {
                        errors.push(invalid(
                            k("max_bytes"),
                            "must be 0 (never rotate) or at least 4096",
                        ));
                        None
                    }
                    n => Some(n),
                };
                let path = resolve(base, &path);
                if let Some((_, other)) = file_paths.iter().find(|(p, _)| p == &path) {
                    errors.push(invalid(k("path"), format!("the same file as `{other}`")));
                }
                file_paths.push((path.clone(), k("path")));
                SinkConfig::File(FileSinkConfig {
                    path,
                    fsync: fsync_of(&k("fsync"), fsync, errors),
                    max_bytes,
                })
            }
            RawSink::Stdout {} => SinkConfig::Stdout,
            RawSink::Http {
                url,
                spool_dir,
                spool_max_bytes,
                fsync,
                batch_size,
                linger_ms,
                gzip,
                headers,
                headers_from_env,
                timeout_ms,
                retry_initial_ms,
                retry_max_ms,
            } => {
                let url = match reqwest::Url::parse(&url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                        Some(u)
                    }
                    _ => {
                        errors.push(invalid(k("url"), format!("`{url}` is not an http(s) URL")));
                        None
                    }
                };
                let mut hs = Vec::new();
                for (name, value) in headers {
                    push_header(&k("headers"), &name, Ok(value), &mut hs, errors);
                }
                for (name, var) in headers_from_env {
                    let value = std::env::var(&var).map_err(|_| var.clone());
                    push_header(&k("headers_from_env"), &name, value, &mut hs, errors);
                }
                let spool = spool_of(
                    &prefix,
                    base,
                    "http",
                    i,
                    (spool_dir, spool_max_bytes, fsync),
                    errors,
                );
                let batch_size = batch_size_of(&k("batch_size"), batch_size, 500, errors);
                let timeout = positive(&k("timeout_ms"), timeout_ms, 10_000, errors);
                let retry = retry_of(&prefix, retry_initial_ms, retry_max_ms, errors);
                let Some(url) = url else {
                    continue;
                };
                SinkConfig::Http(HttpSinkConfig {
                    url,
                    spool,
                    batch_size,
                    linger: Duration::from_millis(linger_ms.unwrap_or(200)),
                    gzip,
                    headers: SecretHeaders(hs),
                    timeout: Duration::from_millis(timeout),
                    retry,
                })
            }
            RawSink::Syslog {
                address,
                spool_dir,
                spool_max_bytes,
                fsync,
                batch_size,
                facility,
                hostname,
                app_name,
                confirm_ms,
                retry_initial_ms,
                retry_max_ms,
                tls,
            } => {
                let host = match address.rsplit_once(':') {
                    Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => {
                        h.trim_start_matches('[').trim_end_matches(']').to_owned()
                    }
                    _ => {
                        errors.push(invalid(
                            k("address"),
                            format!("`{address}` is not `host:port`"),
                        ));
                        String::new()
                    }
                };
                let facility = match facility.as_deref() {
                    None => 10,
                    Some(f) => match FACILITIES.iter().find(|(n, _)| *n == f) {
                        Some((_, code)) => *code,
                        None => {
                            errors.push(invalid(
                                k("facility"),
                                format!(
                                    "`{f}` is not a syslog facility; choose from {}",
                                    FACILITIES
                                        .iter()
                                        .map(|(n, _)| *n)
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            ));
                            10
                        }
                    },
                };
                let hostname = hostname.unwrap_or_else(system_hostname);
                syslog_field(&k("hostname"), &hostname, 255, errors);
                let app_name = app_name.unwrap_or_else(|| "wardgate".to_owned());
                syslog_field(&k("app_name"), &app_name, 48, errors);
                let tls = tls.map(|t| SyslogTls {
                    ca_file: resolve(base, &t.ca_file),
                    server_name: t.server_name.unwrap_or_else(|| host.clone()),
                });
                SinkConfig::Syslog(SyslogSinkConfig {
                    address,
                    spool: spool_of(
                        &prefix,
                        base,
                        "syslog",
                        i,
                        (spool_dir, spool_max_bytes, fsync),
                        errors,
                    ),
                    batch_size: batch_size_of(&k("batch_size"), batch_size, 500, errors),
                    facility,
                    hostname,
                    app_name,
                    confirm: Duration::from_millis(confirm_ms.unwrap_or(250)),
                    retry: retry_of(&prefix, retry_initial_ms, retry_max_ms, errors),
                    tls,
                })
            }
        };
        if let SinkConfig::Http(HttpSinkConfig { spool, .. })
        | SinkConfig::Syslog(SyslogSinkConfig { spool, .. }) = &sink
        {
            if let Some((_, other)) = spool_dirs.iter().find(|(d, _)| d == &spool.dir) {
                errors.push(invalid(
                    k("spool_dir"),
                    format!(
                        "`{}` is already the spool of `{other}`",
                        spool.dir.display()
                    ),
                ));
            }
            spool_dirs.push((spool.dir.clone(), prefix.clone()));
        }
        sinks.push(sink);
    }
    AuditConfig {
        sinks,
        queue_capacity: raw.queue_capacity,
        drain_timeout: Duration::from_millis(raw.drain_timeout_ms),
    }
}

fn push_header(
    key: &str,
    name: &str,
    value: Result<String, String>,
    out: &mut Vec<(HeaderName, HeaderValue)>,
    errors: &mut Vec<ConfigError>,
) {
    let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
        errors.push(invalid(key, format!("`{name}` is not a header name")));
        return;
    };
    match value {
        Ok(v) => match HeaderValue::from_str(&v) {
            Ok(mut v) => {
                v.set_sensitive(true);
                out.push((n, v));
            }
            // The value may be a secret: name the header, never the value.
            Err(_) => errors.push(invalid(
                key,
                format!("the value of `{name}` is not a valid header value"),
            )),
        },
        Err(var) => errors.push(invalid(
            key,
            format!("`{name}`: environment variable `{var}` is not set"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_yaml(text: &str) -> (AuditConfig, Vec<String>) {
        let raw: RawAudit = serde_yaml::from_str(text).expect("yaml");
        let mut errors = Vec::new();
        let c = check(raw, Path::new("/etc/wg"), &mut errors);
        (c, errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn defaults_are_filled_in() {
        let (c, e) = check_yaml(
            "sinks:\n  - { type: file, path: a.jsonl }\n  - { type: http, url: 'http://c:1/i' }\n  - { type: syslog, address: 'localhost:514' }\n",
        );
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(c.queue_capacity, DEFAULT_QUEUE_CAPACITY);
        let SinkConfig::File(f) = &c.sinks[0] else {
            panic!("file")
        };
        assert_eq!(f.path, Path::new("/etc/wg/a.jsonl"));
        assert_eq!(f.max_bytes, Some(DEFAULT_MAX_BYTES));
        assert_eq!(f.fsync, Fsync::default());
        let SinkConfig::Http(h) = &c.sinks[1] else {
            panic!("http")
        };
        assert_eq!(h.spool.dir, Path::new("/etc/wg/spool/http-1"));
        assert_eq!(h.batch_size, 500);
        let SinkConfig::Syslog(s) = &c.sinks[2] else {
            panic!("syslog")
        };
        assert_eq!(s.facility, 10);
        assert_eq!(s.spool.dir, Path::new("/etc/wg/spool/syslog-2"));
    }

    #[test]
    fn fsync_forms() {
        let (c, e) = check_yaml(
            "sinks:\n  - { type: file, path: a, fsync: always }\n  - { type: file, path: b, fsync: { interval_ms: 50 } }\n",
        );
        assert!(e.is_empty(), "{e:?}");
        let fs: Vec<Fsync> = c
            .sinks
            .iter()
            .filter_map(|s| match s {
                SinkConfig::File(f) => Some(f.fsync),
                _ => None,
            })
            .collect();
        assert_eq!(
            fs,
            [Fsync::Always, Fsync::Interval(Duration::from_millis(50))]
        );
        let (_, e) = check_yaml("sinks:\n  - { type: file, path: a, fsync: sometimes }\n");
        assert!(
            e.iter().any(|e| e.contains("`audit.sinks[0].fsync`")),
            "{e:?}"
        );
    }

    #[test]
    fn every_bad_key_is_named() {
        let (_, e) = check_yaml(
            "queue_capacity: 1\nsinks:\n  - { type: http, url: 'ftp://x', batch_size: 0, spool_dir: s }\n  - { type: syslog, address: 'nohost', facility: bogus, spool_dir: s }\n  - { type: http, url: 'http://c/i', spool_dir: s }\n",
        );
        let all = e.join("\n");
        for key in [
            "`audit.queue_capacity`",
            "`audit.sinks[0].url`",
            "`audit.sinks[0].batch_size`",
            "`audit.sinks[1].address`",
            "`audit.sinks[1].facility`",
            "`audit.sinks[2].spool_dir`",
        ] {
            assert!(all.contains(key), "{key} missing in:\n{all}");
        }
    }

    #[test]
    fn header_values_are_never_echoed() {
        let (c, e) = check_yaml(
            "sinks:\n  - { type: http, url: 'http://c/i', headers: { Authorization: \"Bearer s3cret\" } }\n",
        );
        assert!(e.is_empty(), "{e:?}");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
        assert!(dbg.contains("authorization"), "{dbg}");
        let (_, e) = check_yaml(
            "sinks:\n  - { type: http, url: 'http://c/i', headers: { Authorization: \"s3cret\\n\" } }\n",
        );
        assert!(e.iter().all(|e| !e.contains("s3cret")), "{e:?}");
        assert!(!e.is_empty());
    }
}
