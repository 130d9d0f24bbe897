//! The issuer's JWKS as wardgate uses it: unknown `kid`s cannot make it hammer the issuer, and an
//! outage keeps the last good keys.

use tokio::task::JoinSet;

use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::support::*;

fn unknown_kid_token(i: usize) -> String {
    jwt_with_header(
        &json!({ "alg": "RS256", "typ": "JWT", "kid": format!("rotated-{i}") }),
        &claims("dr-ada", &["doctor"]),
        Signer::Rsa(Algorithm::RS256),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_unknown_kids_refetches_the_jwks_at_most_once() {
    let fx = fixture().start().await;
    let before = fx.jwks().fetches();
    assert!(before >= 1, "wardgate is ready, so it fetched the JWKS");

    let mut statuses = Vec::new();
    for i in 0..25 {
        let r = fx
            .get("/patients/p-1", &unknown_kid_token(i))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    let mut set = JoinSet::new();
    for i in 25..50 {
        let req = fx.get("/patients/p-1", &unknown_kid_token(i));
        set.spawn(async move { req.send().await.unwrap().status().as_u16() });
    }
    while let Some(s) = set.join_next().await {
        statuses.push(s.unwrap());
    }
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");

    let after = fx.jwks().fetches();
    assert!(
        after - before <= 1,
        "50 unknown kids made {} JWKS fetches (at most 1 per 10 s allowed)",
        after - before
    );

    let ok = fx
        .get("/patients/p-1", &token("dr-ada", &["doctor"]))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "the known kid still works");

    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert_eq!(forwarded.len(), 1);
    assert_eq!(records.len(), 51, "one record per request");
    assert_eq!(
        records.iter().filter(|r| r["status"] == 401).count(),
        50,
        "{records:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_outage_keeps_the_last_good_keys() {
    let fx = fixture().start().await;
    fx.jwks().stop();
    let mut ids = Vec::new();
    // Fresh tokens each time (a token cache would hide a lost key set otherwise), both keys,
    // and an unknown kid in between that makes wardgate try the dead endpoint.
    for i in 0..3 {
        let rs = fx
            .get("/patients/p-1", &token("dr-ada", &["doctor"]))
            .send()
            .await
            .unwrap();
        assert_eq!(rs.status(), 200, "RS256 token during the outage, round {i}");
        let es = fx
            .get("/patients/p-1", &es256(&claims("dr-ada", &["doctor"])))
            .send()
            .await
            .unwrap();
        assert_eq!(es.status(), 200, "ES256 token during the outage, round {i}");
        let unknown = fx
            .get("/patients/p-1", &unknown_kid_token(i))
            .send()
            .await
            .unwrap();
        ids.push(expect_problem(unknown, 401).await);
    }
    let ready = fx.client.get(fx.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "keys are still loaded, so still ready");
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert_eq!(forwarded.len(), 6);
    assert_eq!(records.len(), 9);
    for id in &ids {
        assert_eq!(record_by_id(&records, id)["decision"], "deny");
    }
}
