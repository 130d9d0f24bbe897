//! Tokens (issue 6, family 1): forged, confused, malformed, oversized, misplaced and
//! ambiguous bearer credentials are refused before anything is forwarded; the boundaries that
//! must still pass do. `tests/it/auth.rs` holds the first cases; these extend them.
//!
//! Deliberately allowed: an `aud` array that holds a configured audience among others
//! (RFC 7519 §4.1.3; the SPEC says "must contain one"), an `exp` far in the future but a valid
//! NumericDate (token lifetime is the issuer's call), several spaces between `Bearer` and the
//! token (RFC 6750's `1*SP`).

use std::time::Instant;

use jsonwebtoken::Algorithm;
use serde_json::{json, Map, Value};
use tokio::task::JoinSet;

use super::{assert_refused, Case, Want};
use crate::support::hostile::rsa_public_key_encodings;
use crate::support::servers::JwksServer;
use crate::support::*;

const PATH: &str = "/patients/p-1";

fn with(f: impl FnOnce(&mut Map<String, Value>)) -> Map<String, Value> {
    let mut c = claims("dr-ada", &["doctor"]);
    f(&mut c);
    c
}

fn rsa_header(extra: Value) -> Value {
    let mut h = json!({ "alg": "RS256", "typ": "JWT", "kid": RSA_KID });
    for (k, v) in extra.as_object().expect("object") {
        h[k] = v.clone();
    }
    h
}

fn signed_rsa(header: Value) -> String {
    jwt_with_header(
        &header,
        &claims("dr-ada", &["doctor"]),
        Signer::Rsa(Algorithm::RS256),
    )
}

/// A token with this `Authorization` value.
fn auth_case(name: impl Into<String>, authorization: &str, want: Want) -> Case {
    Case::get(name, PATH, &[("Authorization", authorization)], want)
}

fn bearer_case(name: impl Into<String>, token: &str, want: Want) -> Case {
    auth_case(name, &format!("Bearer {token}"), want)
}

fn invalid(name: impl Into<String>, token: &str) -> Case {
    bearer_case(name, token, Want::invalid_token("invalid_token*"))
}

/// Claims JSON with `roles` written twice (the last one would win in a `HashMap` decode).
fn duplicate_key_payload(key: &str, first: &str, second: &str) -> String {
    let mut c = claims("rx-bob", &["receptionist"]);
    c.remove(key);
    let body = serde_json::to_string(&c).unwrap();
    format!(
        "{{\"{key}\":{first},{},\"{key}\":{second}}}",
        &body[1..body.len() - 1]
    )
}

fn token_cases(attacker_url: &str) -> Vec<Case> {
    let now = now();
    let good = rs256(&claims("dr-ada", &["doctor"]));
    let parts: Vec<&str> = good.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    let header_json = |v: Value| b64(serde_json::to_string(&v).unwrap());
    let mut cases = Vec::new();

    // alg none in every spelling, with an empty and with a garbage signature.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let hdr = json!({ "alg": alg, "typ": "JWT", "kid": RSA_KID });
        cases.push(invalid(
            format!("alg {alg}, empty signature"),
            &jwt_with_header(&hdr, &claims("dr-ada", &["doctor"]), Signer::Empty),
        ));
        cases.push(invalid(
            format!("alg {alg}, garbage signature"),
            &format!("{}.{p}.c2ln", header_json(hdr.clone())),
        ));
    }
    // Signatures stripped and truncated.
    cases.push(invalid(
        "signature stripped, dot kept",
        &format!("{h}.{p}."),
    ));
    cases.push(invalid("signature stripped, dot gone", &format!("{h}.{p}")));
    cases.push(invalid(
        "signature truncated by 10 characters",
        &format!("{h}.{p}.{}", &s[..s.len() - 10]),
    ));
    cases.push(invalid(
        "signature truncated to half",
        &format!("{h}.{p}.{}", &s[..s.len() / 2]),
    ));
    cases.push(invalid(
        "signature of another token",
        &format!(
            "{h}.{p}.{}",
            rs256(&claims("dr-ada", &["doctor"]))
                .rsplit('.')
                .next()
                .unwrap()
        ),
    ));
    // alg case and whitespace variants, signed correctly with the RSA key.
    for alg in [
        "rs256",
        "Rs256",
        " RS256",
        "RS256 ",
        "RS 256",
        "RS256\u{0}",
        "RSA256",
    ] {
        cases.push(invalid(
            format!("alg {alg:?}"),
            &signed_rsa(json!({ "alg": alg, "typ": "JWT", "kid": RSA_KID })),
        ));
    }
    cases.push(invalid(
        "alg as an array",
        &signed_rsa(json!({ "alg": ["RS256"], "typ": "JWT", "kid": RSA_KID })),
    ));
    cases.push(invalid(
        "alg missing",
        &signed_rsa(json!({ "typ": "JWT", "kid": RSA_KID })),
    ));
    // RS256 → HS256 confusion keyed with the public key in every encoding.
    for (form, secret) in rsa_public_key_encodings() {
        for alg in ["HS256", "HS384", "HS512"] {
            let hdr = json!({ "alg": alg, "typ": "JWT", "kid": RSA_KID });
            let message = format!(
                "{}.{}",
                header_json(hdr),
                b64(serde_json::to_string(&claims("dr-ada", &["doctor"])).unwrap())
            );
            let sig = jsonwebtoken::crypto::sign(
                message.as_bytes(),
                &jsonwebtoken::EncodingKey::from_secret(&secret).unwrap(),
                alg.parse().unwrap(),
            )
            .unwrap();
            cases.push(invalid(
                format!("{alg} keyed with the RSA public key as {form}"),
                &format!("{message}.{sig}"),
            ));
        }
    }
    // CVE-2022-21449 ("psychic signatures"): r = s = 0.
    let es_message = format!(
        "{}.{p}",
        header_json(json!({ "alg": "ES256", "typ": "JWT", "kid": EC_KID }))
    );
    cases.push(invalid(
        "ES256 all-zero signature",
        &format!("{es_message}.{}", b64([0u8; 64])),
    ));
    cases.push(invalid(
        "ES256 all-zero DER-shaped signature",
        &format!(
            "{es_message}.{}",
            b64([0x30, 0x06, 0x02, 0x01, 0, 0x02, 0x01, 0])
        ),
    ));
    // Hostile kids (each signed with the real key, so only the kid is wrong).
    for (what, kid) in [
        ("path traversal", "../../../../../etc/passwd"),
        ("path traversal to the real kid", "../rsa-1"),
        ("absolute path", "/dev/null"),
        ("SQL-ish", "' OR '1'='1"),
        ("SQL-ish with comment", "rsa-1' --"),
        ("CRLF", "rsa-1\r\nX-Injected: 1"),
        ("NUL", "rsa-1\u{0}"),
        ("trailing space", "rsa-1 "),
        ("case", "RSA-1"),
    ] {
        cases.push(invalid(
            format!("kid {what}"),
            &signed_rsa(json!({ "alg": "RS256", "typ": "JWT", "kid": kid })),
        ));
    }
    cases.push(bearer_case(
        "kid of 10 KB",
        &signed_rsa(json!({ "alg": "RS256", "typ": "JWT", "kid": "k".repeat(10 * 1024) })),
        Want::invalid_token("invalid_token: too_long"),
    ));
    for (what, kid) in [
        ("a number", json!(1)),
        ("an array", json!([RSA_KID])),
        ("null", Value::Null),
    ] {
        cases.push(invalid(
            format!("kid as {what}"),
            &signed_rsa(json!({ "alg": "RS256", "typ": "JWT", "kid": kid })),
        ));
    }
    cases.push(invalid(
        "kid empty",
        &signed_rsa(json!({ "alg": "RS256", "typ": "JWT", "kid": "" })),
    ));
    // Keys named by the token itself, pointing at an attacker's server and key.
    let attacker_claims = claims("dr-ada", &["doctor", "admin"]);
    for (what, hdr) in [
        (
            "jku at the attacker's JWKS",
            json!({ "alg": "ES256", "typ": "JWT", "kid": "attacker-1", "jku": attacker_url }),
        ),
        (
            "jku at the attacker's JWKS, issuer's kid",
            json!({ "alg": "ES256", "typ": "JWT", "kid": EC_KID, "jku": attacker_url }),
        ),
        (
            "x5u at the attacker's server",
            json!({ "alg": "ES256", "typ": "JWT", "kid": "attacker-1", "x5u": attacker_url }),
        ),
        (
            "embedded jwk of the attacker, issuer's kid",
            json!({ "alg": "ES256", "typ": "JWT", "kid": EC_KID, "jwk": attacker_jwk() }),
        ),
        (
            "embedded jwk of the attacker, its own kid",
            json!({ "alg": "ES256", "typ": "JWT", "kid": "attacker-1", "jwk": attacker_jwk() }),
        ),
    ] {
        cases.push(invalid(
            what,
            &jwt_with_header(&hdr, &attacker_claims, Signer::AttackerEc),
        ));
    }
    // crit, in every shape.
    for crit in [json!([]), json!(["b64"]), json!(["exp"]), json!("exp")] {
        cases.push(invalid(
            format!("crit {crit}"),
            &signed_rsa(rsa_header(
                json!({ "crit": crit, "b64": true, "exp": now + 600 }),
            )),
        ));
    }
    // typ other than JWT / at+jwt.
    for typ in [
        json!("JOSE"),
        json!("JWS"),
        json!("JWE"),
        json!("jwt "),
        json!("application/jose"),
        json!("at+jwt; x=1"),
        json!("secevent+jwt"),
        json!(""),
        Value::Null,
        json!(1),
    ] {
        cases.push(invalid(
            format!("typ {typ}"),
            &signed_rsa(rsa_header(json!({ "typ": typ }))),
        ));
    }
    // Expiry and not-before just outside the 30 s leeway (the inside is in the accepted test).
    cases.push(invalid(
        "exp 45 s ago (leeway 30 s)",
        &rs256(&with(|c| {
            c.insert("iat".into(), json!(now - 600));
            c.insert("exp".into(), json!(now - 45));
        })),
    ));
    cases.push(invalid(
        "nbf 45 s ahead (leeway 30 s)",
        &rs256(&with(|c| {
            c.insert("nbf".into(), json!(now + 45));
        })),
    ));
    cases.push(invalid(
        "iat 45 s ahead (leeway 30 s)",
        &rs256(&with(|c| {
            c.insert("iat".into(), json!(now + 45));
        })),
    ));
    // exp / nbf / iat that are not NumericDates.
    for (claim, v) in [
        ("exp", json!((now + 600).to_string())),
        ("exp", Value::Null),
        ("exp", json!(1e300)),
        ("exp", json!(-1)),
        ("exp", json!(true)),
        ("exp", json!([now + 600])),
        ("exp", json!({ "$numberLong": now + 600 })),
        ("nbf", json!("0")),
        ("nbf", Value::Null),
        ("nbf", json!(1e300)),
        ("iat", json!(now.to_string())),
        ("iat", Value::Null),
    ] {
        cases.push(invalid(
            format!("{claim} = {v}"),
            &rs256(&with(|c| {
                c.insert(claim.into(), v.clone());
            })),
        ));
    }
    cases.push(invalid(
        "exp = 2^64",
        &raw_jwt(
            &serde_json::to_string(&json!({ "alg": "RS256", "typ": "JWT", "kid": RSA_KID }))
                .unwrap(),
            &serde_json::to_string(&with(|c| {
                c.remove("exp");
            }))
            .unwrap()
            .replacen('{', "{\"exp\":18446744073709551616,", 1),
            Signer::Rsa(Algorithm::RS256),
        ),
    ));
    // iss: array (auth.rs), trailing slash, other case, padded, wrong types.
    for iss in [
        json!(format!("{ISSUER}/")),
        json!(ISSUER.to_uppercase()),
        json!(format!("{ISSUER} ")),
        json!(format!(" {ISSUER}")),
        json!(format!("{ISSUER}\u{0}")),
        Value::Null,
        json!(1),
        json!({ "iss": ISSUER }),
        json!([ISSUER, ISSUER]),
    ] {
        cases.push(invalid(
            format!("iss {iss}"),
            &rs256(&with(|c| {
                c.insert("iss".into(), iss.clone());
            })),
        ));
    }
    // aud: empty, [""], near misses, wrong types.
    for aud in [
        json!(""),
        json!([]),
        json!([""]),
        json!(format!("{AUDIENCE} ")),
        json!(AUDIENCE.to_uppercase()),
        json!([[AUDIENCE]]),
        json!({ AUDIENCE: true }),
        Value::Null,
        json!(1),
    ] {
        cases.push(invalid(
            format!("aud {aud}"),
            &rs256(&with(|c| {
                c.insert("aud".into(), aud.clone());
            })),
        ));
    }
    // Duplicate claim keys: whichever value a lenient decoder keeps, wardgate keeps none.
    let rsa_hdr =
        serde_json::to_string(&json!({ "alg": "RS256", "typ": "JWT", "kid": RSA_KID })).unwrap();
    for (what, payload) in [
        (
            "roles twice, the last one doctor",
            duplicate_key_payload("roles", r#"["receptionist"]"#, r#"["doctor"]"#),
        ),
        (
            "sub twice",
            duplicate_key_payload("sub", r#""rx-bob""#, r#""dr-ada""#),
        ),
        (
            "exp twice, the last one far ahead",
            duplicate_key_payload("exp", &(now - 3600).to_string(), &(now + 3600).to_string()),
        ),
        (
            "iss twice",
            duplicate_key_payload("iss", r#""https://evil.test""#, &format!("\"{ISSUER}\"")),
        ),
    ] {
        cases.push(invalid(
            what,
            &raw_jwt(&rsa_hdr, &payload, Signer::Rsa(Algorithm::RS256)),
        ));
    }
    cases.push(invalid(
        "kid twice in the header",
        &raw_jwt(
            &format!(r#"{{"alg":"RS256","typ":"JWT","kid":"nobody","kid":"{RSA_KID}"}}"#),
            &serde_json::to_string(&claims("dr-ada", &["doctor"])).unwrap(),
            Signer::Rsa(Algorithm::RS256),
        ),
    ));
    // Roles in shapes that are not an array of plain strings.
    for roles in [
        json!({ "0": "doctor" }),
        json!(7),
        Value::Null,
        json!([["doctor"]]),
        json!([{ "name": "doctor" }]),
        json!(["doctor,admin"]),
        json!(["doc\ntor"]),
        json!([""]),
        json!("doctor"),
    ] {
        cases.push(invalid(
            format!("roles {roles}"),
            &rs256(&with(|c| {
                c.insert("roles".into(), roles.clone());
            })),
        ));
    }
    // Malformed base64 and serialization.
    let std_b64 = |s: &str| s.replace('-', "+").replace('_', "/");
    cases.push(invalid("header with padding", &format!("{h}==.{p}.{s}")));
    cases.push(invalid("payload with padding", &format!("{h}.{p}==.{s}")));
    cases.push(invalid("signature with padding", &format!("{h}.{p}.{s}==")));
    cases.push(invalid(
        "standard base64 alphabet",
        &format!("{}.{}.{}", std_b64(h), std_b64(p), std_b64(s)),
    ));
    cases.push(invalid(
        "invalid character in header",
        &format!("{h}!.{p}.{s}"),
    ));
    cases.push(invalid("percent-encoded dot", &format!("{h}%2E{p}.{s}")));
    cases.push(invalid(
        "non-canonical trailing bits in the header",
        &format!("{}.{p}.{s}", non_canonical(h)),
    ));
    cases.push(invalid(
        "non-canonical trailing bits in the payload",
        &format!("{h}.{}.{s}", non_canonical(p)),
    ));
    cases.push(invalid(
        "header not JSON",
        &format!("{}.{p}.{s}", b64("not json")),
    ));
    cases.push(invalid(
        "header a JSON array",
        &format!("{}.{p}.{s}", b64("[1]")),
    ));
    cases.push(invalid(
        "payload not JSON",
        &format!("{h}.{}.{s}", b64("foo")),
    ));
    cases.push(invalid("empty payload", &format!("{h}..{s}")));
    cases.push(invalid("empty header", &format!(".{p}.{s}")));
    cases.push(invalid("four parts", &format!("{h}.{p}.{s}.{s}")));
    cases.push(invalid(
        "JWE compact serialization (five parts)",
        &format!(
            "{}.{}.{}.{}.{}",
            header_json(json!({ "alg": "RSA-OAEP", "enc": "A256GCM", "kid": RSA_KID })),
            b64([1u8; 256]),
            b64([2u8; 12]),
            b64("ciphertext"),
            b64([3u8; 16])
        ),
    ));
    cases.push(invalid(
        "JWS JSON serialization",
        &json!({ "payload": p, "signatures": [{ "protected": h, "signature": s }] }).to_string(),
    ));
    cases.push(invalid(
        "JWS flattened JSON serialization",
        &json!({ "payload": p, "protected": h, "signature": s }).to_string(),
    ));
    // Oversized: refused on length alone (16 KiB reaches the token rules here, since this fixture
    // allows 32 KiB of headers; 1 MiB is in `oversized_tokens_are_refused_before_any_key_lookup`).
    let padded = |n: usize| {
        jwt_with_header(
            &json!({ "alg": "RS256", "typ": "JWT", "kid": "oversized-kid" }),
            &with(|c| {
                c.insert("pad".into(), json!("x".repeat(n)));
            }),
            Signer::Rsa(Algorithm::RS256),
        )
    };
    cases.push(bearer_case(
        "token of 16 KiB",
        &padded(16 * 1024),
        Want::invalid_token("invalid_token: too_long"),
    ));
    // Where the token is and how it is written.
    cases.push(Case::get(
        "access_token in the query only",
        &format!("{PATH}?access_token={good}"),
        &[],
        Want::no_token("missing_token"),
    ));
    for q in ["access_token", "ACCESS_TOKEN", "access%5Ftoken"] {
        cases.push(Case::get(
            format!("{q} in the query and a token in the header"),
            &format!("{PATH}?{q}={good}"),
            &[("Authorization", &format!("Bearer {good}"))],
            Want::refused(400, "bad_request: token_in_query"),
        ));
    }
    cases.push(auth_case(
        "Bearer a, Bearer b in one header",
        &format!(
            "Bearer {good}, Bearer {}",
            token("rx-bob", &["receptionist"])
        ),
        Want::refused(400, "bad_request: duplicate_authorization"),
    ));
    cases.push(Case::get(
        "two Authorization headers, the second one Basic",
        PATH,
        &[
            ("Authorization", &format!("Bearer {good}")),
            ("Authorization", "Basic ZHItYWRhOnNlY3JldA=="),
        ],
        Want::refused(400, "bad_request: duplicate_authorization"),
    ));
    for (what, value, want) in [
        (
            "Basic",
            "Basic ZHItYWRhOnNlY3JldA==".to_owned(),
            Want::no_token("*"),
        ),
        ("empty", String::new(), Want::no_token("*")),
        (
            "scheme only",
            "Bearer".to_owned(),
            Want::invalid_token("invalid_token: malformed"),
        ),
        (
            "tab-separated",
            format!("Bearer\t{good}"),
            Want::no_token("*"),
        ),
        (
            "colon after the scheme",
            format!("Bearer: {good}"),
            Want::no_token("*"),
        ),
        (
            "other scheme Token",
            format!("Token {good}"),
            Want::no_token("*"),
        ),
        ("DPoP scheme", format!("DPoP {good}"), Want::no_token("*")),
        (
            "token quoted",
            format!("Bearer \"{good}\""),
            Want::invalid_token("invalid_token*"),
        ),
    ] {
        cases.push(auth_case(format!("Authorization {what}"), &value, want));
    }
    cases
}

/// The same base64url text with the unused low bits of its last character set.
fn non_canonical(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let unused_bits = match s.len() % 4 {
        2 => 4,
        3 => 2,
        _ => return format!("{s}A"),
    };
    let last = *s.as_bytes().last().unwrap();
    let idx = ALPHABET.iter().position(|c| *c == last).unwrap();
    let bumped = ALPHABET[idx | ((1 << unused_bits) - 1)] as char;
    format!("{}{bumped}", &s[..s.len() - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tokens_are_refused_before_anything_is_forwarded() {
    let attacker = JwksServer::start(json!({ "keys": [
        { "kty": "EC", "crv": "P-256", "kid": "attacker-1", "use": "sig", "alg": "ES256",
          "x": attacker_jwk()["x"], "y": attacker_jwk()["y"] }
    ]}))
    .await;
    let fx = fixture()
        .set("limits", json!({ "max_header_bytes": 32 * 1024 }))
        .start()
        .await;
    let cases = token_cases(&attacker.url());
    eprintln!("{} hostile token cases", cases.len());
    assert_refused(fx, &cases).await;
    assert_eq!(
        attacker.fetches(),
        0,
        "wardgate fetched keys from a URL a token named"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_tokens_are_refused_before_any_key_lookup() {
    let fx = fixture()
        .set("limits", json!({ "max_header_bytes": 1024 * 1024 }))
        .start()
        .await;
    let before = fx.jwks().fetches();
    // Unknown kids: reaching key selection would cost a JWKS fetch.
    let big = |n: usize, kid: &str| {
        jwt_with_header(
            &json!({ "alg": "RS256", "typ": "JWT", "kid": kid }),
            &with(|c| {
                c.insert("pad".into(), json!("x".repeat(n)));
            }),
            Signer::Rsa(Algorithm::RS256),
        )
    };
    let cases = vec![
        bearer_case(
            "16 KiB, unknown kid",
            &big(16 * 1024, "unknown-16k"),
            Want::invalid_token("invalid_token: too_long"),
        ),
        // Over `max_header_bytes` (its maximum, 1 MiB): refused with the header block.
        bearer_case(
            "1 MiB, unknown kid",
            &big(768 * 1024, "unknown-1m"),
            Want::refused(431, "headers_too_large"),
        ),
    ];
    let jwks_fetches = {
        let responses = super::send_all(fx.proxy, &cases).await;
        let after = fx.jwks().fetches();
        let forwarded = fx.backend().forwarded();
        let (records, _) = fx.finish().await;
        let failures = super::check_refusals(&cases, &responses, &records);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(forwarded.is_empty(), "{forwarded:#?}");
        assert_eq!(records.len(), 2, "{records:#?}");
        after - before
    };
    assert_eq!(jwks_fetches, 0, "an oversized token reached key selection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_at_the_edges_of_the_rules_are_accepted() {
    let fx = fixture().start().await;
    let now = now();
    let accepted: Vec<(&str, String)> = vec![
        (
            "exp 15 s ago, inside the 30 s leeway",
            rs256(&with(|c| {
                c.insert("iat".into(), json!(now - 600));
                c.insert("exp".into(), json!(now - 15));
            })),
        ),
        (
            "nbf 15 s ahead, inside the leeway",
            rs256(&with(|c| {
                c.insert("nbf".into(), json!(now + 15));
            })),
        ),
        (
            "iat 15 s ahead, inside the leeway",
            rs256(&with(|c| {
                c.insert("iat".into(), json!(now + 15));
            })),
        ),
        (
            "exp as a fraction",
            rs256(&with(|c| {
                c.insert("exp".into(), json!(now as f64 + 600.5));
            })),
        ),
        (
            "exp far ahead (a valid NumericDate)",
            rs256(&with(|c| {
                c.insert("exp".into(), json!(32_503_680_000_i64));
            })),
        ),
        (
            "aud array holding the audience among others",
            rs256(&with(|c| {
                c.insert("aud".into(), json!(["billing-api", AUDIENCE]));
            })),
        ),
        (
            "typ application/at+jwt",
            jwt_with_header(
                &json!({ "alg": "RS256", "typ": "application/at+jwt", "kid": RSA_KID }),
                &claims("dr-ada", &["doctor"]),
                Signer::Rsa(Algorithm::RS256),
            ),
        ),
    ];
    let mut failures = Vec::new();
    for (name, t) in &accepted {
        let resp = fx.get(PATH, t).send().await.unwrap();
        if resp.status() != 200 {
            let status = resp.status();
            failures.push(format!(
                "{name}: status {status}: {}",
                resp.text().await.unwrap_or_default()
            ));
        }
    }
    // Two spaces after the scheme (RFC 6750: `"Bearer" 1*SP b64token`).
    let two_spaces = fx
        .raw(
            "GET",
            PATH,
            &[(
                "Authorization",
                &format!("Bearer  {}", token("dr-ada", &["doctor"])),
            )],
        )
        .await;
    if two_spaces.status != 200 {
        failures.push(format!("two spaces after Bearer: {}", two_spaces.status));
    }
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(forwarded.len(), accepted.len() + 1);
    for f in &forwarded {
        assert_eq!(f.method, "GET");
        assert_eq!(f.target, PATH);
        assert_eq!(f.header("x-wardgate-subject"), "dr-ada");
        assert_eq!(f.header("x-wardgate-roles"), "doctor");
        record_by_id(&records, f.header("x-wardgate-decision-id"));
    }
    assert_eq!(records.len(), accepted.len() + 1);
    assert!(
        records.iter().all(|r| r["decision"] == "allow"),
        "{records:#?}"
    );
}

/// 1,000 tokens with random `kid`s: at most one JWKS fetch per 10 s cooldown, concurrent
/// misses share it, and the cached keys keep working even though the refetch answers garbage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_random_kids_cost_at_most_one_fetch_per_cooldown() {
    let fx = fixture().start().await;
    let before = fx.jwks().fetches();
    // What a refetch would get now is useless: the known keys must survive it.
    fx.jwks().set(json!({ "keys": [] }));
    let started = Instant::now();
    let mut set = JoinSet::new();
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    for i in 0..1000u32 {
        let kid = format!("{:016x}", rand::random::<u64>() ^ u64::from(i));
        let t = jwt_with_header(
            &json!({ "alg": "RS256", "typ": "JWT", "kid": kid }),
            &claims("dr-ada", &["doctor"]),
            Signer::Rsa(Algorithm::RS256),
        );
        let req = fx.get(PATH, &t);
        let permits = permits.clone();
        set.spawn(async move {
            let _p = permits.acquire().await.unwrap();
            req.send().await.unwrap().status().as_u16()
        });
    }
    let mut statuses = Vec::new();
    while let Some(s) = set.join_next().await {
        statuses.push(s.unwrap());
    }
    let elapsed = started.elapsed();
    let fetches = fx.jwks().fetches() - before;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let allowed = 1 + (elapsed.as_secs() / 10) as usize;
    assert!(
        fetches <= allowed,
        "1,000 unknown kids over {elapsed:?} made {fetches} JWKS fetches (at most {allowed})"
    );
    for t in [
        token("dr-ada", &["doctor"]),
        es256(&claims("dr-ada", &["doctor"])),
    ] {
        let ok = fx.get(PATH, &t).send().await.unwrap();
        assert_eq!(ok.status(), 200, "a cached key stopped working");
    }
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert_eq!(forwarded.len(), 2);
    assert_eq!(records.len(), 1002);
    assert_eq!(
        records
            .iter()
            .filter(|r| r["reason"] == "invalid_token: unknown_kid")
            .count(),
        1000
    );
}
