//! Policy reload on file change (SPEC "Reload"): a valid change takes effect within 5 seconds;
//! an invalid one changes nothing but the error counter.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

/// Writes `content` to `dir/name` through a rename, as editors and ConfigMaps do.
fn replace_file(dir: &Path, name: &str, content: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_policy_file_takes_effect_within_five_seconds() {
    let fx = fixture().start().await;
    let t = token("dr-ada", &["doctor"]);
    let first = fx.get("/patients/p-1", &t).send().await.unwrap();
    assert_eq!(first.status(), 200);

    replace_file(
        &fx.prepared.dir.path().join("policies"),
        "lockdown.cedar",
        "@id(\"lockdown\")\nforbid (principal == Clinic::User::\"dr-ada\", action, resource);\n",
    );
    let deadline = Instant::now() + Duration::from_secs(6);
    let denied_id = loop {
        let resp = fx
            .get("/patients/p-1", &token("dr-ada", &["doctor"]))
            .send()
            .await
            .unwrap();
        if resp.status() == 403 {
            break expect_problem(resp, 403).await;
        }
        assert!(
            Instant::now() < deadline,
            "the new forbid was not in force 6 s after the file appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (records, _) = fx.finish().await;
    let r = record_by_id(&records, &denied_id);
    assert!(policies_of(r).contains(&"lockdown".to_owned()), "{r}");
    assert_ne!(
        r["policy_version"], records[0]["policy_version"],
        "the audit record names the new policy version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_change_keeps_the_old_policies() {
    let fx = fixture().start().await;
    replace_file(
        &fx.prepared.dir.path().join("policies"),
        "broken.cedar",
        "@id(\"broken\")\npermit (principal, action, resource) when { resource.nosuch };\n",
    );
    let url = fx.admin_url("/metrics");
    let counted = eventually(Duration::from_secs(6), || async {
        let text = fx
            .client
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines().any(|l| {
            l.starts_with("wardgate_policy_reloads_total")
                && l.contains(r#"result="error""#)
                && !l.trim_end().ends_with(" 0")
        })
    })
    .await;
    assert!(
        counted,
        "wardgate_policy_reloads_total{{result=\"error\"}} did not move within 6 s"
    );
    // The old set still decides: dr-ada reads p-1, a receptionist still cannot read notes.
    let ok = fx
        .get("/patients/p-1", &token("dr-ada", &["doctor"]))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let denied = fx
        .get("/patients/p-1/notes", &token("rx-bob", &["receptionist"]))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let _ = fx.finish().await;
}
