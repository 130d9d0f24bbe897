//! Authentication: `Authorization` header → verified [`Principal`] or an [`AuthError`].
//!
//! [`jwt`] holds the token rules (the SPEC's and the ones jsonwebtoken does not enforce);
//! [`jwks`] holds each issuer's keys and their refresh. A verified-token cache keyed by the
//! SHA-256 of the token lets a client that reuses its token skip signature verification; an
//! entry never outlives the token's `exp`, and a hit still checks expiry and that the signing
//! key has not been withdrawn.

pub mod jwks;
pub mod jwt;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::AUTHORIZATION;
use http::HeaderMap;
use moka::sync::Cache;
use sha2::{Digest, Sha256};

use crate::config::JwtConfig;
use crate::metrics::Metrics;
pub use jwks::{IssuerKeys, KeySetError};
pub use jwt::TokenError;

/// A token longer than this is refused before any cryptography.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// A claim value carried into a principal attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    String(String),
    Long(i64),
    Bool(bool),
    Set(Vec<AttrValue>),
}

/// The verified caller, as the rest of wardgate sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub issuer: String,
    pub roles: Vec<String>,
    /// Configured principal attributes whose claim was present.
    pub attributes: Vec<(String, AttrValue)>,
    /// The `amr` claim holds `mfa`, `otp`, `hwk` or `swk`.
    pub mfa: bool,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// The issuer's index in the config and the key id that signed the token.
    pub(crate) issuer_index: usize,
    pub(crate) kid: String,
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("authorization scheme is not Bearer")]
    OtherScheme,
    #[error("more than one Authorization header")]
    DuplicateHeader,
    /// RFC 6750 §2: a client uses one method to send its token; wardgate reads only the header,
    /// so a token in the query next to one in the header is refused rather than ignored.
    #[error("bearer token in both the Authorization header and the query")]
    TokenInQueryAndHeader,
    #[error("invalid token: {0}")]
    Invalid(#[from] TokenError),
}

impl AuthError {
    /// The audit `reason` (a fixed vocabulary, also a metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::OtherScheme => "missing_token: scheme",
            AuthError::DuplicateHeader => "bad_request: duplicate_authorization",
            AuthError::TokenInQueryAndHeader => "bad_request: token_in_query",
            AuthError::Invalid(e) => e.reason(),
        }
    }
}

/// Verifies bearer tokens against the configured issuers.
pub struct Authenticator {
    issuers: Vec<Arc<IssuerKeys>>,
    leeway: u64,
    roles_claim: Vec<String>,
    attributes: Vec<(String, Vec<String>)>,
    scopes_attribute: Option<String>,
    cache: Cache<[u8; 32], Arc<Principal>>,
    metrics: Metrics,
}

struct UntilExp;

impl moka::Expiry<[u8; 32], Arc<Principal>> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<Principal>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(
            value.expires_at.saturating_sub(unix_now()),
        ))
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Authenticator {
    pub fn new(cfg: &JwtConfig, cache_entries: u64, metrics: Metrics) -> Result<Self, KeySetError> {
        let issuers = cfg
            .issuers
            .iter()
            .map(|i| IssuerKeys::new(i.clone(), metrics.clone()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            issuers,
            leeway: cfg.leeway.as_secs(),
            roles_claim: cfg.roles_claim.clone(),
            attributes: cfg.attributes.clone(),
            scopes_attribute: cfg.scopes_attribute.clone(),
            cache: Cache::builder()
                .max_capacity(cache_entries)
                .expire_after(UntilExp)
                .build(),
            metrics,
        })
    }

    /// Loads file keys and starts the background refresh of URL keys.
    pub async fn start(&self) -> Result<(), KeySetError> {
        for issuer in &self.issuers {
            issuer.clone().start().await?;
        }
        Ok(())
    }

    /// Every issuer has at least one usable key.
    pub fn is_ready(&self) -> bool {
        self.issuers.iter().all(|i| i.has_keys())
    }

    pub fn issuers(&self) -> &[Arc<IssuerKeys>] {
        &self.issuers
    }

    /// Authenticates a request from its headers. A token in the query (`access_token`, RFC 6750
    /// §2.3) never authenticates: alone it counts as no token, next to a header it is a 400.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Arc<Principal>, AuthError> {
        if query.is_some_and(has_query_token) && headers.contains_key(AUTHORIZATION) {
            return Err(AuthError::TokenInQueryAndHeader);
        }
        let token = bearer_token(headers)?;
        let result = self.verify(token).await;
        if let Err(e) = &result {
            self.metrics.jwt_failure(e.reason());
        }
        result
    }

    async fn verify(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong.into());
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = unix_now();
        if let Some(p) = self.cache.get(&digest) {
            let key_still_published = self
                .issuers
                .get(p.issuer_index)
                .is_some_and(|i| i.has_kid(&p.kid));
            if now <= p.expires_at.saturating_add(self.leeway) && key_still_published {
                self.metrics.token_cache(true);
                return Ok(p);
            }
            self.cache.invalidate(&digest);
        }
        self.metrics.token_cache(false);
        let principal = Arc::new(jwt::verify(self, token, now).await?);
        self.cache.insert(digest, principal.clone());
        Ok(principal)
    }

    /// Builds a principal from claims whose signature is not checked (`wardgate test`);
    /// every claim rule but the signature, expiry and audience still applies.
    pub fn principal_from_claims(
        &self,
        claims: &serde_json::Value,
    ) -> Result<Principal, TokenError> {
        jwt::principal_from_unsigned_claims(self, claims)
    }
}

/// The query names an `access_token` parameter (name percent-decoded, ASCII case ignored, `&`
/// or `;` separated: what lenient backends would read).
fn has_query_token(query: &str) -> bool {
    query.split(['&', ';']).any(|pair| {
        let name = pair.split('=').next().unwrap_or("");
        let name = percent_decode_lossy(name);
        name.eq_ignore_ascii_case("access_token")
    })
}

fn percent_decode_lossy(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
        match (c, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(0));
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `scheme SP something`, as one element of a comma-folded `Authorization` list.
fn looks_like_credential(part: &str) -> bool {
    let part = part.trim_start_matches([' ', '\t']);
    let Some((scheme, rest)) = part.split_once([' ', '\t']) else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+.^_`|~-".contains(c))
        && !rest.trim().is_empty()
}

/// Extracts the token from exactly one `Authorization: Bearer` header.
fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::Missing)?;
    if values.next().is_some() {
        return Err(AuthError::DuplicateHeader);
    }
    let value = value.to_str().map_err(|_| TokenError::Malformed)?;
    // `Bearer a, Bearer b`: two credentials folded into one header is two headers.
    if value.split(',').skip(1).any(looks_like_credential) {
        return Err(AuthError::DuplicateHeader);
    }
    // RFC 6750 §3.1: another scheme is no bearer credential at all, not an invalid one.
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::OtherScheme);
    }
    let token = token.trim_matches(' ');
    if token.is_empty() {
        return Err(TokenError::Malformed.into());
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_single() {
        assert_eq!(bearer_token(&headers(&["Bearer abc"])), Ok("abc"));
        assert_eq!(bearer_token(&headers(&["bEaReR abc"])), Ok("abc"));
        assert_eq!(bearer_token(&headers(&[])), Err(AuthError::Missing));
        assert_eq!(
            bearer_token(&headers(&["Bearer a", "Bearer b"])),
            Err(AuthError::DuplicateHeader)
        );
        assert_eq!(
            bearer_token(&headers(&["Basic dXNlcjpwYXNz"])),
            Err(AuthError::OtherScheme)
        );
        assert_eq!(
            bearer_token(&headers(&["Bearer "])),
            Err(AuthError::Invalid(TokenError::Malformed))
        );
    }

    #[test]
    fn query_tokens_are_found_however_spelled() {
        for q in [
            "access_token=x",
            "a=1&access_token=x",
            "a=1;ACCESS_TOKEN=x",
            "access%5Ftoken=x",
            "access_token",
        ] {
            assert!(has_query_token(q), "{q}");
        }
        for q in ["", "token=x", "x=access_token", "access_tokens=1"] {
            assert!(!has_query_token(q), "{q}");
        }
    }
}
