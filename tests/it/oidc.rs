//! An OpenID provider found by discovery: wardgate reads `{issuer}/.well-known/openid-configuration`,
//! checks its `issuer`, follows its `jwks_uri`, and follows the provider's key rotation without
//! a restart.

use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::support::fixture::FixtureBuilder;
use crate::support::servers::DiscoveryServer;
use crate::support::*;

/// A fixture whose only issuer is `issuer`, its keys found by discovery.
fn discovering(issuer: &str) -> FixtureBuilder {
    fixture()
        .set("jwt.issuers.0.issuer", issuer)
        .unset("jwt.issuers.0.jwks_url")
        .set("jwt.issuers.0.discovery", true)
}

fn claims_from(issuer: &str) -> Map<String, Value> {
    let mut c = claims("dr-ada", &["doctor"]);
    c.insert("iss".into(), json!(issuer));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_finds_the_keys_and_a_key_published_beside_them_is_accepted() {
    let idp = DiscoveryServer::start(json!({ "keys": [rsa_jwk(RSA_KID, "RS256")] })).await;
    // A trailing `/` in the issuer is trimmed before the well-known path is appended; the
    // document must still name the issuer exactly as configured.
    let issuer = format!("{}/", idp.issuer());
    idp.claim_issuer(&issuer);
    let fx = discovering(&issuer).start().await;
    assert_eq!(idp.discovery_fetches(), 1, "discovered once");
    assert_eq!(idp.jwks_fetches(), 1, "then fetched the JWKS it names");
    assert_eq!(fx.jwks().fetches(), 0, "the fixture's own JWKS is not used");

    let ok = fx
        .get("/patients/p-1", &rs256(&claims_from(&issuer)))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let wrong_iss = fx
        .get("/patients/p-1", &rs256(&claims("dr-ada", &["doctor"])))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_iss.status(), 401, "a token from another issuer");

    // The provider publishes a new key beside the old one. Right after start-up an unknown
    // kid may not refetch yet (10 s cooldown): refused, without a fetch.
    idp.set_jwks(json!({ "keys": [rsa_jwk(RSA_KID, "RS256"), ec_jwk(EC_KID)] }));
    let early = fx
        .get("/patients/p-1", &es256(&claims_from(&issuer)))
        .send()
        .await
        .unwrap();
    assert_eq!(early.status(), 401);
    assert_eq!(idp.jwks_fetches(), 1);
    tokio::time::sleep(Duration::from_millis(10_300)).await;
    let new_key = fx
        .get("/patients/p-1", &es256(&claims_from(&issuer)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        new_key.status(),
        200,
        "the new key is picked up by the refetch"
    );
    assert_eq!(idp.jwks_fetches(), 2, "one refetch for the new kid");
    assert_eq!(idp.discovery_fetches(), 1, "discovery is not repeated");
    let old_key = fx
        .get("/patients/p-1", &rs256(&claims_from(&issuer)))
        .send()
        .await
        .unwrap();
    assert_eq!(old_key.status(), 200, "the old key still works beside it");
    let (records, _) = fx.finish().await;
    assert_eq!(records.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_key_stops_passing_once_the_jwks_max_age_has_passed() {
    let idp = DiscoveryServer::start(jwks()).await;
    // max-age=1 is raised to the 10 s floor; the configured 300 s schedule is shortened to it.
    idp.set_cache_control("public, max-age=1");
    let issuer = idp.issuer();
    let fx = discovering(&issuer)
        .set("jwt.issuers.0.jwks_refresh_seconds", 300)
        .start()
        .await;
    let before = idp.jwks_fetches();
    assert_eq!(before, 1);

    let cached = rs256(&claims_from(&issuer));
    let first = fx.get("/patients/p-1", &cached).send().await.unwrap();
    assert_eq!(first.status(), 200);

    // The provider withdraws `rsa-1`.
    idp.set_jwks(json!({ "keys": [ec_jwk(EC_KID)] }));
    let still = fx.get("/patients/p-1", &cached).send().await.unwrap();
    assert_eq!(
        still.status(),
        200,
        "not refreshed yet: the key is still known"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        idp.jwks_fetches(),
        before,
        "max-age=1 must not refresh sooner than every 10 s"
    );
    let refreshed = eventually(Duration::from_secs(15), || async {
        idp.jwks_fetches() > before
    })
    .await;
    assert!(refreshed, "the JWKS was not refreshed after its max-age");
    // The refresh is installed right after the fetch is answered.
    let refused = eventually(Duration::from_secs(2), || async {
        fx.get("/patients/p-1", &cached)
            .send()
            .await
            .unwrap()
            .status()
            == 401
    })
    .await;
    assert!(
        refused,
        "a cached token signed by a withdrawn key still passes"
    );
    let fresh_old = fx
        .get("/patients/p-1", &rs256(&claims_from(&issuer)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        fresh_old.status(),
        401,
        "a new token signed by the withdrawn key"
    );
    let remaining = fx
        .get("/patients/p-1", &es256(&claims_from(&issuer)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        remaining.status(),
        200,
        "the key still published still works"
    );
    let ready = fx.client.get(fx.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_document_naming_another_issuer_gives_no_keys() {
    let idp = DiscoveryServer::start(jwks()).await;
    idp.claim_issuer("https://evil.example/realms/clinic");
    let issuer = idp.issuer();
    let fx = discovering(&issuer).no_wait_ready().start().await;
    let tried = eventually(Duration::from_secs(5), || async {
        idp.discovery_fetches() >= 2
    })
    .await;
    assert!(tried, "wardgate keeps retrying discovery");
    assert_eq!(
        idp.jwks_fetches(),
        0,
        "a refused document's jwks_uri is never fetched"
    );
    let ready = fx.client.get(fx.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let r = fx
        .get("/patients/p-1", &rs256(&claims_from(&issuer)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert!(forwarded.is_empty());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["decision"], "deny");
}

/// A User type that declares `scopes`, and a policy that requires a scope to read a patient.
fn scoped_fixture() -> FixtureBuilder {
    let schema = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/clinic.cedarschema"),
    )
    .expect("shipped schema");
    let declared = "    patient_id?: String,\n";
    assert!(schema.contains(declared), "the shipped User type changed");
    let schema = schema.replacen(
        declared,
        &format!("{declared}    scopes: Set<String>,\n"),
        1,
    );
    fixture()
        .set("jwt.scopes_attribute", "scopes")
        .file("policies/clinic.cedarschema", &schema)
        .file(
            "policies/scopes.cedar",
            r#"@id("reads-need-the-patients-read-scope")
forbid (principal, action == Clinic::Action::"ReadPatient", resource)
unless { principal.scopes.contains("patients:read") };
"#,
        )
}

fn scoped(scope: Option<(&str, Value)>) -> String {
    let mut c = claims("dr-ada", &["doctor"]);
    if let Some((name, value)) = scope {
        c.insert(name.into(), value);
    }
    rs256(&c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scope_claim_becomes_a_principal_attribute_policies_can_require() {
    let fx = scoped_fixture().start().await;
    let cases = [
        (Some(("scope", json!("openid patients:read"))), 200),
        (Some(("scope", json!(["patients:read", "profile"]))), 200),
        (Some(("scp", json!("patients:read"))), 200),
        (Some(("scp", json!(["patients:read"]))), 200),
        (Some(("scope", json!("openid patients:write"))), 403),
        (Some(("scope", json!("openid patients:read:x"))), 403),
        (Some(("scope", json!(7))), 403),
        (None, 403),
    ];
    for (scope, status) in &cases {
        let r = fx
            .get("/patients/p-1", &scoped(scope.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), *status, "{scope:?}");
    }
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert_eq!(forwarded.len(), 4);
    assert_eq!(records.len(), cases.len());
}

/// The `kid` in a token's header.
fn kid_of(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().expect("header");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url header");
    let header: Value = serde_json::from_slice(&bytes).expect("header json");
    assert_eq!(header["typ"], "at+jwt", "an RFC 9068 access token");
    header["kid"].as_str().expect("kid").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_openid_provider_end_to_end_with_key_rotation() {
    use crate::support::oidc_provider::OidcProvider;
    let key_dir = tempfile::tempdir().expect("key dir");
    let idp = OidcProvider::start(0, key_dir.path(), &["k1"]);
    let fx = scoped_fixture()
        .set("jwt.issuers.0.issuer", idp.issuer.clone())
        .unset("jwt.issuers.0.jwks_url")
        .set("jwt.issuers.0.discovery", true)
        .set("jwt.issuers.0.algorithms", json!(["RS256"]))
        .start()
        .await;
    let ready_at = std::time::Instant::now();

    // Real tokens over HTTP (client credentials, resource indicator → JWT access token).
    let reader = idp.token(&fx.client, "patients:read").await;
    assert_eq!(kid_of(&reader), "k1");
    let status = |token: String, path: &'static str| {
        let req = fx.get(path, &token);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        status(reader.clone(), "/patients/p-1").await,
        200,
        "care team, scope held"
    );
    assert_eq!(
        status(reader.clone(), "/patients/p-2").await,
        403,
        "not in p-2's care team"
    );
    let writer = idp.token(&fx.client, "patients:write").await;
    assert_eq!(
        status(writer, "/patients/p-1").await,
        403,
        "without patients:read"
    );

    // The provider rotates: a new signing key, the old one still published beside it.
    let port = idp.port;
    idp.stop();
    let idp = OidcProvider::start(port, key_dir.path(), &["k2", "k1"]);
    let rotated = idp.token(&fx.client, "patients:read").await;
    assert_eq!(kid_of(&rotated), "k2");
    // An unknown kid refetches the JWKS at most once per 10 s; wardgate fetched it at start.
    let cooldown = Duration::from_millis(10_300);
    tokio::time::sleep(cooldown.saturating_sub(ready_at.elapsed())).await;
    assert_eq!(
        status(rotated, "/patients/p-1").await,
        200,
        "a token signed by the new key, without restarting wardgate"
    );
    assert_eq!(
        status(reader, "/patients/p-1").await,
        200,
        "the old key still works"
    );

    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert_eq!(forwarded.len(), 3);
    assert_eq!(records.len(), 5);
    drop(idp);
}
