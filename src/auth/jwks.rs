//! One issuer's signing keys: loaded from `jwks_file` or fetched from `jwks_url`, held as an
//! immutable [`KeySet`] snapshot, refreshed in the background and on an unknown `kid` (at most
//! once per [`UNKNOWN_KID_COOLDOWN`], concurrent misses sharing one fetch). A failed refresh
//! keeps the last good keys.
//!
//! Key hygiene ([`KeySkip`]): only public signature keys are used — never an entry with
//! `use` other than `sig`, `key_ops` without `verify`, an `alg` that does not fit its key,
//! an RSA modulus under 2048 bits or an exponent other than 65537, a symmetric (`oct`) or
//! private key, a point off its curve, or a `kid` that two entries share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
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

/// Why one JWKS entry is not used to verify anything. Each skip is logged; none is fatal for
/// the document as long as one usable key remains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySkip {
    /// Not a JSON object wardgate can read as a JWK.
    Unreadable,
    /// No `kid`, or an empty one: a token could never name it.
    NoKid,
    /// `use` is not `sig`.
    NotForSignatures,
    /// `key_ops` is present and does not hold `verify`.
    NoVerifyOp,
    /// The entry carries private key material (`d`, `p`, `q`, …): the issuer leaked a key.
    PrivateKey,
    /// A shared secret (`oct`): never a verification key in a sidecar.
    Symmetric,
    /// A key type or curve wardgate does not verify with (P-521, X25519, …) or an unknown `alg`.
    Unsupported,
    /// The JWK's own `alg` does not fit its key type or curve.
    AlgMismatch,
    /// An RSA modulus under 2048 bits (or over 8192).
    WeakRsa,
    /// An RSA public exponent other than 65537.
    BadRsaExponent,
    /// The key material does not form a public key (a point off the curve, bad encoding).
    InvalidKey,
    /// Another entry has the same `kid`: which one a token means is ambiguous, so neither is used.
    DuplicateKid,
}

impl KeySkip {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySkip::Unreadable => "unreadable",
            KeySkip::NoKid => "no_kid",
            KeySkip::NotForSignatures => "use_not_sig",
            KeySkip::NoVerifyOp => "key_ops_without_verify",
            KeySkip::PrivateKey => "private_key",
            KeySkip::Symmetric => "symmetric",
            KeySkip::Unsupported => "unsupported",
            KeySkip::AlgMismatch => "alg_mismatch",
            KeySkip::WeakRsa => "weak_rsa",
            KeySkip::BadRsaExponent => "bad_rsa_exponent",
            KeySkip::InvalidKey => "invalid_key",
            KeySkip::DuplicateKid => "duplicate_kid",
        }
    }
}

/// Members that only a private (or secret) JWK carries (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;

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

impl Family {
    fn fits(self, alg: Algorithm) -> bool {
        match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => self == Family::Rsa,
            Algorithm::ES256 => self == Family::P256,
            Algorithm::ES384 => self == Family::P384,
            Algorithm::EdDSA => self == Family::Ed25519,
            _ => false,
        }
    }

    /// An algorithm of this family, to build a verifier with (which checks the key material).
    fn probe_algorithm(self) -> Algorithm {
        match self {
            Family::Rsa => Algorithm::RS256,
            Family::P256 => Algorithm::ES256,
            Family::P384 => Algorithm::ES384,
            Family::Ed25519 => Algorithm::EdDSA,
        }
    }
}

impl VerifyingKey {
    /// The key may verify `alg`: its type fits the algorithm and its own `alg`, if any, agrees.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.family.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }

    pub fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

/// An immutable set of keys by `kid`.
#[derive(Default)]
pub struct KeySet {
    keys: HashMap<String, Arc<VerifyingKey>>,
    skipped: Vec<(Option<String>, KeySkip)>,
}

impl KeySet {
    /// Parses a JWKS document, keeping only public signature keys that carry a unique `kid` and
    /// pass the hygiene rules of [`KeySkip`]; every other entry is logged and left out.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<KeySet, KeySetError> {
        #[derive(Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc = serde_json::from_slice(bytes).map_err(|e| KeySetError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        let mut skipped = Vec::new();
        let mut usable: Vec<(String, VerifyingKey)> = Vec::new();
        let mut kid_count: HashMap<String, usize> = HashMap::new();
        for raw in &doc.keys {
            let kid = raw
                .get("kid")
                .and_then(serde_json::Value::as_str)
                .filter(|k| !k.is_empty())
                .map(str::to_owned);
            if let Some(k) = &kid {
                *kid_count.entry(k.clone()).or_default() += 1;
            }
            match usable_key(raw) {
                Ok(key) => match kid {
                    Some(kid) => usable.push((kid, key)),
                    None => skipped.push((None, KeySkip::NoKid)),
                },
                Err(reason) => skipped.push((kid, reason)),
            }
        }
        let mut keys = HashMap::new();
        for (kid, key) in usable {
            if kid_count.get(&kid).copied().unwrap_or(0) > 1 {
                skipped.push((Some(kid), KeySkip::DuplicateKid));
            } else {
                keys.insert(kid, Arc::new(key));
            }
        }
        for (kid, reason) in &skipped {
            let kid = kid.as_deref().unwrap_or("");
            if *reason == KeySkip::PrivateKey {
                tracing::error!(
                    origin,
                    kid,
                    "the JWKS publishes private key material; that key is never used"
                );
            } else {
                tracing::warn!(
                    origin,
                    kid,
                    reason = reason.as_str(),
                    "skipping a JWKS entry"
                );
            }
        }
        if keys.is_empty() {
            return Err(KeySetError::Empty {
                origin: origin.to_owned(),
            });
        }
        Ok(KeySet { keys, skipped })
    }

    /// The key published under `kid`.
    pub fn get(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        self.keys.get(kid).cloned()
    }

    /// The entries left out, with the `kid` they carried and why.
    pub fn skipped(&self) -> &[(Option<String>, KeySkip)] {
        &self.skipped
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// One JWKS entry as a verification key, or why it is not one.
fn usable_key(raw: &serde_json::Value) -> Result<VerifyingKey, KeySkip> {
    let obj = raw.as_object().ok_or(KeySkip::Unreadable)?;
    if PRIVATE_MEMBERS.iter().any(|m| obj.contains_key(*m)) {
        return Err(if obj.get("kty").and_then(|v| v.as_str()) == Some("oct") {
            KeySkip::Symmetric
        } else {
            KeySkip::PrivateKey
        });
    }
    match obj.get("kty").and_then(|v| v.as_str()) {
        Some("oct") => return Err(KeySkip::Symmetric),
        Some("RSA" | "EC" | "OKP") => {}
        Some(_) => return Err(KeySkip::Unsupported),
        None => return Err(KeySkip::Unreadable),
    }
    match obj.get("use") {
        None => {}
        Some(serde_json::Value::String(u)) if u == "sig" => {}
        Some(_) => return Err(KeySkip::NotForSignatures),
    }
    if let Some(ops) = obj.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !verify {
            return Err(KeySkip::NoVerifyOp);
        }
    }
    let alg = match obj.get("alg") {
        None => None,
        Some(serde_json::Value::String(a)) => Some(
            crate::config::SUPPORTED_ALGORITHMS
                .contains(&a.as_str())
                .then(|| a.parse::<Algorithm>().ok())
                .flatten()
                .ok_or(KeySkip::Unsupported)?,
        ),
        Some(_) => return Err(KeySkip::Unreadable),
    };
    let jwk: Jwk = serde_json::from_value(raw.clone()).map_err(|_| KeySkip::Unreadable)?;
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            check_rsa(&rsa.n, &rsa.e)?;
            Family::Rsa
        }
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Family::P256,
            EllipticCurve::P384 => Family::P384,
            _ => return Err(KeySkip::Unsupported),
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Family::Ed25519
        }
        AlgorithmParameters::OctetKey(_) => return Err(KeySkip::Symmetric),
        _ => return Err(KeySkip::Unsupported),
    };
    if let Some(a) = alg {
        if !family.fits(a) {
            return Err(KeySkip::AlgMismatch);
        }
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| KeySkip::InvalidKey)?;
    // Building a verifier decodes the key material: an EC point must lie on its curve, an
    // Ed25519 point must decompress.
    let provider =
        jsonwebtoken::crypto::CryptoProvider::try_get_default().ok_or(KeySkip::Unsupported)?;
    (provider.verifier_factory)(&family.probe_algorithm(), &key)
        .map_err(|_| KeySkip::InvalidKey)?;
    Ok(VerifyingKey { key, family, alg })
}

/// The RSA modulus is 2048 to 8192 bits and the public exponent is 65537.
fn check_rsa(n: &str, e: &str) -> Result<(), KeySkip> {
    let n = URL_SAFE_NO_PAD
        .decode(n.as_bytes())
        .map_err(|_| KeySkip::InvalidKey)?;
    let e = URL_SAFE_NO_PAD
        .decode(e.as_bytes())
        .map_err(|_| KeySkip::InvalidKey)?;
    let n = strip_leading_zeros(&n);
    let bits = match n.first() {
        Some(top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    };
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(KeySkip::WeakRsa);
    }
    if strip_leading_zeros(&e) != [1, 0, 1] {
        return Err(KeySkip::BadRsaExponent);
    }
    Ok(())
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    b.get(start..).unwrap_or_default()
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
        self.keys.load().get(kid)
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
