//! Operating it: a candidate policy set on live traffic, the Kubernetes ConfigMap symlink swap,
//! SIGHUP, and a graceful shutdown that lets a slow request finish and audits it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::process::spawn_wardgate;
use crate::support::*;

/// Next week's rules: the shipped set, plus receptionists lose demographics.
const STRICTER: &str = "@id(\"no-front-desk-reads\")\n\
    forbid (principal in Clinic::Role::\"receptionist\", action == Clinic::Action::\"ReadPatient\", resource);\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_set_is_decided_beside_the_enforced_one() {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/clinic.cedar"),
    )
    .unwrap();
    let fx = fixture()
        .file("candidate/clinic.cedar", &shipped)
        .file("candidate/stricter.cedar", STRICTER)
        .set("policies.candidate_dir", "candidate")
        .start()
        .await;

    // Enforced set allows, candidate denies: forwarded, and the record says what would change.
    let rx = fx
        .get("/patients/p-1", &token("rx-bob", &["receptionist"]))
        .send()
        .await
        .unwrap();
    assert_eq!(rx.status(), 200);
    // Both agree: no candidate field.
    let dr = fx
        .get("/patients/p-1", &token("dr-ada", &["doctor"]))
        .send()
        .await
        .unwrap();
    assert_eq!(dr.status(), 200);

    let metrics = fx.metrics().await;
    assert!(
        metrics.contains(
            r#"wardgate_candidate_disagreements_total{action="ReadPatient",candidate="deny"} 1"#
        ),
        "{metrics}"
    );
    let (records, _) = fx.finish().await;
    assert_eq!(records.len(), 2);
    let rx_rec = records
        .iter()
        .find(|r| r["principal"] == "Clinic::User::\"rx-bob\"")
        .unwrap();
    assert_eq!(rx_rec["decision"], "allow");
    assert_eq!(rx_rec["candidate_decision"], "deny", "{rx_rec}");
    let dr_rec = records
        .iter()
        .find(|r| r["principal"] == "Clinic::User::\"dr-ada\"")
        .unwrap();
    assert!(dr_rec.get("candidate_decision").is_none(), "{dr_rec}");
    assert_chain(&records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_candidate_set_stops_start_up() {
    let p = fixture()
        .file(
            "candidate/broken.cedar",
            "permit (principal, action, resource) when { resource.nosuch };\n",
        )
        .set("policies.candidate_dir", "candidate")
        .prepare()
        .await;
    let config = wardgate::config::Config::load(&p.config_path).unwrap();
    let err = match wardgate::app::start(config).await {
        Ok(_) => panic!("started with a broken candidate set"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("broken.cedar:1:"), "{err}");
}

/// Lays out `policies/` the way the kubelet mounts a ConfigMap: the files are symlinks through
/// `..data`, itself a symlink to a timestamped folder.
fn configmap_version(policies: &Path, version: &str, extra: Option<(&str, &str)>) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let dir = policies.join(version);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["clinic.cedar", "clinic.cedarschema", "entities.json"] {
        std::fs::copy(shipped.join(f), dir.join(f)).unwrap();
    }
    if let Some((name, text)) = extra {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

fn swap_data(policies: &Path, version: &str) {
    let tmp = policies.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, policies.join("..data")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_reloads_the_policies() {
    let p = fixture().prepare().await;
    let policies = p.dir.path().join("policies");
    // Replace the copied files by the kubelet's layout.
    for f in ["clinic.cedar", "clinic.cedarschema", "entities.json"] {
        std::fs::remove_file(policies.join(f)).unwrap();
    }
    configmap_version(&policies, "..2026_12_04_10_00_00.1", None);
    swap_data(&policies, "..2026_12_04_10_00_00.1");
    for f in [
        "clinic.cedar",
        "clinic.cedarschema",
        "entities.json",
        "lockdown.cedar",
    ] {
        std::os::unix::fs::symlink(format!("..data/{f}"), policies.join(f)).unwrap();
    }
    let fx = p.start().await;
    assert_eq!(
        fx.get("/patients/p-1", &token("dr-ada", &["doctor"]))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // The update: a new timestamped folder with one more file, then the atomic `..data` swap.
    configmap_version(
        &policies,
        "..2026_12_04_10_05_00.2",
        Some(("lockdown.cedar", "@id(\"lockdown\")\nforbid (principal == Clinic::User::\"dr-ada\", action, resource);\n")),
    );
    swap_data(&policies, "..2026_12_04_10_05_00.2");
    let locked = eventually(Duration::from_secs(6), || async {
        fx.get("/patients/p-1", &token("dr-ada", &["doctor"]))
            .send()
            .await
            .unwrap()
            .status()
            == 403
    })
    .await;
    assert!(locked, "the swapped ConfigMap was not in force within 6 s");
    let metrics = fx.metrics().await;
    assert!(
        metrics.contains(r#"wardgate_policy_reloads_total{result="ok"} 2"#),
        "{metrics}"
    );
    let (records, _) = fx.finish().await;
    let last = records.last().unwrap();
    assert_eq!(last["policies"], serde_json::json!(["lockdown"]), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_change_the_file_watch_cannot_see() {
    let p = fixture().prepare().await;
    let entities = p.dir.path().join("policies/entities.json");
    let (wg, proxy, _admin) = spawn_wardgate(&p.config_path);
    let client = fixture::client();
    let get = |sub: &str| {
        client
            .get(format!("http://{proxy}/patients/p-1"))
            .header(
                "authorization",
                format!("Bearer {}", token(sub, &["doctor"])),
            )
            .send()
    };
    assert_eq!(get("dr-ada").await.unwrap().status(), 200);
    assert_eq!(get("dr-bea").await.unwrap().status(), 403);

    // Same length, same inode, same mtime: only SIGHUP can notice.
    let before = std::fs::metadata(&entities).unwrap();
    let text = std::fs::read_to_string(&entities).unwrap();
    let changed = text.replacen("\"dr-ada\"", "\"dr-bea\"", 1);
    assert_eq!(changed.len(), text.len());
    std::fs::write(&entities, &changed).unwrap();
    let mtime = before
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let touched = Command::new("touch")
        .arg("-m")
        .arg("-d")
        .arg(format!("@{}.{:09}", mtime.as_secs(), mtime.subsec_nanos()))
        .arg(&entities)
        .status()
        .unwrap();
    assert!(touched.success());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        get("dr-bea").await.unwrap().status(),
        403,
        "the file watch must not have seen it"
    );

    let hup = Command::new("kill")
        .arg("-HUP")
        .arg(wg.pid().to_string())
        .status()
        .unwrap();
    assert!(hup.success());
    let reloaded = eventually(Duration::from_secs(5), || async {
        get("dr-bea").await.unwrap().status() == 200
    })
    .await;
    assert!(reloaded, "SIGHUP did not reload; log:\n{}", wg.log());
    assert_eq!(get("dr-ada").await.unwrap().status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_slow_request_finish_and_audits_it() {
    let mut fx = fixture().start().await;
    fx.backend().set_delay(Duration::from_millis(1500));
    let slow = fx.request_in_flight().await;
    let running = fx.take_running();
    let shutdown = tokio::spawn(running.shutdown());

    // Not ready any more, at once; the admin listener still answers.
    let not_ready = eventually(Duration::from_secs(1), || async {
        matches!(fx.client.get(fx.admin_url("/readyz")).send().await, Ok(r) if r.status() == 503)
    })
    .await;
    assert!(not_ready, "/readyz did not turn 503 during the drain");
    // New connections are refused.
    assert!(tokio::net::TcpStream::connect(fx.proxy).await.is_err());

    assert_eq!(
        slow.await.unwrap().unwrap(),
        200,
        "the in-flight request finished"
    );
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .unwrap()
        .unwrap();
    let records = read_audit(&fx.prepared.audit_path);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["status"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_outliving_the_grace_period_is_cut_and_still_audited() {
    let mut fx = fixture().set("limits.shutdown_grace_ms", 300).start().await;
    fx.backend().set_delay(Duration::from_secs(5));
    let slow = fx.request_in_flight().await;
    let running = fx.take_running();
    tokio::time::timeout(Duration::from_secs(4), running.shutdown())
        .await
        .expect("shutdown within the grace period");
    assert!(
        slow.await.unwrap().is_err(),
        "the client saw its connection cut"
    );
    let records = read_audit(&fx.prepared.audit_path);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["status"], 499);
    assert_eq!(records[0]["reason"], "shutdown");
}

fn assert_chain(records: &[serde_json::Value]) {
    for r in records {
        assert_eq!(r["hash"].as_str().unwrap(), expected_hash(r), "{r}");
    }
}

/// The decision cache: one token, the same request, before and after a reload — the reload wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_decision_never_outlives_a_policy_reload() {
    let fx = fixture().start().await;
    let t = token("dr-ada", &["doctor"]);
    for _ in 0..3 {
        assert_eq!(
            fx.get("/patients/p-1", &t).send().await.unwrap().status(),
            200
        );
    }
    let metrics = fx.metrics().await;
    assert!(
        metrics.contains(r#"wardgate_decision_cache_total{result="hit"} 2"#),
        "{metrics}"
    );

    std::fs::write(
        fx.prepared.dir.path().join("policies/lockdown.cedar"),
        "@id(\"lockdown\")\nforbid (principal == Clinic::User::\"dr-ada\", action, resource);\n",
    )
    .unwrap();
    let locked = eventually(Duration::from_secs(6), || async {
        fx.get("/patients/p-1", &t).send().await.unwrap().status() == 403
    })
    .await;
    assert!(
        locked,
        "the same token kept its cached allow after the reload"
    );
}

/// The decision cache keys on the whole request: the same token gets the answer each request
/// deserves (another patient, another action, a break-glass reason).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_gets_a_fresh_decision_for_each_different_request() {
    let fx = fixture().start().await;
    let t = token("dr-ada", &["doctor"]);
    let get = |path: &'static str, glass: Option<&'static str>| {
        let mut r = fx.get(path, &t);
        if let Some(g) = glass {
            r = r.header("x-break-glass", g);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get("/patients/p-1", None).await, 200);
    assert_eq!(get("/patients/p-2", None).await, 403);
    assert_eq!(get("/patients/p-2", Some("patient unconscious")).await, 200);
    assert_eq!(get("/patients/p-2", None).await, 403);
    assert_eq!(get("/patients/p-1/notes", None).await, 200);
    let w = fx
        .request(reqwest::Method::POST, "/patients/p-1/notes", &t)
        .body("{}")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(
        w, 403,
        "a write without MFA is refused even after reads were allowed"
    );
    let (records, _) = fx.finish().await;
    let reasons: Vec<_> = records
        .iter()
        .map(|r| r["break_glass_reason"].clone())
        .collect();
    assert_eq!(reasons[2], "patient unconscious", "{reasons:?}");
    assert!(reasons[3].is_null(), "{reasons:?}");
}

/// A request in flight while the set changes finishes on the set it started with; the next
/// request meets the new one. The connection gauge sees the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_during_a_reload_completes_on_its_own_set() {
    let fx = fixture().start().await;
    fx.backend().set_delay(Duration::from_millis(2500));
    let slow = fx.request_in_flight().await;
    let metrics = fx.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wardgate_connections_open ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    std::fs::write(
        fx.prepared.dir.path().join("policies/lockdown.cedar"),
        "@id(\"lockdown\")\nforbid (principal == Clinic::User::\"dr-ada\", action, resource);\n",
    )
    .unwrap();
    let url = fx.admin_url("/metrics");
    let reloaded = eventually(Duration::from_secs(5), || async {
        let m = fx
            .client
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        m.contains(r#"wardgate_policy_reloads_total{result="ok"} 2"#)
    })
    .await;
    assert!(reloaded);
    fx.backend().set_delay(Duration::ZERO);
    assert_eq!(
        fx.get("/patients/p-1", &token("dr-ada", &["doctor"]))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        slow.await.unwrap().unwrap(),
        200,
        "the in-flight request kept its allow"
    );
    let (records, _) = fx.finish().await;
    assert_eq!(records.len(), 2);
    let versions: Vec<_> = records
        .iter()
        .map(|r| r["policy_version"].clone())
        .collect();
    assert_ne!(
        versions[0], versions[1],
        "each record names the set it was decided under"
    );
}
