//! The npm `oidc-provider` (OpenID Certified) as a child process on a loopback port: see
//! `tests/oidc-provider/provider.mjs`. Its packages are installed by `scripts/test.sh`
//! (`npm ci --prefix tests/oidc-provider`), or here on first use when they are missing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// The provider folder.
pub fn provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc-provider")
}

/// Installs the provider's npm packages unless they are there (once per test process).
fn ensure_installed() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap();
    if *done || provider_dir().join("node_modules/oidc-provider").is_dir() {
        *done = true;
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefix"])
        .arg(provider_dir())
        .stdout(Stdio::null())
        .status()
        .expect("npm (Node.js) is needed for the OpenID provider test");
    assert!(
        status.success(),
        "npm ci --prefix tests/oidc-provider failed"
    );
    *done = true;
}

/// A running provider; killed when dropped.
pub struct OidcProvider {
    child: Child,
    pub issuer: String,
    pub port: u16,
}

impl OidcProvider {
    /// Serves on `port` (0: any) with the keys `kids` (the first signs), kept in `key_dir`.
    pub fn start(port: u16, key_dir: &Path, kids: &[&str]) -> OidcProvider {
        ensure_installed();
        let mut child = Command::new("node")
            .arg(provider_dir().join("provider.mjs"))
            .arg(port.to_string())
            .arg(key_dir)
            .arg(kids.join(","))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn node provider.mjs");
        let stdout = child.stdout.take().expect("stdout pipe");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("the OpenID provider did not start within 20 s")
            });
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("provider ready line `{line}`: {e}"));
        OidcProvider {
            child,
            issuer: ready["issuer"].as_str().expect("issuer").to_owned(),
            port: ready["port"].as_u64().expect("port") as u16,
        }
    }

    /// An access token from the client-credentials grant for the records API.
    pub async fn token(&self, client: &reqwest::Client, scope: &str) -> String {
        let body = format!(
            "grant_type=client_credentials&client_id=dr-ada&client_secret=dr-ada-secret\
             &resource=https%3A%2F%2Frecords.clinic.example&scope={}",
            scope.replace(' ', "+").replace(':', "%3A")
        );
        let r = client
            .post(format!("{}/token", self.issuer))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("token request");
        let status = r.status();
        let json: Value = r.json().await.expect("token response json");
        assert_eq!(status, 200, "token endpoint: {json}");
        json["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// Stops the provider (its port is free once this returns).
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
