//! One issuer's signing keys: loaded from `jwks_file` or fetched from `jwks_url`, held as an
//! immutable [`KeySet`] snapshot, refreshed in the background and on an unknown `kid` (at most
//! once per [`UNKNOWN_KID_COOLDOWN`], concurrent misses sharing one fetch). A failed refresh
//! keeps the last good keys.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::{IssuerConfig, KeySource};
use crate::metrics::Metrics;

/// An unknown `kid` triggers at most one refetch per issuer in this window.
pub const UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(10);
/// A JWKS document larger than this is refused.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot fetch `{url}`: {message}")]
    Fetch { url: String, message: String },
    #[error("`{origin}` is not a JWKS document: {message}")]
    Parse { origin: String, message: String },
    #[error("`{origin}` holds no usable signing key")]
    Empty { origin: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// A verified public key and what it may verify.
pub struct VerifyingKey {
    key: DecodingKey,
    family: Family,
    /// The JWK's own `alg`, when it names one.
    alg: Option<Algorithm>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl VerifyingKey {
    /// The key may verify `alg`: its type fits the algorithm and its own `alg`, if any, agrees.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        let fits = match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => self.family == Family::Rsa,
            Algorithm::ES256 => self.family == Family::P256,
            Algorithm::ES384 => self.family == Family::P384,
            Algorithm::EdDSA => self.family == Family::Ed25519,
            _ => false,
        };
        fits && self.alg.is_none_or(|a| a == alg)
    }

    pub fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

/// An immutable set of keys by `kid`.
#[derive(Default)]
pub struct KeySet {
    keys: HashMap<String, Arc<VerifyingKey>>,
}

impl KeySet {
    /// Parses a JWKS document, keeping only usable signature keys that carry a `kid`.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<KeySet, KeySetError> {
        #[derive(Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc = serde_json::from_slice(bytes).map_err(|e| KeySetError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        let mut keys = HashMap::new();
        for raw in doc.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw) else {
                tracing::warn!(origin, "skipping a JWKS entry wardgate cannot read");
                continue;
            };
            let Some(kid) = jwk.common.key_id.clone().filter(|k| !k.is_empty()) else {
                tracing::warn!(origin, "skipping a JWKS key without `kid`");
                continue;
            };
            if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
                continue;
            }
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Family::Rsa,
                AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                    EllipticCurve::P256 => Family::P256,
                    EllipticCurve::P384 => Family::P384,
                    _ => continue,
                },
                AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                    Family::Ed25519
                }
                _ => continue,
            };
            let alg = match jwk.common.key_algorithm {
                None => None,
                Some(ka) => match key_algorithm(ka) {
                    Some(a) => Some(a),
                    None => continue,
                },
            };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                tracing::warn!(origin, kid, "skipping a malformed JWKS key");
                continue;
            };
            keys.insert(kid, Arc::new(VerifyingKey { key, family, alg }));
        }
        if keys.is_empty() {
            return Err(KeySetError::Empty {
                origin: origin.to_owned(),
            });
        }
        Ok(KeySet { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn key_algorithm(ka: KeyAlgorithm) -> Option<Algorithm> {
    Some(match ka {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// One issuer: its config, its current keys and the refresh machinery.
pub struct IssuerKeys {
    config: IssuerConfig,
    keys: ArcSwap<KeySet>,
    has_keys: AtomicBool,
    /// Held while fetching; remembers when the last fetch started.
    fetch: Mutex<Option<Instant>>,
    client: reqwest::Client,
    metrics: Metrics,
}

impl IssuerKeys {
    pub fn new(config: IssuerConfig, metrics: Metrics) -> Result<Self, KeySetError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| KeySetError::Client(e.to_string()))?;
        Ok(Self {
            config,
            keys: ArcSwap::from_pointee(KeySet::default()),
            has_keys: AtomicBool::new(false),
            fetch: Mutex::new(None),
            client,
            metrics,
        })
    }

    pub fn config(&self) -> &IssuerConfig {
        &self.config
    }

    pub fn has_keys(&self) -> bool {
        self.has_keys.load(Ordering::Acquire)
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.load().keys.contains_key(kid)
    }

    pub fn key(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        self.keys.load().keys.get(kid).cloned()
    }

    /// A file source must load now (a missing key file is a config error); a URL source is
    /// fetched in the background until it answers, then refreshed on its schedule.
    pub async fn start(self: Arc<Self>) -> Result<(), KeySetError> {
        match &self.config.keys {
            KeySource::File(_) => {
                let set = self.load().await?;
                self.install(set);
                *self.fetch.lock().await = Some(Instant::now());
            }
            KeySource::Url(_) => {
                let me = self.clone();
                tokio::spawn(async move { me.refresh_loop().await });
            }
        }
        Ok(())
    }

    async fn refresh_loop(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(250);
        loop {
            let ok = self.refresh().await;
            let wait = if ok {
                backoff = Duration::from_millis(250);
                self.config.jwks_refresh
            } else if self.has_keys() {
                // Keep the last good keys; try again sooner than the schedule.
                Duration::from_secs(30).min(self.config.jwks_refresh)
            } else {
                backoff = (backoff * 2).min(Duration::from_secs(30));
                backoff
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Fetches and installs; `false` (and a log line and metric) on failure.
    async fn refresh(&self) -> bool {
        let mut last = self.fetch.lock().await;
        *last = Some(Instant::now());
        let result = self.load().await;
        drop(last);
        match result {
            Ok(set) => {
                self.metrics.jwks_refresh("ok");
                self.install(set);
                true
            }
            Err(e) => {
                self.metrics.jwks_refresh("error");
                tracing::warn!(issuer = %self.config.issuer, error = %e, "JWKS refresh failed; keeping the last good keys");
                false
            }
        }
    }

    /// The key for a `kid` not in the current set, refetching at most once per cooldown.
    /// Concurrent callers wait for the one fetch in flight and then look again.
    pub async fn key_after_refresh(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        let mut last = self.fetch.lock().await;
        if let Some(k) = self.key(kid) {
            return Some(k);
        }
        if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_COOLDOWN) {
            return None;
        }
        *last = Some(Instant::now());
        match self.load().await {
            Ok(set) => {
                self.metrics.jwks_refresh("ok");
                self.install(set);
            }
            Err(e) => {
                self.metrics.jwks_refresh("error");
                tracing::warn!(issuer = %self.config.issuer, error = %e, "JWKS refetch for an unknown kid failed");
            }
        }
        drop(last);
        self.key(kid)
    }

    fn install(&self, set: KeySet) {
        tracing::info!(issuer = %self.config.issuer, keys = set.len(), "JWKS loaded");
        self.keys.store(Arc::new(set));
        self.has_keys.store(true, Ordering::Release);
    }

    async fn load(&self) -> Result<KeySet, KeySetError> {
        match &self.config.keys {
            KeySource::File(path) => {
                let origin = path.display().to_string();
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|source| KeySetError::Read {
                        path: origin.clone(),
                        source,
                    })?;
                KeySet::parse(&bytes, &origin)
            }
            KeySource::Url(url) => {
                let fetch_err = |message: String| KeySetError::Fetch {
                    url: url.clone(),
                    message,
                };
                let mut resp = self
                    .client
                    .get(url)
                    .header(http::header::ACCEPT, "application/json")
                    .send()
                    .await
                    .map_err(|e| fetch_err(e.to_string()))?;
                if !resp.status().is_success() {
                    return Err(fetch_err(format!("status {}", resp.status())));
                }
                let mut body = Vec::new();
                while let Some(chunk) = resp.chunk().await.map_err(|e| fetch_err(e.to_string()))? {
                    if body.len() + chunk.len() > MAX_JWKS_BYTES {
                        return Err(fetch_err("document larger than 1 MiB".into()));
                    }
                    body.extend_from_slice(&chunk);
                }
                KeySet::parse(&body, url)
            }
        }
    }
}
