//! Decisions of the shipped clinic policies as seen through the proxy: role limits,
//! break-glass, restricted records, and resources whose attributes come from `entities_url`.

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receptionist_reads_demographics_but_not_notes() {
    let fx = fixture().start().await;
    let t = token("rx-bob", &["receptionist"]);
    let ok = fx.get("/patients/p-1", &t).send().await.unwrap();
    assert_eq!(ok.status(), 200);

    let resp = fx.get("/patients/p-1/notes", &t).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.bytes().await.unwrap();
    let id = assert_problem(ct.as_deref(), &body, 403);
    // Nothing about the policies leaks to the client.
    let body_text = String::from_utf8_lossy(&body);
    for leak in ["receptionist-reads", "permit", "forbid", "Clinic::"] {
        assert!(
            !body_text.contains(leak),
            "problem body leaks `{leak}`: {body_text}"
        );
    }

    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert_eq!(
        forwarded.len(),
        1,
        "only the demographics read is forwarded"
    );
    assert_eq!(forwarded[0].target, "/patients/p-1");
    assert_eq!(records.len(), 2, "{records:#?}");
    let r = record_by_id(&records, &id);
    assert_eq!(r["decision"], "deny");
    assert_eq!(r["status"], 403);
    assert_eq!(r["reason"], "policy");
    assert_eq!(r["principal"], r#"Clinic::User::"rx-bob""#);
    assert_eq!(r["action"], r#"Clinic::Action::"ReadNotes""#);
    assert_eq!(r["resource"], r#"Clinic::Patient::"p-1""#);
    assert_eq!(r["errors"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_opens_a_record_outside_the_care_team_and_is_audited() {
    let fx = fixture().start().await;
    let t = token("dr-ada", &["doctor"]);
    let reason = "chest pain, patient unconscious";

    let without = fx.get("/patients/p-2", &t).send().await.unwrap();
    let without_id = expect_problem(without, 403).await;

    let empty = fx
        .get("/patients/p-2", &t)
        .header("X-Break-Glass", "")
        .send()
        .await
        .unwrap();
    let empty_id = expect_problem(empty, 403).await;

    let with = fx
        .get("/patients/p-2", &t)
        .header("X-Break-Glass", reason)
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);

    // Restricted records stay closed to anyone outside the care team, break-glass or not.
    let restricted = fx
        .get("/patients/p-3", &t)
        .header("X-Break-Glass", reason)
        .send()
        .await
        .unwrap();
    let restricted_id = expect_problem(restricted, 403).await;

    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert_eq!(forwarded.len(), 1, "{forwarded:#?}");
    assert_eq!(forwarded[0].target, "/patients/p-2");
    assert_eq!(records.len(), 4, "{records:#?}");

    let r = record_by_id(&records, forwarded[0].header("x-wardgate-decision-id"));
    assert_eq!(r["decision"], "allow");
    assert_eq!(r["break_glass"], true);
    assert_eq!(r["break_glass_reason"], reason);
    assert!(
        policies_of(r).contains(&"doctor-break-glass-read".to_owned()),
        "{r}"
    );

    for id in [&without_id, &empty_id] {
        let r = record_by_id(&records, id);
        assert_eq!(r["decision"], "deny");
        assert_eq!(r["reason"], "policy");
        assert_eq!(r["break_glass"], false, "{r}");
    }

    let r = record_by_id(&records, &restricted_id);
    assert_eq!(r["decision"], "deny");
    assert_eq!(r["break_glass"], true);
    assert_eq!(r["break_glass_reason"], reason);
    assert!(
        policies_of(r).contains(&"restricted-care-team-only".to_owned()),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_from_entities_url_are_decided_on_their_attributes() {
    let fx = fixture()
        .set(
            "entities_url",
            "http://{backend}/_authz/entities/{type}/{id}",
        )
        .start()
        .await;
    fx.backend().add_entity(
        "Patient",
        "p-9",
        json!([{
            "uid": { "type": "Clinic::Patient", "id": "p-9" },
            "attrs": {
                "patient_id": "p-9",
                "ward": "neurology",
                "care_team": [ { "__entity": { "type": "Clinic::User", "id": "dr-ada" } } ],
                "restricted": false
            },
            "parents": []
        }]),
    );

    let ada = fx
        .get("/patients/p-9", &token("dr-ada", &["doctor"]))
        .send()
        .await
        .unwrap();
    assert_eq!(ada.status(), 200);
    // A doctor outside p-9's care team: the attributes are read, not just the entity's presence.
    let grace = fx
        .get("/patients/p-9", &token("dr-grace", &["doctor"]))
        .send()
        .await
        .unwrap();
    let grace_id = expect_problem(grace, 403).await;
    // Nobody knows p-404 (the backend answers 404): reading its attributes errors, and an
    // error never allows.
    let unknown = fx
        .get("/patients/p-404", &token("dr-ada", &["doctor"]))
        .send()
        .await
        .unwrap();
    let unknown_id = expect_problem(unknown, 403).await;

    let forwarded = fx.backend().forwarded();
    let lookups: Vec<String> = fx
        .backend()
        .entity_lookups()
        .into_iter()
        .map(|r| r.target)
        .collect();
    let (records, _) = fx.finish().await;
    assert!(
        lookups.contains(&"/_authz/entities/Patient/p-9".to_owned()),
        "{lookups:?}"
    );
    assert!(
        lookups.contains(&"/_authz/entities/Patient/p-404".to_owned()),
        "{lookups:?}"
    );
    assert_eq!(forwarded.len(), 1, "{forwarded:#?}");
    assert_eq!(forwarded[0].target, "/patients/p-9");
    assert_eq!(records.len(), 3, "{records:#?}");
    let r = record_by_id(&records, forwarded[0].header("x-wardgate-decision-id"));
    assert_eq!(r["decision"], "allow");
    assert!(
        policies_of(r).contains(&"doctor-reads-care-team".to_owned()),
        "{r}"
    );
    for id in [&grace_id, &unknown_id] {
        let r = record_by_id(&records, id);
        assert_eq!(r["decision"], "deny", "{r}");
        assert_eq!(r["status"], 403, "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_records_the_deny_and_forwards_anyway() {
    let fx = fixture().set("mode", "shadow").start().await;
    let resp = fx
        .get("/patients/p-1/notes", &token("rx-bob", &["receptionist"]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "shadow mode always forwards");
    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0].header("x-wardgate-subject"), "rx-bob");
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = record_by_id(&records, forwarded[0].header("x-wardgate-decision-id"));
    assert_eq!(
        r["decision"], "deny",
        "the policy decision is recorded as it was: {r}"
    );
    assert_eq!(r["mode"], "shadow");
    assert_eq!(r["status"], 200);
}

/// Only the principal is checked against the schema per request (static and fetched entities
/// are checked when loaded); a claim of the wrong type still denies, before any policy runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_attribute_of_the_wrong_type_is_an_invalid_request() {
    let fx = fixture().start().await;
    let mut good = claims("dr-ada", &["doctor"]);
    good.insert("department".into(), json!("cardiology"));
    let mut bad = claims("dr-ada", &["doctor"]);
    bad.insert("department".into(), json!(42));

    let ok = fx.get("/patients/p-1", &rs256(&good)).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let refused = fx.get("/patients/p-1", &rs256(&bad)).send().await.unwrap();
    let id = expect_problem(refused, 403).await;

    let (records, _) = fx.finish().await;
    let r = record_by_id(&records, &id);
    assert_eq!(r["decision"], "deny");
    assert_eq!(r["reason"], "invalid_request");
    assert_eq!(r["policies"], json!([]));
    let errors = r["errors"].to_string();
    assert!(errors.contains("department"), "{errors}");
}

/// A context type that wardgate's requests can never satisfy denies every request of the
/// route, with Cedar's reason, with or without a break-glass reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_the_schema_does_not_accept_denies_every_request_of_the_route() {
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/clinic.cedarschema"),
    )
    .unwrap();
    let schema = shipped.replace(
        "    client_ip: ipaddr,",
        "    client_ip: ipaddr,\n    ticket: String,",
    );
    assert_ne!(schema, shipped, "the schema's context changed");
    let fx = fixture()
        .file("policies/clinic.cedarschema", &schema)
        .start()
        .await;
    let t = token("dr-ada", &["doctor"]);
    let plain = fx.get("/patients/p-1", &t).send().await.unwrap();
    let plain_id = expect_problem(plain, 403).await;
    let glass = fx
        .get("/patients/p-1", &t)
        .header("x-break-glass", "arrest")
        .send()
        .await
        .unwrap();
    let glass_id = expect_problem(glass, 403).await;

    let forwarded = fx.backend().forwarded();
    let (records, _) = fx.finish().await;
    assert!(forwarded.is_empty());
    for id in [&plain_id, &glass_id] {
        let r = record_by_id(&records, id);
        assert_eq!(r["reason"], "invalid_request");
        let errors = r["errors"].to_string();
        assert!(
            errors.contains("request does not fit the schema"),
            "{errors}"
        );
        assert!(errors.contains("ReadPatient"), "{errors}");
    }
}
