//! The admin listener: liveness, readiness (keys loaded or not) and Prometheus metrics.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_answer() {
    let fx = fixture().start().await;
    let health = fx
        .client
        .get(fx.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = fx.client.get(fx.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let ok = fx
        .get("/patients/p-1", &token("dr-ada", &["doctor"]))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let denied = fx.get("/patients/p-1", "garbage").send().await.unwrap();
    assert_eq!(denied.status(), 401);
    fx.records(2).await;

    let metrics = fx
        .client
        .get(fx.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let ct = metrics
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(ct.starts_with("text/plain"), "metrics content-type `{ct}`");
    let text = metrics.text().await.unwrap();
    assert!(text.contains("wardgate_requests_total"), "{text}");
    let names: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default())
        .collect();
    assert!(
        names.iter().all(|n| n.starts_with("wardgate_")),
        "every metric is prefixed `wardgate_`: {names:?}"
    );

    // The admin listener is not the proxy: it forwards nothing and audits nothing.
    let (records, _) = fx.finish().await;
    assert_eq!(records.len(), 2, "{records:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_issuer_keys() {
    let fx = fixture().jwks_down_at_start().start().await;
    let health = fx
        .client
        .get(fx.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "alive without keys");
    for _ in 0..3 {
        let ready = fx.client.get(fx.admin_url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 503, "not ready without keys");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fx.jwks().restart().await;
    let url = fx.admin_url("/readyz");
    let ready = eventually(Duration::from_secs(15), || async {
        matches!(fx.client.get(&url).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(
        ready,
        "/readyz never turned 200 after the JWKS came back (15 s)"
    );
    let ok = fx
        .get("/patients/p-1", &token("dr-ada", &["doctor"]))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let _ = fx.finish().await;
}
