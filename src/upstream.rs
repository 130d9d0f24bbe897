//! The connections to the upstream: hyper's `client::conn::http1` connections, kept in a pool
//! of our own.
//!
//! The sidecar talks to one origin, so the pool is one list, not a map keyed by origin. A
//! connection goes back to the pool when its response body has been read to the end (or when
//! the body is dropped after it ended), never while it is still streaming; a body dropped
//! half-read takes its connection with it. A request that a pooled connection could not even
//! start writing (the upstream closed it while it sat idle) is sent again on the next idle
//! connection, or a new one; a request any byte of which was written is never sent again.
//! Compared with hyper-util's legacy `Client` this does per request no origin lookup, no
//! absolute-URI round trip and no spawned task to watch a connection become idle again.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;

use crate::config::{Limits, Upstream};

/// Idle connections kept at most; more are closed when they come back.
const MAX_IDLE: usize = 512;

/// Why the upstream did not answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the upstream: {0}")]
    Connect(std::io::Error),
    #[error("connecting to the upstream timed out")]
    ConnectTimeout,
    #[error("TLS handshake with the upstream failed: {0}")]
    Tls(std::io::Error),
    #[error("upstream connection failed: {0}")]
    Http(#[from] hyper::Error),
}

/// The pool of connections to the one upstream.
pub struct Pool {
    /// `host:port` as given in `upstream`, what `TcpStream::connect` resolves.
    address: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    sender: SendRequest<Incoming>,
    since: Instant,
}

impl Pool {
    /// A pool for `upstream`; `tls` is the client configuration when its scheme is `https`.
    pub fn new(
        upstream: &Upstream,
        tls: Option<rustls::ClientConfig>,
        limits: &Limits,
    ) -> Result<Arc<Self>, crate::tls::TlsError> {
        let https = upstream.scheme == http::uri::Scheme::HTTPS;
        let port = upstream
            .authority
            .port_u16()
            .unwrap_or(if https { 443 } else { 80 });
        let host = upstream.authority.host();
        let tls = match tls {
            None if https => {
                return Err(crate::tls::TlsError::Config(
                    "an https upstream needs a TLS client configuration".into(),
                ))
            }
            Some(mut cfg) if https => {
                cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
                // `[::1]` is the authority's form of an IPv6 address; the name is without brackets.
                let name = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                let name = ServerName::try_from(name).map_err(|e| {
                    crate::tls::TlsError::Config(format!("upstream host `{host}`: {e}"))
                })?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
            }
            _ => None,
        };
        Ok(Arc::new(Self {
            address: format!("{host}:{port}"),
            tls,
            connect_timeout: limits.upstream_connect_timeout,
            idle_timeout: limits.upstream_idle_timeout,
            idle: Mutex::new(Vec::new()),
        }))
    }

    /// Sends `req` (origin-form target) and returns the response head; its body returns the
    /// connection to the pool when read to the end.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        loop {
            let (mut sender, reused) = match self.checkout() {
                Some(s) => (s, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    return Ok(resp.map(|body| PooledBody {
                        body,
                        conn: Some((sender, self.clone())),
                    }))
                }
                Err(mut e) => match e.take_message() {
                    // Not a byte was written: the idle connection had been closed under us.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// The most recently used idle connection that can take a request now.
    fn checkout(&self) -> Option<SendRequest<Incoming>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // A connection whose body just ended may not have told its sender yet that it can take
        // the next request; it stays in the pool.
        let mut settling = Vec::new();
        let mut found = None;
        while let Some(c) = idle.pop() {
            if c.sender.is_closed() || c.since.elapsed() >= self.idle_timeout {
                continue; // dropping the sender lets its connection close
            }
            if c.sender.is_ready() {
                found = Some(c.sender);
                break;
            }
            settling.push(c);
        }
        idle.extend(settling.into_iter().rev());
        found
    }

    fn checkin(&self, sender: SendRequest<Incoming>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Closes the connections that have been idle longer than the idle timeout.
    pub fn close_expired(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|c| !c.sender.is_closed() && c.since.elapsed() < self.idle_timeout);
    }

    /// Closes expired idle connections every idle timeout, for as long as the pool exists
    /// (outside a runtime there is nothing to run it on; checkout still skips them).
    pub fn spawn_reaper(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = Arc::downgrade(self);
        let every = self.idle_timeout.max(Duration::from_secs(1));
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match pool.upgrade() {
                    Some(p) => p.close_expired(),
                    None => break,
                }
            }
        });
    }

    async fn connect(&self) -> Result<SendRequest<Incoming>, UpstreamError> {
        let connecting = async {
            let tcp = tokio::net::TcpStream::connect(self.address.as_str())
                .await
                .map_err(UpstreamError::Connect)?;
            let _ = tcp.set_nodelay(true);
            let peer = tcp.peer_addr().ok();
            match &self.tls {
                None => handshake(tcp, peer).await,
                Some((connector, name)) => {
                    let stream = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(UpstreamError::Tls)?;
                    handshake(stream, peer).await
                }
            }
        };
        tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .unwrap_or(Err(UpstreamError::ConnectTimeout))
    }
}

/// HTTP/1.1 over `io`; the connection runs as its own task until it closes.
async fn handshake<S>(
    io: S,
    peer: Option<SocketAddr>,
) -> Result<SendRequest<Incoming>, UpstreamError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, ?peer, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// An upstream response body that hands its connection back to the pool once read to the end.
pub struct PooledBody {
    body: Incoming,
    conn: Option<(SendRequest<Incoming>, Arc<Pool>)>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((sender, pool)) = self.conn.take() {
            pool.checkin(sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            // The connection is in an unknown state: it closes with its sender.
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body nobody needed to read (HEAD, 204, 304, empty) is complete; a half-read one
        // leaves its connection unusable, and dropping the sender closes it.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}
