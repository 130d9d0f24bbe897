//! A real rsyslog (`rsyslogd -n`, Debian package `rsyslog`, installed by `scripts/test.sh`)
//! as a child process: its own config in a temp dir, `imtcp` on a loopback port (plain, or
//! TLS with the `ossl` driver), and one `omfile` action writing, per message, the parsed
//! RFC 5424 fields `PRI|APP-NAME|MSGID|MSG`. It can be stopped (SIGTERM) and started again on
//! the same port.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One message as rsyslog parsed and wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub pri: String,
    pub app_name: String,
    pub msgid: String,
    pub msg: String,
}

pub struct Rsyslog {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

/// TLS material for the `ossl` stream driver (PEM files).
pub struct RsyslogTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

fn rsyslogd() -> PathBuf {
    for p in ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("rsyslogd")
}

impl Rsyslog {
    /// Starts rsyslog with plain TCP on a free loopback port.
    pub fn start() -> Rsyslog {
        Self::start_with(None)
    }

    /// Starts rsyslog; with `tls`, its listener speaks RFC 5425 (TLS) instead.
    pub fn start_with(tls: Option<RsyslogTls>) -> Rsyslog {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let d = dir.path().display().to_string();
        let (global_tls, module) = match tls {
            None => (String::new(), r#"module(load="imtcp")"#.to_owned()),
            Some(t) => {
                std::fs::write(dir.path().join("ca.pem"), t.ca_pem).expect("ca");
                std::fs::write(dir.path().join("cert.pem"), t.cert_pem).expect("cert");
                std::fs::write(dir.path().join("key.pem"), t.key_pem).expect("key");
                (
                    format!(
                        r#"global(DefaultNetstreamDriver="ossl" DefaultNetstreamDriverCAFile="{d}/ca.pem" DefaultNetstreamDriverCertFile="{d}/cert.pem" DefaultNetstreamDriverKeyFile="{d}/key.pem")"#
                    ),
                    r#"module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")"#
                        .to_owned(),
                )
            }
        };
        let conf = format!(
            r#"global(workDirectory="{d}" maxMessageSize="64k")
{global_tls}
{module}
template(name="fields" type="string" string="%pri%|%app-name%|%msgid%|%msg%\n")
input(type="imtcp" port="{port}" address="127.0.0.1")
action(type="omfile" file="{d}/out.log" template="fields")
"#
        );
        std::fs::write(dir.path().join("rsyslog.conf"), conf).expect("write rsyslog.conf");
        let mut r = Rsyslog {
            dir,
            port,
            child: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let _ = std::fs::remove_file(d.join("rsyslogd.pid"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("rsyslogd.log"))
            .expect("log file");
        let child = Command::new(rsyslogd())
            .arg("-n")
            .arg("-f")
            .arg(d.join("rsyslog.conf"))
            .arg("-i")
            .arg(d.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run rsyslogd (scripts/test.sh installs the `rsyslog` package): {e}")
            });
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let start = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("rsyslogd exited with {status}:\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "rsyslogd never listened on {addr}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// rsyslogd's own output.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rsyslogd.log")).unwrap_or_default()
    }

    /// SIGTERM, then waits for it to exit (its port is closed afterwards).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The shell's builtin `kill`: no procps needed.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {}", child.id()))
            .status();
        let start = Instant::now();
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Every message written so far, in order.
    pub fn received(&self) -> Vec<Received> {
        let text = std::fs::read_to_string(self.dir.path().join("out.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut it = l.splitn(4, '|');
                Some(Received {
                    pri: it.next()?.to_owned(),
                    app_name: it.next()?.to_owned(),
                    msgid: it.next()?.to_owned(),
                    msg: it.next()?.to_owned(),
                })
            })
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}
