//! Signing keys made in the test process, the JWKS that publishes them, and tokens: well-formed
//! ones through `jsonwebtoken::encode`, hostile ones assembled by hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

pub const ISSUER: &str = "https://idp.test";
pub const AUDIENCE: &str = "records-api";
pub const RSA_KID: &str = "rsa-1";
pub const EC_KID: &str = "ec-1";

/// The issuer's keys (published in the JWKS) and an attacker's EC key (published nowhere).
pub struct Keys {
    pub rsa_private_pem: String,
    /// SPKI `-----BEGIN PUBLIC KEY-----` form: what an HS256 key-confusion attack would use.
    pub rsa_public_pem: String,
    pub rsa_n: Vec<u8>,
    pub rsa_e: Vec<u8>,
    pub ec_x: Vec<u8>,
    pub ec_y: Vec<u8>,
    pub rsa: EncodingKey,
    pub ec: EncodingKey,
    pub attacker_ec: EncodingKey,
    pub attacker_ec_x: Vec<u8>,
    pub attacker_ec_y: Vec<u8>,
}

/// Generated once per test process (RSA-2048 keygen is the slow part).
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(make_keys)
}

fn ec_key() -> (EncodingKey, Vec<u8>, Vec<u8>) {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let pem = sk.to_pkcs8_pem(LineEnding::LF).expect("p256 pkcs8 pem");
    let point = sk.public_key().to_encoded_point(false);
    let x = point.x().expect("uncompressed x").to_vec();
    let y = point.y().expect("uncompressed y").to_vec();
    let key = EncodingKey::from_ec_pem(pem.as_bytes()).expect("jsonwebtoken reads the EC pem");
    (key, x, y)
}

fn make_keys() -> Keys {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    use rsa::traits::PublicKeyParts;
    let rsa_key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("rsa keygen");
    let rsa_private_pem = rsa_key
        .to_pkcs8_pem(LineEnding::LF)
        .expect("rsa pkcs8 pem")
        .to_string();
    let rsa_public_pem = rsa_key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("rsa spki pem");
    let rsa =
        EncodingKey::from_rsa_pem(rsa_private_pem.as_bytes()).expect("jsonwebtoken reads rsa");
    let (ec, ec_x, ec_y) = ec_key();
    let (attacker_ec, attacker_ec_x, attacker_ec_y) = ec_key();
    Keys {
        rsa_n: rsa_key.n().to_bytes_be(),
        rsa_e: rsa_key.e().to_bytes_be(),
        rsa_private_pem,
        rsa_public_pem,
        ec_x,
        ec_y,
        rsa,
        ec,
        attacker_ec,
        attacker_ec_x,
        attacker_ec_y,
    }
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn rsa_jwk(kid: &str, alg: &str) -> Value {
    let k = keys();
    json!({ "kty": "RSA", "kid": kid, "alg": alg, "use": "sig", "n": b64(&k.rsa_n), "e": b64(&k.rsa_e) })
}

pub fn ec_jwk(kid: &str) -> Value {
    let k = keys();
    json!({ "kty": "EC", "kid": kid, "alg": "ES256", "use": "sig", "crv": "P-256",
            "x": b64(&k.ec_x), "y": b64(&k.ec_y) })
}

/// The attacker's public key as a JWK (for the embedded-`jwk` header attack).
pub fn attacker_jwk() -> Value {
    let k = keys();
    json!({ "kty": "EC", "crv": "P-256", "x": b64(&k.attacker_ec_x), "y": b64(&k.attacker_ec_y) })
}

/// The issuer's JWKS: `rsa-1` (RS256) and `ec-1` (ES256).
pub fn jwks() -> Value {
    json!({ "keys": [rsa_jwk(RSA_KID, "RS256"), ec_jwk(EC_KID)] })
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Claims of a good token: issuer, audience, subject, roles, issued now, valid ten minutes, and
/// a `jti` that makes every token distinct (so no token cache can stand in for verification).
pub fn claims(sub: &str, roles: &[&str]) -> Map<String, Value> {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let now = now();
    let mut m = Map::new();
    m.insert(
        "jti".into(),
        json!(format!("t-{}", SERIAL.fetch_add(1, Ordering::Relaxed))),
    );
    m.insert("iss".into(), json!(ISSUER));
    m.insert("aud".into(), json!(AUDIENCE));
    m.insert("sub".into(), json!(sub));
    m.insert("roles".into(), json!(roles));
    m.insert("iat".into(), json!(now));
    m.insert("exp".into(), json!(now + 600));
    m
}

/// Claims plus `amr`.
pub fn claims_amr(sub: &str, roles: &[&str], amr: &[&str]) -> Map<String, Value> {
    let mut m = claims(sub, roles);
    m.insert("amr".into(), json!(amr));
    m
}

/// RS256 under `rsa-1`.
pub fn rs256(claims: &Map<String, Value>) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(RSA_KID.into());
    jsonwebtoken::encode(&h, claims, &keys().rsa).expect("encode rs256")
}

/// ES256 under `ec-1`.
pub fn es256(claims: &Map<String, Value>) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(EC_KID.into());
    jsonwebtoken::encode(&h, claims, &keys().ec).expect("encode es256")
}

/// A good RS256 token for `sub` with `roles`.
pub fn token(sub: &str, roles: &[&str]) -> String {
    rs256(&claims(sub, roles))
}

/// A good RS256 token with `amr`.
pub fn token_amr(sub: &str, roles: &[&str], amr: &[&str]) -> String {
    rs256(&claims_amr(sub, roles, amr))
}

/// Who signs a hand-made token.
pub enum Signer<'a> {
    /// The issuer's RSA key with this RSA-family algorithm (RS256, RS384, PS256, …).
    Rsa(Algorithm),
    /// The issuer's EC key, ES256.
    Ec,
    /// A key nobody published, ES256.
    AttackerEc,
    /// HMAC-SHA256 with this secret.
    Hs256(&'a [u8]),
    /// An empty signature (`alg: none`).
    Empty,
}

/// `base64url(header_json).base64url(payload_json).signature`, the JSON texts used verbatim
/// (so duplicate keys and odd values survive).
pub fn raw_jwt(header_json: &str, payload_json: &str, signer: Signer<'_>) -> String {
    let message = format!("{}.{}", b64(header_json), b64(payload_json));
    let k = keys();
    let sig = match signer {
        Signer::Rsa(alg) => jsonwebtoken::crypto::sign(message.as_bytes(), &k.rsa, alg),
        Signer::Ec => jsonwebtoken::crypto::sign(message.as_bytes(), &k.ec, Algorithm::ES256),
        Signer::AttackerEc => {
            jsonwebtoken::crypto::sign(message.as_bytes(), &k.attacker_ec, Algorithm::ES256)
        }
        Signer::Hs256(secret) => jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(secret).expect("hmac key"),
            Algorithm::HS256,
        ),
        Signer::Empty => Ok(String::new()),
    }
    .expect("sign");
    format!("{message}.{sig}")
}

/// A hand-made token from a header object and claims.
pub fn jwt_with_header(header: &Value, claims: &Map<String, Value>, signer: Signer<'_>) -> String {
    raw_jwt(
        &serde_json::to_string(header).expect("header json"),
        &serde_json::to_string(claims).expect("claims json"),
        signer,
    )
}
