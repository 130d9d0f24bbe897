//! The bearer token: every way a credential can be wrong answers 401 with the SPEC's
//! `WWW-Authenticate`, nothing is forwarded, and each refusal leaves one deny record; the
//! accepted shapes of a good token get through.

use serde_json::{json, Map, Value};

use jsonwebtoken::Algorithm;

use crate::support::*;

struct Case {
    name: &'static str,
    authorization: Option<String>,
    www_authenticate: &'static str,
    /// The audit `reason` must equal this, or start with it when it ends in `*`.
    reason: &'static str,
}

fn with(f: impl FnOnce(&mut Map<String, Value>)) -> Map<String, Value> {
    let mut c = claims("dr-ada", &["doctor"]);
    f(&mut c);
    c
}

fn bearer(t: String) -> Option<String> {
    Some(format!("Bearer {t}"))
}

fn rsa_header(extra: Value) -> Value {
    let mut h = json!({ "alg": "RS256", "typ": "JWT", "kid": RSA_KID });
    for (k, v) in extra.as_object().expect("object") {
        h[k] = v.clone();
    }
    h
}

fn refused_cases(jwks_url: &str) -> Vec<Case> {
    let now = now();
    let k = keys();
    let invalid = |name, authorization| Case {
        name,
        authorization,
        www_authenticate: WWW_INVALID,
        reason: "invalid_token*",
    };
    let good = claims("dr-ada", &["doctor"]);
    let good_token = rs256(&good);
    let tampered = {
        let parts: Vec<&str> = good_token.split('.').collect();
        let payload = b64(serde_json::to_string(&with(|c| {
            c.insert("sub".into(), json!("dr-grace"));
        }))
        .unwrap());
        format!("{}.{payload}.{}", parts[0], parts[2])
    };
    vec![
        Case {
            name: "no Authorization header",
            authorization: None,
            www_authenticate: WWW_MISSING,
            reason: "missing_token",
        },
        // RFC 6750 §3.1: an unsupported authentication method gets no error code.
        Case {
            name: "Basic scheme",
            authorization: Some("Basic ZHItYWRhOnNlY3JldA==".into()),
            www_authenticate: WWW_MISSING,
            reason: "*",
        },
        invalid("garbage token", bearer("garbage".into())),
        invalid("three garbage segments", bearer("a.b.c".into())),
        Case {
            name: "expired beyond the leeway",
            authorization: bearer(rs256(&with(|c| {
                c.insert("iat".into(), json!(now - 600));
                c.insert("exp".into(), json!(now - 120));
            }))),
            www_authenticate: WWW_INVALID,
            reason: "invalid_token: expired",
        },
        invalid(
            "nbf in the future beyond the leeway",
            bearer(rs256(&with(|c| {
                c.insert("nbf".into(), json!(now + 120));
            }))),
        ),
        invalid(
            "iat in the future",
            bearer(rs256(&with(|c| {
                c.insert("iat".into(), json!(now + 120));
            }))),
        ),
        invalid(
            "exp missing",
            bearer(rs256(&with(|c| {
                c.remove("exp");
            }))),
        ),
        invalid(
            "wrong audience",
            bearer(rs256(&with(|c| {
                c.insert("aud".into(), json!("billing-api"));
            }))),
        ),
        invalid(
            "audience missing",
            bearer(rs256(&with(|c| {
                c.remove("aud");
            }))),
        ),
        invalid(
            "wrong issuer",
            bearer(rs256(&with(|c| {
                c.insert("iss".into(), json!("https://evil.test"));
            }))),
        ),
        invalid(
            "issuer as an array",
            bearer(rs256(&with(|c| {
                c.insert("iss".into(), json!([ISSUER]));
            }))),
        ),
        invalid(
            "issuer missing",
            bearer(rs256(&with(|c| {
                c.remove("iss");
            }))),
        ),
        invalid(
            "sub missing",
            bearer(rs256(&with(|c| {
                c.remove("sub");
            }))),
        ),
        invalid(
            "alg RS384, not in the allow-list",
            bearer(jwt_with_header(
                &json!({ "alg": "RS384", "typ": "JWT", "kid": RSA_KID }),
                &good,
                Signer::Rsa(Algorithm::RS384),
            )),
        ),
        invalid(
            "alg none",
            bearer(jwt_with_header(
                &json!({ "alg": "none", "typ": "JWT", "kid": RSA_KID }),
                &good,
                Signer::Empty,
            )),
        ),
        invalid(
            "no kid",
            bearer(jwt_with_header(
                &json!({ "alg": "RS256", "typ": "JWT" }),
                &good,
                Signer::Rsa(Algorithm::RS256),
            )),
        ),
        invalid(
            "kid nobody published",
            bearer(jwt_with_header(
                &json!({ "alg": "RS256", "typ": "JWT", "kid": "who-knows" }),
                &good,
                Signer::Rsa(Algorithm::RS256),
            )),
        ),
        invalid(
            "crit header",
            bearer(jwt_with_header(
                &rsa_header(json!({ "crit": ["exp"], "exp": now + 600 })),
                &good,
                Signer::Rsa(Algorithm::RS256),
            )),
        ),
        invalid(
            "jku header (pointing at the real JWKS)",
            bearer(jwt_with_header(
                &rsa_header(json!({ "jku": jwks_url })),
                &good,
                Signer::Rsa(Algorithm::RS256),
            )),
        ),
        invalid(
            "x5u header",
            bearer(jwt_with_header(
                &rsa_header(json!({ "x5u": "https://evil.test/cert.pem" })),
                &good,
                Signer::Rsa(Algorithm::RS256),
            )),
        ),
        invalid(
            "jwk header (the issuer's own key)",
            bearer(jwt_with_header(
                &rsa_header(json!({ "jwk": rsa_jwk(RSA_KID, "RS256") })),
                &good,
                Signer::Rsa(Algorithm::RS256),
            )),
        ),
        invalid(
            "jwk header with an attacker key",
            bearer(jwt_with_header(
                &json!({ "alg": "ES256", "typ": "JWT", "kid": EC_KID, "jwk": attacker_jwk() }),
                &good,
                Signer::AttackerEc,
            )),
        ),
        invalid(
            "x5c header",
            bearer(jwt_with_header(
                &rsa_header(json!({ "x5c": ["MIIBszCCAVmgAwIBAgIUQ"] })),
                &good,
                Signer::Rsa(Algorithm::RS256),
            )),
        ),
        invalid(
            "typ JOSE+foo",
            bearer(jwt_with_header(
                &rsa_header(json!({ "typ": "JOSE+foo" })),
                &good,
                Signer::Rsa(Algorithm::RS256),
            )),
        ),
        invalid(
            "roles as a string",
            bearer(rs256(&with(|c| {
                c.insert("roles".into(), json!("doctor"));
            }))),
        ),
        invalid(
            "roles holding a number",
            bearer(rs256(&with(|c| {
                c.insert("roles".into(), json!(["doctor", 7]));
            }))),
        ),
        invalid(
            "token longer than 8 KiB",
            bearer(rs256(&with(|c| {
                c.insert("pad".into(), json!("x".repeat(9000)));
            }))),
        ),
        invalid(
            "signed by a key nobody published",
            bearer(jwt_with_header(
                &json!({ "alg": "ES256", "typ": "JWT", "kid": EC_KID }),
                &good,
                Signer::AttackerEc,
            )),
        ),
        invalid("payload changed after signing", bearer(tampered)),
        invalid(
            "HS256 keyed with the RSA public key PEM",
            bearer(jwt_with_header(
                &json!({ "alg": "HS256", "typ": "JWT", "kid": RSA_KID }),
                &good,
                Signer::Hs256(k.rsa_public_pem.as_bytes()),
            )),
        ),
        invalid(
            "ES256 under the RSA key's kid",
            bearer(jwt_with_header(
                &json!({ "alg": "ES256", "typ": "JWT", "kid": RSA_KID }),
                &good,
                Signer::Ec,
            )),
        ),
        invalid(
            "duplicate alg, the last one none",
            bearer(raw_jwt(
                &format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{RSA_KID}","alg":"none"}}"#),
                &serde_json::to_string(&good).unwrap(),
                Signer::Rsa(Algorithm::RS256),
            )),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_credential_is_refused_with_401() {
    let fx = fixture().start().await;
    let cases = refused_cases(&fx.jwks().url());
    let mut failures = Vec::new();
    let mut ids = Vec::new();
    for case in &cases {
        let mut req = fx.client.get(fx.url("/patients/p-1"));
        if let Some(a) = &case.authorization {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let www = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("<none>")
            .to_owned();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.bytes().await.expect("body");
        if status != 401 {
            failures.push(format!("{}: status {status}, want 401", case.name));
            continue;
        }
        if www != case.www_authenticate {
            failures.push(format!(
                "{}: WWW-Authenticate `{www}`, want `{}`",
                case.name, case.www_authenticate
            ));
        }
        match check_problem(ct.as_deref(), &body, 401) {
            Ok(id) => ids.push((case, id)),
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    let forwarded = fx.backend().forwarded();
    let (records, _rest) = fx.finish().await;
    assert!(
        forwarded.is_empty(),
        "refused requests reached the backend: {forwarded:#?}"
    );
    for (case, id) in &ids {
        let found: Vec<&Value> = records.iter().filter(|r| r["decision_id"] == *id).collect();
        let [r] = found.as_slice() else {
            failures.push(format!(
                "{}: {} audit records for decision {id}",
                case.name,
                found.len()
            ));
            continue;
        };
        let reason = r["reason"].as_str().unwrap_or("<null>");
        eprintln!("{:>45} → {reason}", case.name);
        let reason_ok = match case.reason.strip_suffix('*') {
            Some(prefix) => r["reason"].is_string() && reason.starts_with(prefix),
            None => reason == case.reason,
        };
        if r["decision"] != "deny" || r["status"] != 401 || !r["principal"].is_null() || !reason_ok
        {
            failures.push(format!(
                "{}: audit decision {} status {} principal {} reason `{reason}` (want deny, 401, null, `{}`)",
                case.name, r["decision"], r["status"], r["principal"], case.reason
            ));
        }
    }
    if records.len() != cases.len() {
        failures.push(format!(
            "{} audit records for {} requests",
            records.len(),
            cases.len()
        ));
    }
    assert!(
        failures.is_empty(),
        "{} of {} refusal checks failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The allow-list alone refuses: the JWKS publishes the same RSA key as `rsa-ps` for PS256,
/// which the issuer's `algorithms: [RS256, ES256]` does not allow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_algorithm_outside_the_allow_list_is_refused_even_when_the_jwks_offers_it() {
    let fx = fixture()
        .jwks(json!({ "keys": [rsa_jwk(RSA_KID, "RS256"), ec_jwk(EC_KID), rsa_jwk("rsa-ps", "PS256")] }))
        .start()
        .await;
    let t = jwt_with_header(
        &json!({ "alg": "PS256", "typ": "JWT", "kid": "rsa-ps" }),
        &claims("dr-ada", &["doctor"]),
        Signer::Rsa(Algorithm::PS256),
    );
    let resp = fx.get("/patients/p-1", &t).send().await.unwrap();
    assert_eq!(
        resp.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some(WWW_INVALID)
    );
    let id = expect_problem(resp, 401).await;
    // The same claims under RS256 pass: the JWKS and claims are fine, only the algorithm is not.
    let ok = fx
        .get("/patients/p-1", &token("dr-ada", &["doctor"]))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert_eq!(forwarded.len(), 1, "only the RS256 request is forwarded");
    assert_eq!(records.len(), 2);
    let r = record_by_id(&records, &id);
    assert_eq!(r["decision"], "deny");
    assert!(
        r["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("invalid_token"),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_tokens_in_every_accepted_shape_get_through() {
    let fx = fixture().start().await;
    let now = now();
    let cases: Vec<(&str, String)> = vec![
        ("RS256", format!("Bearer {}", token("dr-ada", &["doctor"]))),
        (
            "ES256",
            format!("Bearer {}", es256(&claims("dr-ada", &["doctor"]))),
        ),
        (
            "scheme in lower case",
            format!("bearer {}", token("dr-ada", &["doctor"])),
        ),
        (
            "scheme in upper case",
            format!("BEARER {}", token("dr-ada", &["doctor"])),
        ),
        (
            "typ at+jwt",
            format!(
                "Bearer {}",
                jwt_with_header(
                    &json!({ "alg": "RS256", "typ": "at+jwt", "kid": RSA_KID }),
                    &claims("dr-ada", &["doctor"]),
                    Signer::Rsa(Algorithm::RS256)
                )
            ),
        ),
        (
            "no typ",
            format!(
                "Bearer {}",
                jwt_with_header(
                    &json!({ "alg": "RS256", "kid": RSA_KID }),
                    &claims("dr-ada", &["doctor"]),
                    Signer::Rsa(Algorithm::RS256)
                )
            ),
        ),
        (
            "aud an array holding the audience",
            format!(
                "Bearer {}",
                rs256(&with(|c| {
                    c.insert("aud".into(), json!(["billing-api", AUDIENCE]));
                }))
            ),
        ),
        (
            "expired 10 s ago, inside the 30 s leeway",
            format!(
                "Bearer {}",
                rs256(&with(|c| {
                    c.insert("iat".into(), json!(now - 600));
                    c.insert("exp".into(), json!(now - 10));
                }))
            ),
        ),
        (
            "nbf 10 s ahead, inside the leeway",
            format!(
                "Bearer {}",
                rs256(&with(|c| {
                    c.insert("nbf".into(), json!(now + 10));
                }))
            ),
        ),
    ];
    let mut failures = Vec::new();
    for (name, auth) in &cases {
        let resp = fx
            .client
            .get(fx.url("/patients/p-1"))
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        if resp.status() != 200 {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            failures.push(format!("{name}: status {status}, want 200; body {body}"));
        }
    }
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(forwarded.len(), cases.len());
    for f in &forwarded {
        assert_eq!(f.header("x-wardgate-subject"), "dr-ada");
    }
    assert_eq!(records.len(), cases.len());
    assert!(
        records.iter().all(|r| r["decision"] == "allow"),
        "{records:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorization_headers_are_a_bad_request() {
    let fx = fixture().start().await;
    let a = format!("Bearer {}", token("dr-ada", &["doctor"]));
    let b = format!("Bearer {}", token("rx-bob", &["receptionist"]));
    let resp = fx
        .raw(
            "GET",
            "/patients/p-1",
            &[("Authorization", &a), ("Authorization", &b)],
        )
        .await;
    assert_eq!(resp.status, 400, "{resp:?}");
    let id = assert_problem(resp.header("content-type"), &resp.body, 400);
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert!(forwarded.is_empty(), "{forwarded:#?}");
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = record_by_id(&records, &id);
    assert_eq!(r["decision"], "deny");
    assert_eq!(r["status"], 400);
    assert!(
        r["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("bad_request"),
        "reason {}",
        r["reason"]
    );
}
