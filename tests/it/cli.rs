//! `wardgate validate`, the real binary: the shipped policies pass; broken policies, routes and
//! config fail with exit 1 (or non-zero) and a diagnostic naming file, line and column or key;
//! nothing panics.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::json;

use crate::support::fixture;

async fn validate(config: &Path) -> Output {
    let config = config.to_path_buf();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_wardgate"))
            .arg("validate")
            .arg("--config")
            .arg(&config)
            .env("NO_COLOR", "1")
            .output()
            .expect("run wardgate validate")
    })
    .await
    .unwrap()
}

fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_no_panic(o: &Output) {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !all.contains("panicked") && !all.contains("RUST_BACKTRACE"),
        "{}",
        describe(o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_policies_validate() {
    let p = fixture().prepare().await;
    let o = validate(&p.config_path).await;
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_reading_a_missing_attribute_is_named_by_file_line_and_column() {
    // `resource.nosuch` sits on line 4, column 8 of broken.cedar.
    let broken = "// reads an attribute the schema does not declare\n\
                  @id(\"broken\")\n\
                  permit (principal, action == Clinic::Action::\"ReadPatient\", resource is Clinic::Patient)\n\
                  when { resource.nosuch == \"x\" };\n";
    let p = fixture()
        .file("policies/broken.cedar", broken)
        .prepare()
        .await;
    let o = validate(&p.config_path).await;
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let at = err
        .find("broken.cedar:4:")
        .unwrap_or_else(|| panic!("stderr does not name `broken.cedar:4:<column>`:\n{err}"));
    let column: String = err[at + "broken.cedar:4:".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(
        !column.is_empty(),
        "no column after `broken.cedar:4:`:\n{err}"
    );
    assert!(
        err.contains("nosuch"),
        "the diagnostic names the attribute:\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_with_a_syntax_error_is_named_by_file_and_line() {
    let broken = "@id(\"typo\")\npermit (principal, action, resource)\nwhen { principal.roles.contains(\"doctor\") \n";
    let p = fixture()
        .file("policies/typo.cedar", broken)
        .prepare()
        .await;
    let o = validate(&p.config_path).await;
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("typo.cedar:"),
        "stderr does not name typo.cedar:\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_whose_action_is_not_in_the_schema_is_refused() {
    let p = fixture()
        .set(
            "routes",
            json!([{ "method": "DELETE", "path": "/patients/{id}", "action": "DeletePatient",
                     "resource": { "type": "Patient", "id": "{id}" } }]),
        )
        .prepare()
        .await;
    let o = validate(&p.config_path).await;
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("DeletePatient"), "{}", describe(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_config_key_is_named_with_the_file() {
    let p = fixture().set("colour", "blue").prepare().await;
    let o = validate(&p.config_path).await;
    assert_no_panic(&o);
    assert_ne!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(
        o.status.code().is_some(),
        "killed by a signal: {}",
        describe(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("wardgate.yaml"),
        "names the file: {}",
        describe(&o)
    );
    assert!(err.contains("colour"), "names the key: {}", describe(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_config_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let o = validate(&missing).await;
    assert_no_panic(&o);
    assert_ne!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(
        o.status.code().is_some(),
        "killed by a signal: {}",
        describe(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nope.yaml"),
        "names the file: {}",
        describe(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_yaml_is_a_clear_error() {
    let p = fixture().prepare().await;
    std::fs::write(&p.config_path, "listen: [unclosed\n  upstream: :\n").unwrap();
    let o = validate(&p.config_path).await;
    assert_no_panic(&o);
    assert_ne!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(
        o.status.code().is_some(),
        "killed by a signal: {}",
        describe(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("wardgate.yaml"),
        "names the file: {}",
        describe(&o)
    );
}
