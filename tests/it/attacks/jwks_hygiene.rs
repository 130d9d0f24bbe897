//! JWKS hygiene (issue 6, family 2): an issuer's key set may hold entries wardgate must never
//! verify with — encryption keys, keys whose `key_ops` lack `verify`, an `alg` that does not fit
//! the key, weak RSA, ambiguous `kid`s, shared secrets, leaked private keys, points off the
//! curve. Each is signed for with the matching private key where one exists, so only hygiene
//! stands between the token and a 200.

use std::sync::OnceLock;

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Map, Value};
use wardgate::auth::jwks::{KeySet, KeySkip};

use super::{assert_refused, Case, Want};
use crate::support::*;

/// Extra key material: a 1024-bit RSA key, an RSA key with e = 3, an EC key whose private part
/// is "leaked", and the issuer's RSA private parameters.
struct Extra {
    weak: (EncodingKey, Vec<u8>, Vec<u8>),
    e3: (EncodingKey, Vec<u8>, Vec<u8>),
    leaked_ec: (EncodingKey, Value),
    issuer_rsa_private: Value,
}

fn rsa_material(key: rsa::RsaPrivateKey) -> (EncodingKey, Vec<u8>, Vec<u8>) {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    use rsa::traits::PublicKeyParts;
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    (
        EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        key.n().to_bytes_be(),
        key.e().to_bytes_be(),
    )
}

fn extra() -> &'static Extra {
    static EXTRA: OnceLock<Extra> = OnceLock::new();
    EXTRA.get_or_init(|| {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::traits::{PrivateKeyParts, PublicKeyParts};
        let mut rng = rand::rngs::OsRng;
        let weak = rsa_material(rsa::RsaPrivateKey::new(&mut rng, 1024).unwrap());
        let e3 = rsa_material(
            rsa::RsaPrivateKey::new_with_exp(&mut rng, 2048, &rsa::BigUint::from(3u32)).unwrap(),
        );
        let sk = p256::SecretKey::random(&mut rng);
        let point = sk.public_key().to_encoded_point(false);
        let leaked_ec = (
            EncodingKey::from_ec_pem(sk.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap(),
            json!({ "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
                    "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
                    "d": b64(sk.to_bytes()) }),
        );
        let issuer = rsa::RsaPrivateKey::from_pkcs8_pem(&keys().rsa_private_pem).unwrap();
        let primes = issuer.primes();
        let issuer_rsa_private = json!({
            "kty": "RSA", "use": "sig", "alg": "RS256",
            "n": b64(issuer.n().to_bytes_be()), "e": b64(issuer.e().to_bytes_be()),
            "d": b64(issuer.d().to_bytes_be()),
            "p": b64(primes[0].to_bytes_be()), "q": b64(primes[1].to_bytes_be()),
        });
        Extra {
            weak,
            e3,
            leaked_ec,
            issuer_rsa_private,
        }
    })
}

fn with_kid(mut jwk: Value, kid: &str, extra: Value) -> Value {
    jwk["kid"] = json!(kid);
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            jwk.as_object_mut().unwrap().remove(k);
        } else {
            jwk[k] = v.clone();
        }
    }
    jwk
}

/// Who signs the token that names a hostile entry.
enum By {
    IssuerRsa,
    IssuerEc,
    Weak,
    E3,
    LeakedEc,
    Hmac(Vec<u8>),
}

struct Entry {
    kid: &'static str,
    jwk: Value,
    by: By,
    /// What the key set must say about it.
    skip: KeySkip,
}

fn entries() -> Vec<Entry> {
    let x = extra();
    let rsa = rsa_jwk(RSA_KID, "RS256");
    let ec = ec_jwk(EC_KID);
    let rsa_e = |n: &[u8], e: &[u8]| json!({ "kty": "RSA", "use": "sig", "alg": "RS256", "n": b64(n), "e": b64(e) });
    let mut off_curve = ec.clone();
    let mut y = keys().ec_y.clone();
    y[31] ^= 1;
    off_curve["y"] = json!(b64(&y));
    let secret = b"an hmac secret of thirty-two bytes!!".to_vec();
    let e = |kid, jwk, by, skip| Entry { kid, jwk, by, skip };
    vec![
        e(
            "enc-rsa",
            with_kid(rsa.clone(), "enc-rsa", json!({ "use": "enc" })),
            By::IssuerRsa,
            KeySkip::NotForSignatures,
        ),
        e(
            "enc-ec",
            with_kid(ec.clone(), "enc-ec", json!({ "use": "enc" })),
            By::IssuerEc,
            KeySkip::NotForSignatures,
        ),
        e(
            "use-upper",
            with_kid(rsa.clone(), "use-upper", json!({ "use": "SIG" })),
            By::IssuerRsa,
            KeySkip::NotForSignatures,
        ),
        e(
            "use-number",
            with_kid(rsa.clone(), "use-number", json!({ "use": 1 })),
            By::IssuerRsa,
            KeySkip::NotForSignatures,
        ),
        e(
            "ops-encrypt",
            with_kid(
                rsa.clone(),
                "ops-encrypt",
                json!({ "use": null, "key_ops": ["encrypt"] }),
            ),
            By::IssuerRsa,
            KeySkip::NoVerifyOp,
        ),
        e(
            "ops-sign",
            with_kid(
                ec.clone(),
                "ops-sign",
                json!({ "use": null, "key_ops": ["sign"] }),
            ),
            By::IssuerEc,
            KeySkip::NoVerifyOp,
        ),
        e(
            "ops-string",
            with_kid(rsa.clone(), "ops-string", json!({ "key_ops": "verify" })),
            By::IssuerRsa,
            KeySkip::NoVerifyOp,
        ),
        e(
            "ops-empty",
            with_kid(rsa.clone(), "ops-empty", json!({ "key_ops": [] })),
            By::IssuerRsa,
            KeySkip::NoVerifyOp,
        ),
        e(
            "ec-alg-es384",
            with_kid(ec.clone(), "ec-alg-es384", json!({ "alg": "ES384" })),
            By::IssuerEc,
            KeySkip::AlgMismatch,
        ),
        e(
            "ec-alg-rs256",
            with_kid(ec.clone(), "ec-alg-rs256", json!({ "alg": "RS256" })),
            By::IssuerEc,
            KeySkip::AlgMismatch,
        ),
        e(
            "rsa-alg-es256",
            with_kid(rsa.clone(), "rsa-alg-es256", json!({ "alg": "ES256" })),
            By::IssuerRsa,
            KeySkip::AlgMismatch,
        ),
        e(
            "ec-crv-p384",
            with_kid(
                ec.clone(),
                "ec-crv-p384",
                json!({ "crv": "P-384", "alg": null }),
            ),
            By::IssuerEc,
            KeySkip::InvalidKey,
        ),
        e(
            "rsa-alg-none",
            with_kid(rsa.clone(), "rsa-alg-none", json!({ "alg": "none" })),
            By::IssuerRsa,
            KeySkip::Unsupported,
        ),
        e(
            "rsa-alg-hs256",
            with_kid(rsa.clone(), "rsa-alg-hs256", json!({ "alg": "HS256" })),
            By::IssuerRsa,
            KeySkip::Unsupported,
        ),
        e(
            "rsa-1024",
            with_kid(rsa_e(&x.weak.1, &x.weak.2), "rsa-1024", json!({})),
            By::Weak,
            KeySkip::WeakRsa,
        ),
        e(
            "rsa-e3",
            with_kid(rsa_e(&x.e3.1, &x.e3.2), "rsa-e3", json!({})),
            By::E3,
            KeySkip::BadRsaExponent,
        ),
        e(
            "rsa-e1",
            with_kid(rsa.clone(), "rsa-e1", json!({ "e": b64([1u8]) })),
            By::IssuerRsa,
            KeySkip::BadRsaExponent,
        ),
        e(
            "dup",
            with_kid(rsa.clone(), "dup", json!({})),
            By::IssuerRsa,
            KeySkip::DuplicateKid,
        ),
        e(
            "dup",
            with_kid(rsa.clone(), "dup", json!({})),
            By::IssuerRsa,
            KeySkip::DuplicateKid,
        ),
        e(
            "dup-mixed",
            with_kid(rsa.clone(), "dup-mixed", json!({})),
            By::IssuerRsa,
            KeySkip::DuplicateKid,
        ),
        e(
            "dup-mixed",
            with_kid(ec.clone(), "dup-mixed", json!({})),
            By::IssuerEc,
            KeySkip::DuplicateKid,
        ),
        e(
            "oct",
            json!({ "kty": "oct", "kid": "oct", "use": "sig", "alg": "HS256", "k": b64(&secret) }),
            By::Hmac(secret.clone()),
            KeySkip::Symmetric,
        ),
        e(
            "leaked-rsa",
            with_kid(x.issuer_rsa_private.clone(), "leaked-rsa", json!({})),
            By::IssuerRsa,
            KeySkip::PrivateKey,
        ),
        e(
            "leaked-ec",
            with_kid(x.leaked_ec.1.clone(), "leaked-ec", json!({})),
            By::LeakedEc,
            KeySkip::PrivateKey,
        ),
        e(
            "off-curve",
            with_kid(off_curve, "off-curve", json!({})),
            By::IssuerEc,
            KeySkip::InvalidKey,
        ),
        e(
            "x25519",
            json!({ "kty": "OKP", "crv": "X25519", "kid": "x25519", "x": b64([9u8; 32]) }),
            By::IssuerEc,
            KeySkip::Unsupported,
        ),
        e(
            "p521",
            json!({ "kty": "EC", "crv": "P-521", "kid": "p521", "x": b64([1u8; 66]), "y": b64([2u8; 66]) }),
            By::IssuerEc,
            KeySkip::Unsupported,
        ),
    ]
}

fn document() -> Value {
    let mut keys: Vec<Value> = vec![rsa_jwk(RSA_KID, "RS256"), ec_jwk(EC_KID)];
    keys.extend(entries().into_iter().map(|e| e.jwk));
    json!({ "keys": keys })
}

fn token_for(entry: &Entry, claims: &Map<String, Value>) -> String {
    let x = extra();
    let (alg, key) = match &entry.by {
        By::IssuerRsa => (Algorithm::RS256, keys().rsa.clone()),
        By::IssuerEc => (Algorithm::ES256, keys().ec.clone()),
        By::Weak => (Algorithm::RS256, x.weak.0.clone()),
        By::E3 => (Algorithm::RS256, x.e3.0.clone()),
        By::LeakedEc => (Algorithm::ES256, x.leaked_ec.0.clone()),
        By::Hmac(s) => (Algorithm::HS256, EncodingKey::from_secret(s).unwrap()),
    };
    let mut h = jsonwebtoken::Header::new(alg);
    h.kid = Some(entry.kid.to_owned());
    jsonwebtoken::encode(&h, claims, &key).unwrap()
}

#[test]
fn the_key_set_leaves_out_every_unfit_entry_and_says_why() {
    let doc = document();
    let set = KeySet::parse(doc.to_string().as_bytes(), "test").expect("the good keys remain");
    assert_eq!(set.len(), 2, "only rsa-1 and ec-1 are usable");
    assert!(set.get(RSA_KID).is_some() && set.get(EC_KID).is_some());
    let mut failures = Vec::new();
    for e in entries() {
        if set.get(e.kid).is_some() {
            failures.push(format!("{}: usable, want {:?}", e.kid, e.skip));
            continue;
        }
        let reasons: Vec<KeySkip> = set
            .skipped()
            .iter()
            .filter(|(k, _)| k.as_deref() == Some(e.kid))
            .map(|(_, r)| *r)
            .collect();
        if !reasons.contains(&e.skip) {
            failures.push(format!(
                "{}: skipped as {reasons:?}, want {:?}",
                e.kid, e.skip
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // A set with nothing usable is refused as a whole (the last good keys stay installed).
    let only_bad = json!({ "keys": entries().into_iter().map(|e| e.jwk).collect::<Vec<_>>() });
    assert!(KeySet::parse(only_bad.to_string().as_bytes(), "test").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_naming_unfit_keys_are_refused_and_the_good_keys_still_work() {
    let fx = fixture().jwks(document()).start().await;
    // The issuer allows the algorithms these tokens use; only key hygiene refuses them.
    let mut cases = Vec::new();
    for e in entries() {
        let t = token_for(&e, &claims("dr-ada", &["doctor"]));
        cases.push(Case::get(
            format!("kid {} ({:?})", e.kid, e.skip),
            "/patients/p-1",
            &[("Authorization", &format!("Bearer {t}"))],
            Want::invalid_token("invalid_token*"),
        ));
    }
    let good = [
        token("dr-ada", &["doctor"]),
        es256(&claims("dr-ada", &["doctor"])),
    ];
    for t in &good {
        let r = fx.get("/patients/p-1", t).send().await.unwrap();
        assert_eq!(r.status(), 200, "a good key stopped working");
    }
    let responses = super::send_all(fx.proxy, &cases).await;
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    let failures = super::check_refusals(&cases, &responses, &records);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        forwarded.len(),
        good.len(),
        "only the good tokens went through"
    );
    assert_eq!(records.len(), cases.len() + good.len());
}

/// The refusal is by the key set, not the allow-list: the same entries with the issuer allowing
/// every asymmetric algorithm are still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_allow_list_does_not_make_unfit_keys_usable() {
    let fx = fixture()
        .jwks(document())
        .set(
            "jwt.issuers.0.algorithms",
            json!([
                "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"
            ]),
        )
        .start()
        .await;
    let cases: Vec<Case> = entries()
        .iter()
        .map(|e| {
            Case::get(
                format!("kid {}", e.kid),
                "/patients/p-1",
                &[(
                    "Authorization",
                    &format!("Bearer {}", token_for(e, &claims("dr-ada", &["doctor"]))),
                )],
                Want::invalid_token("invalid_token*"),
            )
        })
        .collect();
    assert_refused(fx, &cases).await;
}
