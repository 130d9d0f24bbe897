//! The security team's tools, as the real binary: `wardgate test` over the shipped policy tests
//! and over a failing case, `wardgate explain`, `validate` warnings for policies that can never
//! apply, and `wardgate demo` end to end (its printed curl lines give the statuses it promises).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::fixture;

fn wardgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run wardgate")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `wardgate test --config CONFIG PATH`.
fn policy_tests(config: &Path, path: &Path) -> Output {
    wardgate(&[
        "test",
        "--config",
        &config.display().to_string(),
        &path.display().to_string(),
    ])
}

fn shipped_config() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/wardgate.yaml")
        .display()
        .to_string()
}

#[test]
fn the_shipped_policy_tests_pass() {
    let o = wardgate(&["test", "--config", &shipped_config()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let last = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_owned();
    let (passed, failed) = last
        .strip_suffix(" failed")
        .and_then(|s| s.split_once(" passed, "))
        .unwrap_or_else(|| panic!("no closing line: {out}"));
    assert_eq!(failed, "0", "{out}");
    assert!(passed.parse::<usize>().unwrap() >= 40, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_expectation_fails_with_its_name_and_exit_1() {
    let p = fixture()
        .file(
            "cases/wrong.yaml",
            "cases:\n\
             - name: a receptionist reads notes\n\
             \x20 token: { sub: rx-bob, roles: [receptionist] }\n\
             \x20 request: { method: GET, path: /patients/p-1/notes }\n\
             \x20 expect: allow\n\
             - name: a doctor reads her patient\n\
             \x20 token: { sub: dr-ada, roles: [doctor] }\n\
             \x20 request: { method: GET, path: /patients/p-1 }\n\
             \x20 expect: allow\n\
             \x20 policies: [nurse-reads-own-ward]\n\
             - name: a doctor reads her patient, right this time\n\
             \x20 token: { sub: dr-ada, roles: [doctor] }\n\
             \x20 request: { method: GET, path: /patients/p-1 }\n\
             \x20 expect: allow\n\
             \x20 policies: [doctor-reads-care-team]\n",
        )
        .prepare()
        .await;
    let cases = p.dir.path().join("cases");
    let o = policy_tests(&p.config_path, &cases);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("`a receptionist reads notes`: expected allow, got deny"),
        "{out}"
    );
    assert!(stdout.contains("expected determining policies [\"nurse-reads-own-ward\"], got [\"doctor-reads-care-team\"]"), "{out}");
    assert!(stdout.trim_end().ends_with("1 passed, 2 failed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_test_file_names_file_and_key() {
    let p = fixture()
        .file("cases/bad.yaml", "cases:\n- name: x\n  tokn: {}\n")
        .prepare()
        .await;
    let cases = p.dir.path().join("cases/bad.yaml");
    let o = policy_tests(&p.config_path, &cases);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("bad.yaml") && out.contains("tokn"), "{out}");
    assert!(!out.contains("panicked"), "{out}");
}

#[test]
fn explain_shows_the_request_the_decision_and_the_policies() {
    let o = wardgate(&[
        "explain",
        "--config",
        &shipped_config(),
        "--claims",
        r#"{"sub":"dr-ada","roles":["doctor"]}"#,
        "-H",
        "X-Break-Glass: patient unconscious",
        "GET",
        "/patients/p-2/notes",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    for want in [
        "principal: Clinic::User::\"dr-ada\"",
        "action:    Clinic::Action::\"ReadNotes\"",
        "resource:  Clinic::Patient::\"p-2\"",
        "\"break_glass_reason\":\"patient unconscious\"",
        "\"ward\":\"oncology\"",
        "decision:  allow",
        "determining policies: doctor-break-glass-read",
    ] {
        assert!(out.contains(want), "missing `{want}` in\n{out}");
    }

    let o = wardgate(&[
        "explain",
        "--config",
        &shipped_config(),
        "--claims",
        r#"{"sub":"rx-bob","roles":["receptionist"]}"#,
        "GET",
        "/patients/p-1/notes",
    ]);
    let out = text(&o);
    assert!(out.contains("decision:  deny (policy)"), "{out}");
    assert!(out.contains("determining policies: none"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_warns_about_a_policy_that_can_never_apply() {
    let p = fixture()
        .file(
            "policies/never.cedar",
            "@id(\"patients-as-principals\")\n\
             permit (principal is Clinic::Patient, action == Clinic::Action::\"ReadPatient\", resource);\n",
        )
        .prepare()
        .await;
    let o = wardgate(&["validate", "--config", &p.config_path.display().to_string()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "a warning is not an error: {out}");
    assert!(out.contains("never.cedar:1:1: warning:"), "{out}");
    assert!(out.contains("patients-as-principals"), "{out}");
}

/// Runs `wardgate demo`, reads the curl lines it prints and replays them with reqwest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_what_it_prints() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .arg("demo")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start demo");
    let stdout = child.stdout.take().expect("stdout");
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("line");
            let done = line.contains("ctrl-c stops the demo");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    })
    .await
    .unwrap();
    let audit = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("audit log:"))
        .map(|s| s.trim().to_owned())
        .expect("audit path printed");

    let client = crate::support::fixture::client();
    let mut statuses = Vec::new();
    for (what, curl) in lines.iter().zip(lines.iter().skip(1)) {
        let Some(rest) = curl.strip_prefix("curl -si -X ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let method = parts.next().unwrap();
        let url = parts.next().unwrap();
        let mut req = client.request(method.parse().unwrap(), url);
        for header in rest.split(" -H '").skip(1) {
            let header = header.trim_end().trim_end_matches('\'');
            let (k, v) = header.split_once(": ").unwrap();
            req = req.header(k, v);
        }
        let status = req.send().await.unwrap().status().as_u16();
        let want = if what.contains("(allowed") { 200 } else { 403 };
        assert_eq!(status, want, "{what}\n{curl}");
        statuses.push(status);
    }
    assert!(
        statuses.contains(&200) && statuses.contains(&403),
        "{statuses:?}"
    );
    assert!(statuses.len() >= 5, "a curl line per demo role: {lines:#?}");

    // Every request left a record, and the chain verifies.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = std::fs::read_to_string(&audit)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if n == statuses.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} records for {} requests",
            statuses.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let o = wardgate(&["audit", "verify", &audit]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let _ = child.kill();
    let _ = child.wait();
}
