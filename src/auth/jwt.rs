//! The token rules. jsonwebtoken reads the keys and ring checks the signature (see
//! [`VerifyingKey::verify`]); everything around it is checked here, because the library
//! accepts what a clinic must not: `crit`, any `typ`, `jku`/`x5u`/`jwk`
//! headers, an `iss` array, an `iat` in the future, duplicate claim keys (last one wins).
//!
//! Three stages, each a plain function: [`preparse`] (size, shape, header rules — no key, no
//! cryptography), key selection by `kid` with the algorithm allow-list and the key's own
//! constraints, then the signature. [`verify_jws`] runs the same stages against one
//! [`KeySet`] without reading claims (the Wycheproof vectors and the fuzzer use it).

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::jwks::{KeySet, VerifyingKey};
use super::{AttrValue, Authenticator, Principal};

/// Why a token was refused; [`TokenError::reason`] is the audit reason and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not a compact JWS")]
    Malformed,
    #[error("token is longer than 8 KiB")]
    TooLong,
    #[error("token header is not valid")]
    BadHeader,
    #[error("algorithm is not allowed for this issuer")]
    AlgorithmNotAllowed,
    #[error("token header carries a forbidden parameter")]
    ForbiddenHeader,
    #[error("token type is not JWT or at+jwt")]
    BadType,
    #[error("token has no key id")]
    MissingKid,
    #[error("no key with this key id")]
    UnknownKid,
    #[error("signature does not verify")]
    BadSignature,
    #[error("token claims are not a valid JSON object")]
    BadClaims,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token was issued in the future")]
    IssuedInFuture,
    #[error("`exp` is missing or not a number")]
    BadExpiry,
    #[error("`iss` is missing or not a configured issuer")]
    BadIssuer,
    #[error("`aud` holds no configured audience")]
    BadAudience,
    #[error("`sub` is missing or empty")]
    BadSubject,
    #[error("roles claim is not an array of plain strings")]
    BadRoles,
}

impl TokenError {
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Malformed => "invalid_token: malformed",
            TokenError::TooLong => "invalid_token: too_long",
            TokenError::BadHeader => "invalid_token: bad_header",
            TokenError::AlgorithmNotAllowed => "invalid_token: algorithm",
            TokenError::ForbiddenHeader => "invalid_token: forbidden_header",
            TokenError::BadType => "invalid_token: typ",
            TokenError::MissingKid => "invalid_token: missing_kid",
            TokenError::UnknownKid => "invalid_token: unknown_kid",
            TokenError::BadSignature => "invalid_token: signature",
            TokenError::BadClaims => "invalid_token: claims",
            TokenError::Expired => "invalid_token: expired",
            TokenError::NotYetValid => "invalid_token: not_yet_valid",
            TokenError::IssuedInFuture => "invalid_token: iat_in_future",
            TokenError::BadExpiry => "invalid_token: exp",
            TokenError::BadIssuer => "invalid_token: issuer",
            TokenError::BadAudience => "invalid_token: audience",
            TokenError::BadSubject => "invalid_token: subject",
            TokenError::BadRoles => "invalid_token: roles",
        }
    }
}

/// Header parameters that would let a token name its own key or demand unknown processing.
const FORBIDDEN_HEADERS: &[&str] = &["crit", "jku", "x5u", "jwk", "x5c"];

/// A compact JWS split into its parts, its header decoded and checked; nothing verified yet.
///
/// This is the token pre-parser: everything wardgate decides about a token before it looks up
/// a key happens in [`preparse`] (size cap, shape, header rules), so it is a fuzzing surface too.
#[derive(Debug)]
pub struct TokenParts<'t> {
    /// The `alg` header as written (checked against an allow-list later, never trusted).
    pub alg: String,
    /// The `kid` header (non-empty).
    pub kid: String,
    /// `base64url(header) "." base64url(payload)`: the bytes the signature covers.
    signing_input: &'t str,
    payload_b64: &'t str,
    signature_b64: &'t str,
}

impl TokenParts<'_> {
    /// The decoded payload bytes (strict base64url).
    pub fn payload(&self) -> Result<Vec<u8>, TokenError> {
        URL_SAFE_NO_PAD
            .decode(self.payload_b64.as_bytes())
            .map_err(|_| TokenError::Malformed)
    }

    /// The payload as a JSON object without duplicate keys.
    pub fn claims(&self) -> Result<BTreeMap<String, Value>, TokenError> {
        decode_object(self.payload_b64).map_err(|_| TokenError::BadClaims)
    }
}

/// Splits a compact JWS and applies the header rules: at most [`super::MAX_TOKEN_BYTES`],
/// exactly three parts (a JWE's five and the JSON serialization are refused), a header that is
/// strict base64url of a JSON object without duplicate keys, no `crit`/`jku`/`x5u`/`jwk`/`x5c`,
/// `typ` (when present) `JWT` or `at+jwt`, a string `alg` and a non-empty string `kid`.
pub fn preparse(token: &str) -> Result<TokenParts<'_>, TokenError> {
    if token.len() > super::MAX_TOKEN_BYTES {
        return Err(TokenError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    if h64.is_empty() || s64.is_empty() {
        return Err(TokenError::Malformed);
    }
    let mut header = decode_object(h64).map_err(|_| TokenError::BadHeader)?;
    if FORBIDDEN_HEADERS.iter().any(|k| header.contains_key(*k)) {
        return Err(TokenError::ForbiddenHeader);
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) if is_jwt_type(t) => {}
        Some(_) => return Err(TokenError::BadType),
    }
    let Some(Value::String(alg)) = header.remove("alg") else {
        return Err(TokenError::BadHeader);
    };
    let kid = match header.remove("kid") {
        Some(Value::String(k)) if !k.is_empty() => k,
        Some(Value::String(_)) | None => return Err(TokenError::MissingKid),
        Some(_) => return Err(TokenError::BadHeader),
    };
    let signing_input = token
        .get(..h64.len() + 1 + p64.len())
        .ok_or(TokenError::Malformed)?;
    Ok(TokenParts {
        alg,
        kid,
        signing_input,
        payload_b64: p64,
        signature_b64: s64,
    })
}

/// The token's `alg` as an algorithm this issuer allows.
fn allowed_algorithm(parts: &TokenParts<'_>, allow: &[String]) -> Result<Algorithm, TokenError> {
    if !allow.contains(&parts.alg) {
        return Err(TokenError::AlgorithmNotAllowed);
    }
    parts
        .alg
        .parse()
        .map_err(|_| TokenError::AlgorithmNotAllowed)
}

/// Checks the signature with the key the `kid` selected.
fn check_signature(
    parts: &TokenParts<'_>,
    key: &VerifyingKey,
    alg: Algorithm,
) -> Result<(), TokenError> {
    if !key.accepts(alg) {
        return Err(TokenError::AlgorithmNotAllowed);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(parts.signature_b64)
        .map_err(|_| TokenError::BadSignature)?;
    if key.verify(alg, parts.signing_input.as_bytes(), &signature) {
        Ok(())
    } else {
        Err(TokenError::BadSignature)
    }
}

/// Verifies a compact JWS against one key set exactly as live traffic is verified — the
/// header rules, the algorithm allow-list, key selection by `kid`, the key's own constraints and
/// the signature — and returns the payload bytes. No claim is read: this is the layer the
/// Wycheproof vectors exercise.
pub fn verify_jws(
    keys: &KeySet,
    algorithms: &[String],
    token: &str,
) -> Result<Vec<u8>, TokenError> {
    let parts = preparse(token)?;
    let alg = allowed_algorithm(&parts, algorithms)?;
    let key = keys.get(&parts.kid).ok_or(TokenError::UnknownKid)?;
    check_signature(&parts, &key, alg)?;
    parts.payload()
}

/// Verifies a compact JWS and builds the principal. `now` is seconds since the epoch.
pub(super) async fn verify(
    auth: &Authenticator,
    token: &str,
    now: u64,
) -> Result<Principal, TokenError> {
    let parts = preparse(token)?;
    let claims = parts.claims()?;

    // The issuer decides which algorithms and keys apply.
    let (issuer_index, issuer) = find_issuer(auth, &claims)?;
    let alg = allowed_algorithm(&parts, &issuer.config().algorithms)?;
    let key = match issuer.key(&parts.kid) {
        Some(k) => k,
        None => issuer
            .key_after_refresh(&parts.kid)
            .await
            .ok_or(TokenError::UnknownKid)?,
    };
    check_signature(&parts, &key, alg)?;

    // Time and audience, only after the signature holds.
    let leeway = auth.leeway;
    let exp = numeric_date(claims.get("exp"))?.ok_or(TokenError::BadExpiry)?;
    if now > exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = numeric_date(claims.get("nbf"))? {
        if nbf > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid);
        }
    }
    if let Some(iat) = numeric_date(claims.get("iat"))? {
        if iat > now.saturating_add(leeway) {
            return Err(TokenError::IssuedInFuture);
        }
    }
    check_audience(&claims, &issuer.config().audiences)?;
    build_principal(auth, &claims, issuer_index, &parts.kid, exp)
}

/// `wardgate test`: the claims of a test case, signature, time and audience unchecked.
pub(super) fn principal_from_unsigned_claims(
    auth: &Authenticator,
    claims: &Value,
) -> Result<Principal, TokenError> {
    let Value::Object(map) = claims else {
        return Err(TokenError::BadClaims);
    };
    let claims: BTreeMap<String, Value> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let (issuer_index, _) = find_issuer(auth, &claims)?;
    let exp = numeric_date(claims.get("exp"))?.unwrap_or(u64::MAX);
    build_principal(auth, &claims, issuer_index, "", exp)
}

fn is_jwt_type(t: &str) -> bool {
    let t = t
        .get(..12)
        .filter(|p| p.eq_ignore_ascii_case("application/"))
        .map_or(t, |_| t.get(12..).unwrap_or(""));
    t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case("at+jwt")
}

fn find_issuer<'a>(
    auth: &'a Authenticator,
    claims: &BTreeMap<String, Value>,
) -> Result<(usize, &'a super::IssuerKeys), TokenError> {
    let Some(Value::String(iss)) = claims.get("iss") else {
        return Err(TokenError::BadIssuer);
    };
    auth.issuers
        .iter()
        .enumerate()
        .find(|(_, i)| i.config().issuer == *iss)
        .map(|(n, i)| (n, i.as_ref()))
        .ok_or(TokenError::BadIssuer)
}

/// A NumericDate: a non-negative JSON number (fractions truncated). Strings, null and
/// anything outside u64 are refused rather than read as "absent".
fn numeric_date(v: Option<&Value>) -> Result<Option<u64>, TokenError> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else {
                match n.as_f64() {
                    Some(f) if (0.0..1.8e19).contains(&f) =>
                    {
                        #[expect(
                            clippy::cast_possible_truncation,
                            clippy::cast_sign_loss,
                            reason = "range checked above"
                        )]
                        Ok(Some(f as u64))
                    }
                    _ => Err(TokenError::BadExpiry),
                }
            }
        }
        Some(_) => Err(TokenError::BadExpiry),
    }
}

fn check_audience(
    claims: &BTreeMap<String, Value>,
    audiences: &[String],
) -> Result<(), TokenError> {
    let ok = match claims.get("aud") {
        Some(Value::String(a)) => audiences.iter().any(|x| x == a),
        Some(Value::Array(list)) => list.iter().any(|v| match v {
            Value::String(a) => audiences.iter().any(|x| x == a),
            _ => false,
        }),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(TokenError::BadAudience)
    }
}

fn claim_at<'v>(claims: &'v BTreeMap<String, Value>, path: &[String]) -> Option<&'v Value> {
    let (first, rest) = path.split_first()?;
    let mut v = claims.get(first)?;
    for seg in rest {
        v = v.as_object()?.get(seg)?;
    }
    Some(v)
}

fn build_principal(
    auth: &Authenticator,
    claims: &BTreeMap<String, Value>,
    issuer_index: usize,
    kid: &str,
    exp: u64,
) -> Result<Principal, TokenError> {
    let subject = match claims.get("sub") {
        // The subject travels in a header: no control characters.
        Some(Value::String(s)) if !s.is_empty() && !s.chars().any(char::is_control) => s.clone(),
        _ => return Err(TokenError::BadSubject),
    };
    let roles = match claim_at(claims, &auth.roles_claim) {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|r| match r {
                // Roles travel comma-separated in a header: no commas, no control characters.
                Value::String(s)
                    if !s.is_empty() && !s.chars().any(|c| c == ',' || c.is_control()) =>
                {
                    Ok(s.clone())
                }
                _ => Err(TokenError::BadRoles),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(TokenError::BadRoles),
    };
    let mut attributes: Vec<(String, AttrValue)> = auth
        .attributes
        .iter()
        .filter_map(|(name, path)| {
            claim_at(claims, path)
                .and_then(attr_value)
                .map(|v| (name.clone(), v))
        })
        .collect();
    if let Some(name) = &auth.scopes_attribute {
        attributes.push((name.clone(), AttrValue::Set(scopes(claims))));
    }
    let mfa = matches!(claims.get("amr"), Some(Value::Array(a))
        if a.iter().any(|m| matches!(m.as_str(), Some("mfa" | "otp" | "hwk" | "swk"))));
    let issuer = auth
        .issuers
        .get(issuer_index)
        .map(|i| i.config().issuer.clone())
        .unwrap_or_default();
    Ok(Principal {
        subject,
        issuer,
        roles,
        attributes,
        mfa,
        expires_at: exp,
        issuer_index,
        kid: kid.to_owned(),
    })
}

/// The token's scopes: RFC 9068's space-separated `scope` string (or an array, as some
/// issuers send), else Entra ID's `scp` (string) or Okta's `scp` (array). Anything else, and
/// no claim, is no scope at all; duplicates are dropped.
fn scopes(claims: &BTreeMap<String, Value>) -> Vec<AttrValue> {
    let claim = claims.get("scope").or_else(|| claims.get("scp"));
    let mut out: Vec<String> = match claim {
        Some(Value::String(s)) => s
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    out.sort();
    out.dedup();
    out.into_iter().map(AttrValue::String).collect()
}

/// Strings, integers, booleans and arrays of those become attributes; anything else is absent.
fn attr_value(v: &Value) -> Option<AttrValue> {
    match v {
        Value::String(s) => Some(AttrValue::String(s.clone())),
        Value::Bool(b) => Some(AttrValue::Bool(*b)),
        Value::Number(n) => n.as_i64().map(AttrValue::Long),
        Value::Array(a) => a
            .iter()
            .map(attr_value)
            .collect::<Option<Vec<_>>>()
            .map(AttrValue::Set),
        _ => None,
    }
}

/// Decodes one base64url segment as a JSON object, refusing duplicate keys at any depth.
pub fn decode_object(b64: &str) -> Result<BTreeMap<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64.as_bytes())
        .map_err(|_| TokenError::Malformed)?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let strict = StrictValue::deserialize_from(&mut de).map_err(|_| TokenError::BadClaims)?;
    de.end().map_err(|_| TokenError::BadClaims)?;
    match strict {
        Value::Object(m) => Ok(m.into_iter().collect()),
        _ => Err(TokenError::BadClaims),
    }
}

/// A JSON value whose objects may not repeat a key.
struct StrictValue;

impl StrictValue {
    fn deserialize_from<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if out.insert(k.clone(), v).is_some() {
                return Err(de::Error::custom(format_args!("duplicate key `{k}`")));
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(decode_object(&b64(r#"{"a":1,"b":2}"#)).is_ok());
        assert_eq!(
            decode_object(&b64(r#"{"roles":["x"],"roles":["admin"]}"#)),
            Err(TokenError::BadClaims)
        );
        assert_eq!(
            decode_object(&b64(r#"{"r":{"a":1,"a":2}}"#)),
            Err(TokenError::BadClaims)
        );
        assert_eq!(decode_object(&b64(r#"[1]"#)), Err(TokenError::BadClaims));
        assert_eq!(
            decode_object(&b64(r#"{"a":1} x"#)),
            Err(TokenError::BadClaims)
        );
        assert_eq!(decode_object("!!"), Err(TokenError::Malformed));
    }

    #[test]
    fn the_preparser_refuses_other_shapes_before_any_key() {
        let err = |t: String| preparse(&t).err();
        let h = b64(r#"{"alg":"RS256","kid":"k"}"#);
        let p = b64(r#"{"sub":"a"}"#);
        assert_eq!(err(format!("{h}.{p}.c2ln")), None);
        assert_eq!(
            err(format!("{h}.{p}.c2ln.x.y")),
            Some(TokenError::Malformed)
        );
        assert_eq!(err(format!("{h}.{p}.")), Some(TokenError::Malformed));
        let empty_payload = format!("{h}..c2ln");
        let parts = preparse(&empty_payload).expect("an empty payload pre-parses");
        assert_eq!(parts.claims().err(), Some(TokenError::BadClaims));
        let jku = b64(r#"{"alg":"RS256","kid":"k","jku":"https://x"}"#);
        assert_eq!(
            err(format!("{jku}.{p}.c2ln")),
            Some(TokenError::ForbiddenHeader)
        );
        let no_kid = b64(r#"{"alg":"RS256"}"#);
        assert_eq!(
            err(format!("{no_kid}.{p}.c2ln")),
            Some(TokenError::MissingKid)
        );
        let long = "a".repeat(super::super::MAX_TOKEN_BYTES + 1);
        assert_eq!(err(long), Some(TokenError::TooLong));
    }

    #[test]
    fn numeric_dates_refuse_strings_and_null() {
        assert_eq!(numeric_date(Some(&Value::from(10))), Ok(Some(10)));
        assert_eq!(numeric_date(Some(&Value::from(10.9))), Ok(Some(10)));
        assert_eq!(numeric_date(None), Ok(None));
        for bad in [
            Value::from("10"),
            Value::Null,
            Value::from(-1),
            Value::from(1e300),
        ] {
            assert_eq!(
                numeric_date(Some(&bad)),
                Err(TokenError::BadExpiry),
                "{bad}"
            );
        }
    }

    #[test]
    fn jwt_types() {
        for ok in [
            "JWT",
            "jwt",
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "application/JWT",
        ] {
            assert!(is_jwt_type(ok), "{ok}");
        }
        for bad in [
            "JOSE",
            "JOSE+JSON",
            "",
            "application/",
            "at+jwt ",
            "x-application/jwt",
        ] {
            assert!(!is_jwt_type(bad), "{bad}");
        }
    }

    #[test]
    fn audience_must_match_one() {
        let aud = vec!["records-api".to_owned()];
        let c = |v: Value| BTreeMap::from([("aud".to_owned(), v)]);
        assert!(check_audience(&c(Value::from("records-api")), &aud).is_ok());
        assert!(check_audience(&c(serde_json::json!(["x", "records-api"])), &aud).is_ok());
        assert!(check_audience(&c(serde_json::json!([""])), &aud).is_err());
        assert!(check_audience(&c(serde_json::json!([])), &aud).is_err());
        assert!(check_audience(&BTreeMap::new(), &aud).is_err());
    }
}
