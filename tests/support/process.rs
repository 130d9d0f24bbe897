//! wardgate as a child process (`wardgate run`), for what only the real binary shows: signals,
//! memory, exit codes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The child process, killed if the test ends early.
pub struct Wardgate {
    pub child: Option<Child>,
    stderr: Arc<Mutex<String>>,
}

impl Wardgate {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Wardgate {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn parse_addr(line: &str, after: &str) -> Option<SocketAddr> {
    let at = line.find(after)? + after.len();
    let addr: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    addr.parse().ok()
}

/// Starts `wardgate run --config FILE` and waits for its ready line.
pub fn spawn_wardgate(config: &std::path::Path) -> (Wardgate, SocketAddr, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wardgate run");
    let stderr = child.stderr.take().expect("stderr pipe");
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
            if line.contains("wardgate ready") {
                let proxy = parse_addr(&line, "proxy http://");
                let admin = parse_addr(&line, "admin http://");
                if let (Some(p), Some(a), Some(tx)) = (proxy, admin, tx.take()) {
                    let _ = tx.send((p, a));
                }
            }
        }
    });
    let w = Wardgate {
        child: Some(child),
        stderr: log,
    };
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok((proxy, admin)) => (w, proxy, admin),
        Err(_) => panic!(
            "no `wardgate ready: proxy http://… admin http://…` line in 30 s; stderr:\n{}",
            w.log()
        ),
    }
}
