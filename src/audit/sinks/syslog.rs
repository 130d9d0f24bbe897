//! The `syslog` sink: RFC 5424 messages over TCP with octet-counting framing (RFC 6587), or
//! over TLS (RFC 5425), fed from the sink's disk spool.
//!
//! Each record is one message, `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID audit - JSON`, where
//! PRI is the configured facility at severity informational, TIMESTAMP the record's `time` and
//! the message the record's canonical JSON line; each is framed as `LEN SP MESSAGE`.
//!
//! Plain TCP syslog has no acknowledgements, so the sender keeps written lines in the spool
//! until the connection has stayed up for `confirm_ms` after the write; a connection found
//! closed or broken before that (the receiver stopped or restarted) sends them again, from
//! the last confirmed line, over a new connection. Delivery is therefore at-least-once, and a
//! repeated line carries the same `seq`. (Data a receiver accepted into its socket and then
//! lost in a crash cannot be seen by any TCP sender; RELP would be needed for that.)

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Backoff, Stop};
use crate::audit::spool::{Chunk, Pos, SpoolReader};
use crate::audit::AuditSetupError;
use crate::config::SyslogSinkConfig;
use crate::metrics::Metrics;

const MAX_CHUNK_BYTES: usize = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// RFC 5424 severity: informational.
const SEVERITY_INFO: u8 = 6;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

type Tls = (
    tokio_rustls::TlsConnector,
    rustls::pki_types::ServerName<'static>,
);

/// Starts the sender thread of a `syslog` sink.
pub fn spawn(
    cfg: &SyslogSinkConfig,
    reader: SpoolReader,
    stop: Stop,
    metrics: Metrics,
) -> Result<JoinHandle<()>, AuditSetupError> {
    let tls = match &cfg.tls {
        Some(t) => Some(
            tls_connector(&t.ca_file, &t.server_name).map_err(|message| AuditSetupError::Sink {
                sink: format!("syslog {}", cfg.address),
                message,
            })?,
        ),
        None => None,
    };
    let sender = SyslogSender {
        cfg: cfg.clone(),
        tls,
        reader,
        stop,
        metrics,
        procid: std::process::id().to_string(),
    };
    super::spawn_sender("syslog", sender.run())
}

fn tls_connector(ca_file: &std::path::Path, server_name: &str) -> Result<Tls, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| format!("cannot read `{}`: {e}", ca_file.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("`{}`: {e}", ca_file.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("`{}`: {e}", ca_file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("`{}` holds no certificate", ca_file.display()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|_| format!("`{server_name}` is not a TLS server name"))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

struct SyslogSender {
    cfg: SyslogSinkConfig,
    tls: Option<Tls>,
    reader: SpoolReader,
    stop: Stop,
    metrics: Metrics,
    procid: String,
}

/// Written, not yet confirmed: everything before `end`, written at `at`.
struct Unconfirmed {
    end: Pos,
    at: Instant,
    lines: u64,
}

impl SyslogSender {
    async fn run(mut self) {
        let mut backoff = Backoff::new(self.cfg.retry.initial, self.cfg.retry.max);
        let mut conn: Option<Box<dyn Stream>> = None;
        let mut sent = self.reader.acked();
        let mut unconfirmed: VecDeque<Unconfirmed> = VecDeque::new();
        let mut failing = false;
        loop {
            if let Some(c) = conn.as_mut() {
                if !still_open(c.as_mut()).await {
                    conn = None;
                    if !unconfirmed.is_empty() {
                        tracing::warn!(
                            address = %self.cfg.address,
                            "syslog connection closed before its last records were confirmed; sending them again"
                        );
                    }
                    unconfirmed.clear();
                    sent = self.reader.acked();
                }
            }
            if conn.is_some() {
                while let Some(u) = unconfirmed.front() {
                    if u.at.elapsed() < self.cfg.confirm {
                        break;
                    }
                    if let Err(e) = self.reader.ack(u.end) {
                        tracing::warn!(error = %e, "cannot record the syslog sink's delivery; it may be repeated");
                    }
                    self.metrics.audit_written("syslog", u.lines);
                    unconfirmed.pop_front();
                }
            }
            if self.stop.should_exit(self.reader.unsent()) {
                break;
            }
            let chunk = match self.reader.read(sent, self.cfg.batch_size, MAX_CHUNK_BYTES) {
                Ok(Some(c)) => c,
                Ok(None) => {
                    let wait = unconfirmed.front().map_or(Duration::from_secs(1), |u| {
                        self.cfg.confirm.saturating_sub(u.at.elapsed())
                    });
                    self.stop.idle(&self.reader, wait).await;
                    continue;
                }
                Err(e) => {
                    self.metrics.audit_error("syslog");
                    tracing::error!(error = %e, "cannot read the syslog sink's spool");
                    self.stop.pause(backoff.next_wait()).await;
                    continue;
                }
            };
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match self.connect().await {
                    Ok(c) => conn.insert(c),
                    Err(e) => {
                        self.failed(&mut failing, &e);
                        self.stop.pause(backoff.next_wait()).await;
                        continue;
                    }
                },
            };
            let frames = self.frames(&chunk);
            let write = async {
                c.write_all(&frames).await?;
                c.flush().await
            };
            let written = match self.stop.deadline() {
                Some(d) => tokio::time::timeout_at(d.into(), write)
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
                None => write.await,
            };
            match written {
                Ok(()) => {
                    sent = chunk.end;
                    unconfirmed.push_back(Unconfirmed {
                        end: chunk.end,
                        at: Instant::now(),
                        lines: chunk.ends.len() as u64,
                    });
                    if failing {
                        tracing::info!(address = %self.cfg.address, "syslog receiver reachable again");
                        failing = false;
                    }
                    backoff.reset();
                }
                Err(e) => {
                    conn = None;
                    unconfirmed.clear();
                    sent = self.reader.acked();
                    self.failed(&mut failing, &e.to_string());
                    self.stop.pause(backoff.next_wait()).await;
                }
            }
        }
    }

    fn failed(&self, failing: &mut bool, e: &str) {
        self.metrics.audit_error("syslog");
        if *failing {
            tracing::debug!(address = %self.cfg.address, error = %e, "syslog delivery failed again");
        } else {
            tracing::warn!(address = %self.cfg.address, error = %e, "syslog delivery failed; retrying with backoff");
            *failing = true;
        }
    }

    async fn connect(&self) -> Result<Box<dyn Stream>, String> {
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(self.cfg.address.as_str()),
        )
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some((connector, name)) => {
                let tls =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                        .await
                        .map_err(|_| "TLS handshake timed out".to_owned())?
                        .map_err(|e| format!("TLS handshake: {e}"))?;
                Ok(Box::new(tls))
            }
        }
    }

    /// The octet-counted RFC 5424 frames of a chunk's lines.
    fn frames(&self, chunk: &Chunk) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.bytes.len() + chunk.ends.len() * 96);
        for line in chunk.lines() {
            let json = line.strip_suffix(b"\n").unwrap_or(line);
            let msg = frame_message(
                self.cfg.facility,
                &self.cfg.hostname,
                &self.cfg.app_name,
                &self.procid,
                json,
            );
            out.extend_from_slice(msg.len().to_string().as_bytes());
            out.push(b' ');
            out.extend_from_slice(&msg);
        }
        out
    }
}

/// One RFC 5424 message carrying one audit line.
pub fn frame_message(
    facility: u8,
    hostname: &str,
    app: &str,
    procid: &str,
    json: &[u8],
) -> Vec<u8> {
    #[derive(serde::Deserialize)]
    struct Time<'a> {
        #[serde(borrow)]
        time: std::borrow::Cow<'a, str>,
    }
    let time = serde_json::from_slice::<Time<'_>>(json)
        .ok()
        .map(|t| t.time.into_owned())
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "-".to_owned());
    let pri = u16::from(facility) * 8 + u16::from(SEVERITY_INFO);
    let mut msg = format!("<{pri}>1 {time} {hostname} {app} {procid} audit - ").into_bytes();
    msg.extend_from_slice(json);
    msg
}

/// Whether the peer has not closed the connection (a syslog receiver never sends anything,
/// so readable means closed or broken).
async fn still_open(c: &mut dyn Stream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        // A zero timeout polls the read once: pending means nothing arrived, the link is up.
        match tokio::time::timeout(Duration::ZERO, c.read(&mut buf)).await {
            Err(_) => return true,
            Ok(Ok(0) | Err(_)) => return false,
            Ok(Ok(_)) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_rfc5424_with_the_record_time() {
        let json = br#"{"seq":1,"time":"2026-12-04T15:20:00.123456Z"}"#;
        let msg = frame_message(10, "pod-1", "wardgate", "42", json);
        assert_eq!(
            String::from_utf8(msg).unwrap(),
            r#"<86>1 2026-12-04T15:20:00.123456Z pod-1 wardgate 42 audit - {"seq":1,"time":"2026-12-04T15:20:00.123456Z"}"#
        );
        let msg = frame_message(16, "h", "a", "1", b"not json");
        assert!(msg.starts_with(b"<134>1 - h a 1 audit - not json"));
    }

    #[tokio::test]
    async fn a_peer_that_closed_is_noticed_before_the_next_write() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (peer, _) = l.accept().await.unwrap();
        assert!(still_open(&mut c).await);
        drop(peer);
        let mut open = true;
        for _ in 0..200 {
            if !still_open(&mut c).await {
                open = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!open, "the peer's FIN is seen");
    }
}
