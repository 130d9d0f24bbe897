//! Real HTTP servers on `127.0.0.1:0` (hyper 1): the issuer's JWKS endpoint and the records
//! backend that wardgate proxies to. Both can be stopped (port closed, open connections cut)
//! to play an outage, and the JWKS one restarted on the same port.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinHandle};

pub type BoxFut = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;
pub type Handler = Arc<dyn Fn(Request<Incoming>) -> BoxFut + Send + Sync>;

/// A hyper server whose accept loop and connections can be cut at once.
pub struct HttpServer {
    pub addr: SocketAddr,
    handler: Handler,
    accept: Mutex<Option<JoinHandle<()>>>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl HttpServer {
    pub async fn bind(handler: Handler) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let conns = Arc::new(Mutex::new(Vec::new()));
        let accept = spawn_accept(listener, handler.clone(), conns.clone());
        HttpServer {
            addr,
            handler,
            accept: Mutex::new(Some(accept)),
            conns,
        }
    }

    /// Closes the port and cuts every open connection.
    pub fn stop(&self) {
        if let Some(h) = self.accept.lock().unwrap().take() {
            h.abort();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Serves again on the same port.
    pub async fn restart(&self) {
        self.stop();
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot rebind {}: {e}", self.addr),
            }
        };
        let accept = spawn_accept(listener, self.handler.clone(), self.conns.clone());
        *self.accept.lock().unwrap() = Some(accept);
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_accept(
    listener: TcpListener,
    handler: Handler,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let handler = handler.clone();
            let task = tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                // Room for a client's 100 header fields plus what wardgate adds.
                let _ = hyper::server::conn::http1::Builder::new()
                    .max_headers(256)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
            let mut conns = conns.lock().unwrap();
            conns.retain(|c| !c.is_finished());
            conns.push(task.abort_handle());
        }
    })
}

fn json_response(status: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

// ---------------------------------------------------------------------------------------------

/// The issuer's JWKS endpoint: a swappable document and a request counter.
pub struct JwksServer {
    pub server: HttpServer,
    doc: Arc<Mutex<Value>>,
    count: Arc<AtomicUsize>,
}

impl JwksServer {
    pub async fn start(doc: Value) -> JwksServer {
        let doc = Arc::new(Mutex::new(doc));
        let count = Arc::new(AtomicUsize::new(0));
        let (d, c) = (doc.clone(), count.clone());
        let handler: Handler = Arc::new(move |_req| {
            c.fetch_add(1, Ordering::SeqCst);
            let body = d.lock().unwrap().clone();
            Box::pin(async move { json_response(200, &body) })
        });
        JwksServer {
            server: HttpServer::bind(handler).await,
            doc,
            count,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks", self.server.addr)
    }

    /// How many requests (fetches) the JWKS endpoint has answered.
    pub fn fetches(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub fn set(&self, doc: Value) {
        *self.doc.lock().unwrap() = doc;
    }

    pub fn stop(&self) {
        self.server.stop();
    }

    pub async fn restart(&self) {
        self.server.restart().await;
    }
}

// ---------------------------------------------------------------------------------------------

/// An OpenID provider's discovery side: `{issuer}/.well-known/openid-configuration` and the
/// `jwks_uri` it names, with a swappable JWKS, an optional `Cache-Control` on the JWKS, and
/// counters. The issuer is `http://127.0.0.1:PORT/realms/clinic`; every other path is a 404.
pub struct DiscoveryServer {
    pub server: HttpServer,
    jwks: Arc<Mutex<Value>>,
    /// `issuer` in the discovery document, when it should lie about it.
    claimed_issuer: Arc<Mutex<Option<String>>>,
    cache_control: Arc<Mutex<Option<String>>>,
    discovery_count: Arc<AtomicUsize>,
    jwks_count: Arc<AtomicUsize>,
}

pub const DISCOVERY_REALM: &str = "/realms/clinic";

impl DiscoveryServer {
    pub async fn start(jwks: Value) -> DiscoveryServer {
        let jwks = Arc::new(Mutex::new(jwks));
        let claimed_issuer: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let cache_control: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let discovery_count = Arc::new(AtomicUsize::new(0));
        let jwks_count = Arc::new(AtomicUsize::new(0));
        let (j, ci, cc, dc, jc) = (
            jwks.clone(),
            claimed_issuer.clone(),
            cache_control.clone(),
            discovery_count.clone(),
            jwks_count.clone(),
        );
        let handler: Handler = Arc::new(move |req| {
            let host = req
                .headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let issuer = format!("http://{host}{DISCOVERY_REALM}");
            let path = req.uri().path().to_owned();
            let response = if path == format!("{DISCOVERY_REALM}/.well-known/openid-configuration")
            {
                dc.fetch_add(1, Ordering::SeqCst);
                let claimed = ci.lock().unwrap().clone().unwrap_or_else(|| issuer.clone());
                json_response(
                    200,
                    &json!({
                        "issuer": claimed,
                        "jwks_uri": format!("{issuer}/protocol/openid-connect/certs"),
                        "token_endpoint": format!("{issuer}/protocol/openid-connect/token"),
                        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                    }),
                )
            } else if path == format!("{DISCOVERY_REALM}/protocol/openid-connect/certs") {
                jc.fetch_add(1, Ordering::SeqCst);
                let mut r = json_response(200, &j.lock().unwrap());
                if let Some(v) = cc.lock().unwrap().clone() {
                    r.headers_mut()
                        .insert("cache-control", v.parse().expect("header value"));
                }
                r
            } else {
                json_response(404, &json!({ "error": "not found" }))
            };
            Box::pin(async move { response })
        });
        DiscoveryServer {
            server: HttpServer::bind(handler).await,
            jwks,
            claimed_issuer,
            cache_control,
            discovery_count,
            jwks_count,
        }
    }

    /// The issuer URL, without a trailing `/`.
    pub fn issuer(&self) -> String {
        format!("http://{}{DISCOVERY_REALM}", self.server.addr)
    }

    /// Publishes this JWKS from now on.
    pub fn set_jwks(&self, doc: Value) {
        *self.jwks.lock().unwrap() = doc;
    }

    /// The discovery document names this issuer instead of the real one.
    pub fn claim_issuer(&self, issuer: &str) {
        *self.claimed_issuer.lock().unwrap() = Some(issuer.to_owned());
    }

    /// The JWKS response carries this `Cache-Control`.
    pub fn set_cache_control(&self, value: &str) {
        *self.cache_control.lock().unwrap() = Some(value.to_owned());
    }

    pub fn discovery_fetches(&self) -> usize {
        self.discovery_count.load(Ordering::SeqCst)
    }

    pub fn jwks_fetches(&self) -> usize {
        self.jwks_count.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------------------------

/// One request as the records backend received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query exactly as received.
    pub target: String,
    pub headers: http::HeaderMap,
    pub body_len: u64,
    pub body_sha256: String,
}

impl Received {
    /// The single value of `name`; panics when it is absent or repeated.
    pub fn header(&self, name: &str) -> &str {
        let all: Vec<_> = self.headers.get_all(name).iter().collect();
        assert_eq!(
            all.len(),
            1,
            "backend saw {} `{name}` headers: {:?}",
            all.len(),
            self.headers
        );
        all[0].to_str().expect("ascii header")
    }

    /// Every value of `name`, in order.
    pub fn headers_named(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }
}

/// The records backend: logs every request, drains and hashes bodies, answers 200 with a small
/// JSON body (after an optional delay), and serves `GET /_authz/entities/{type}/{id}`.
pub struct Backend {
    pub server: HttpServer,
    log: Arc<Mutex<Vec<Received>>>,
    delay_ms: Arc<AtomicU64>,
    entities: Arc<Mutex<HashMap<(String, String), Value>>>,
}

impl Backend {
    pub async fn start() -> Backend {
        let log = Arc::new(Mutex::new(Vec::new()));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let entities = Arc::new(Mutex::new(HashMap::new()));
        let (l, d, e) = (log.clone(), delay_ms.clone(), entities.clone());
        let handler: Handler = Arc::new(move |req: Request<Incoming>| {
            let (l, d, e) = (l.clone(), d.clone(), e.clone());
            Box::pin(async move { backend_answer(req, l, d, e).await })
        });
        Backend {
            server: HttpServer::bind(handler).await,
            log,
            delay_ms,
            entities,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Every request received, entity look-ups included.
    pub fn requests(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// The requests wardgate forwarded (entity look-ups under `/_authz/` left out).
    pub fn forwarded(&self) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| !r.target.starts_with("/_authz/"))
            .collect()
    }

    /// Entity look-ups received.
    pub fn entity_lookups(&self) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.target.starts_with("/_authz/"))
            .collect()
    }

    /// Answer every later request only after `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Serve `entities` (a JSON array of Cedar entities) at `/_authz/entities/{type}/{id}`.
    pub fn add_entity(&self, type_name: &str, id: &str, entities: Value) {
        self.entities
            .lock()
            .unwrap()
            .insert((type_name.to_owned(), id.to_owned()), entities);
    }
}

async fn backend_answer(
    req: Request<Incoming>,
    log: Arc<Mutex<Vec<Received>>>,
    delay_ms: Arc<AtomicU64>,
    entities: Arc<Mutex<HashMap<(String, String), Value>>>,
) -> Response<Full<Bytes>> {
    let (parts, mut body) = req.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| parts.uri.to_string());
    let mut hasher = Sha256::new();
    let mut body_len = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            body_len += data.len() as u64;
            hasher.update(&data);
        }
    }
    log.lock().unwrap().push(Received {
        method: parts.method.to_string(),
        target: target.clone(),
        headers: parts.headers.clone(),
        body_len,
        body_sha256: hex::encode(hasher.finalize()),
    });
    if let Some(rest) = target.strip_prefix("/_authz/entities/") {
        let mut it = rest.splitn(2, '/');
        let key = (
            it.next().unwrap_or_default().to_owned(),
            it.next().unwrap_or_default().to_owned(),
        );
        let found = entities.lock().unwrap().get(&key).cloned();
        return match found {
            Some(v) => json_response(200, &v),
            None => json_response(404, &json!({ "error": "no such entity" })),
        };
    }
    let delay = delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    json_response(200, &json!({ "ok": true, "served": target }))
}

/// An address on which nothing listens (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr
}

/// SHA-256 hex of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
