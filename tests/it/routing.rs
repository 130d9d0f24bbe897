//! Request targets: what a backend could read differently from wardgate is refused before any
//! matching (400, nothing forwarded); what no route names is denied (403); `HEAD` rides the
//! `GET` routes.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_targets_are_400_and_never_forwarded() {
    let fx = fixture().start().await;
    let auth = format!("Bearer {}", token("dr-ada", &["doctor"]));
    let targets = [
        "/patients/../admin",
        "/patients/./p-1",
        "/patients//p-1",
        "/patients/%2e%2e/x",
        "/patients/%2E%2E/x",
        "/patients/p-1%2fnotes",
        "/patients/p-1%2Fnotes",
        "/patients/p-1%5cnotes",
        "/patients/p-1%00",
        "/patients/p%zz",
        "/patients/p%2",
        "http://127.0.0.1/patients/p-1",
    ];
    let mut failures = Vec::new();
    let mut ids = Vec::new();
    for t in targets {
        let resp = fx.raw("GET", t, &[("Authorization", &auth)]).await;
        if resp.status != 400 {
            failures.push(format!("`{t}`: status {}, want 400", resp.status));
            continue;
        }
        match check_problem(resp.header("content-type"), &resp.body, 400) {
            Ok(id) => ids.push((t, id)),
            Err(e) => failures.push(format!("`{t}`: {e}")),
        }
    }
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert!(
        forwarded.is_empty(),
        "hostile targets reached the backend: {:?}",
        forwarded.iter().map(|r| &r.target).collect::<Vec<_>>()
    );
    for (t, id) in &ids {
        match records
            .iter()
            .filter(|r| r["decision_id"] == id.as_str())
            .collect::<Vec<_>>()
            .as_slice()
        {
            [r] => {
                if r["decision"] != "deny" || r["status"] != 400 || r["reason"] != "bad_path" {
                    failures.push(format!(
                        "`{t}`: audit decision {} status {} reason {} (want deny, 400, bad_path)",
                        r["decision"], r["status"], r["reason"]
                    ));
                }
            }
            found => failures.push(format!("`{t}`: {} audit records", found.len())),
        }
    }
    if records.len() != targets.len() {
        failures.push(format!(
            "{} audit records for {} requests",
            records.len(),
            targets.len()
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_no_route_names_is_denied() {
    let fx = fixture().start().await;
    let t = token("dr-ada", &["doctor"]);
    let delete = fx
        .request(reqwest::Method::DELETE, "/patients/p-1", &t)
        .send()
        .await
        .unwrap();
    let delete_id = expect_problem(delete, 403).await;
    // Matching is case-sensitive.
    let upper = fx.get("/Patients/p-1", &t).send().await.unwrap();
    let upper_id = expect_problem(upper, 403).await;
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert!(forwarded.is_empty(), "{forwarded:#?}");
    assert_eq!(records.len(), 2, "{records:#?}");
    for id in [&delete_id, &upper_id] {
        let r = record_by_id(&records, id);
        assert_eq!(r["decision"], "deny", "{r}");
        assert_eq!(r["status"], 403, "{r}");
        assert_eq!(r["reason"], "no_route", "{r}");
    }
    assert_eq!(record_by_id(&records, &delete_id)["method"], "DELETE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_matches_the_get_route() {
    let fx = fixture().start().await;
    let resp = fx
        .request(
            reqwest::Method::HEAD,
            "/patients/p-1",
            &token("dr-ada", &["doctor"]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0].method, "HEAD");
    assert_eq!(forwarded[0].target, "/patients/p-1");
    assert_eq!(records.len(), 1);
    let r = record_by_id(&records, forwarded[0].header("x-wardgate-decision-id"));
    assert_eq!(r["decision"], "allow");
    assert_eq!(r["action"], r#"Clinic::Action::"ReadPatient""#);
    assert_eq!(r["method"], "HEAD");
}
