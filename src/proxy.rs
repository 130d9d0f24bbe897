//! The proxy listener: hyper 1 server in front, a pooled hyper client behind, and the request
//! pipeline between them.
//!
//! One request: header-size cap → path rules and route lookup ([`crate::routes`]) → token
//! ([`crate::auth`]) → decision ([`crate::policy`]) → forward with the header rules, streaming
//! both bodies, or refuse ([`crate::error`]) → exactly one audit record ([`crate::audit`]).
//! The record is written by an [`AuditGuard`] so that even a request whose client goes away
//! mid-flight is recorded.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderName, CONNECTION};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioTimer;
use ipnet::IpNet;

use crate::audit::queue::Slot;
use crate::audit::{Auditor, DecisionRecord};
use crate::auth::Authenticator;
use crate::config::{Config, Limits, Mode, Upstream};
use crate::error::Refusal;
use crate::metrics::Metrics;
use crate::policy::{PolicyEngine, RequestFacts};
use crate::routes::{check_target, RouteTable};
use crate::upstream::{Pool, PooledBody};

/// What the proxy answers with: the upstream's streaming body or a small body of our own.
pub type ProxyBody = Either<PooledBody, Full<Bytes>>;

const X_BREAK_GLASS: &str = "x-break-glass";
/// More header fields than this is a 431 (hyper's own cap, far above, is the backstop).
const MAX_HEADER_FIELDS: usize = 100;
/// Headers a backend or a framework in front of it may read as the caller's identity. The only
/// identity wardgate vouches for is its own `X-Wardgate-*`; these never reach the upstream,
/// whoever sends them (oauth2-proxy, Apache, nginx `auth_request`, Kong, AWS ALB, IAP, App
/// Service, Traefik forward-auth conventions).
const IDENTITY_HEADERS: &[&str] = &[
    "remote-user",
    "x-access-token",
    "x-auth-user",
    "x-authenticated-groups",
    "x-authenticated-user",
    "x-authenticated-userid",
    "x-client-cert",
    "x-email",
    "x-forwarded-access-token",
    "x-forwarded-client-cert",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-user",
    "x-groups",
    "x-id-token",
    "x-jwt-assertion",
    "x-principal",
    "x-remote-email",
    "x-remote-group",
    "x-remote-groups",
    "x-remote-user",
    "x-roles",
    "x-user",
    "x-user-email",
    "x-user-id",
    "x-userinfo",
    "x-username",
    "x-webauth-user",
];
/// Name prefixes of the same family (and wardgate's own, which it sets itself).
const IDENTITY_PREFIXES: &[&str] = &[
    "x-wardgate-",
    "x-auth-request-",
    "x-amzn-oidc-",
    "x-goog-authenticated-user-",
    "x-goog-iap-",
    "x-ms-client-principal",
    "x-consumer-",
    "x-ssl-client-",
    "ssl-client-",
];
/// What a proxy says about the client (address, scheme, host, prefix): kept only from a peer in
/// `trusted_proxies`, dropped from anyone else. `X-Forwarded-For` is rewritten separately.
const FORWARDING_HEADERS: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "x-original-forwarded-for",
];
/// Headers that ask a framework to act on another method or URL than the one authorized
/// (Symfony/Zend `X-Original-URL`/`X-Rewrite-URL`, Rails/Express/ASP.NET method overrides): a
/// client that sends one wants something other than what wardgate would decide on, so the
/// request is refused (400) rather than forwarded without it.
const OVERRIDE_HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-override-url",
];
const MAX_BREAK_GLASS_REASON: usize = 1024;
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    // RFC 9113 §3.2.1: connection-specific, meaningless beyond this hop.
    "http2-settings",
];

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    pub auth: Authenticator,
    pub engine: PolicyEngine,
    pub auditor: Auditor,
    pub metrics: Metrics,
    routes: RouteTable,
    mode: Mode,
    upstream: Upstream,
    trusted_proxies: Vec<IpNet>,
    limits: Limits,
    pool: Arc<Pool>,
    draining: AtomicBool,
}

impl Gateway {
    pub fn new(
        config: &Config,
        auth: Authenticator,
        engine: PolicyEngine,
        auditor: Auditor,
        metrics: Metrics,
    ) -> Result<Self, crate::tls::TlsError> {
        // `https` (with the CA and client certificate configured) when the upstream says so;
        // an `http` upstream never sees TLS and needs no roots.
        let tls = if config.upstream.scheme == http::uri::Scheme::HTTPS {
            Some(crate::tls::client_config(&config.upstream_tls)?)
        } else {
            None
        };
        let pool = Pool::new(&config.upstream, tls, &config.limits)?;
        pool.spawn_reaper();
        Ok(Self {
            auth,
            engine,
            auditor,
            metrics,
            routes: config.routes.clone(),
            mode: config.mode,
            upstream: config.upstream.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            limits: config.limits.clone(),
            pool,
            draining: AtomicBool::new(false),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Marks the process as shutting down (`/readyz` answers 503 from now on).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Acquire) && self.auth.is_ready() && self.auditor.is_healthy()
    }

    /// Handles one request end to end.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<ProxyBody>, Infallible> {
        self.metrics.in_flight().inc();
        let started = Instant::now();
        let decision_id = uuid::Uuid::now_v7().to_string();
        let mut guard = AuditGuard {
            draining: &self.draining,
            // The record's place in the audit queue, reserved before anything else happens.
            slot: self.auditor.admit().ok(),
            auditor: &self.auditor,
            metrics: &self.metrics,
            started,
            record: Some(DecisionRecord {
                at: Some(std::time::SystemTime::now()),
                decision_id,
                decision: "deny".into(),
                mode: self.mode.as_str().into(),
                method: method_name(req.method()),
                path: req.uri().path().into(),
                client_ip: peer.ip().to_string(),
                // Until the request ends otherwise: the client went away.
                status: 499,
                reason: Some("client_closed".into()),
                ..DecisionRecord::default()
            }),
        };
        let resp = self.pipeline(req, peer, &mut guard).await;
        self.metrics.in_flight().dec();
        Ok(resp)
    }

    async fn pipeline(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        guard: &mut AuditGuard<'_>,
    ) -> Response<ProxyBody> {
        let decision_id = guard.decision_id().to_owned();
        let refuse = |guard: &mut AuditGuard<'_>, r: Refusal| -> Response<ProxyBody> {
            let resp: Response<ProxyBody> = r.response(&decision_id).map(Either::Right);
            guard.finish(resp.status().as_u16(), Some(r.reason().into()));
            resp
        };

        if guard.slot.is_none() {
            // The audit trail cannot make this request's record durable: refuse it rather
            // than let it through unaudited. The refusal itself is recorded.
            let auditor = guard.auditor;
            guard.slot = Some(auditor.admit_refusal().await);
            return refuse(guard, Refusal::AuditUnavailable);
        }
        if header_bytes(req.headers()) > self.limits.max_header_bytes
            || req.headers().len() > MAX_HEADER_FIELDS
        {
            return refuse(guard, Refusal::HeadersTooLarge);
        }
        if let Err(code) = head_rules(&req) {
            // The body, if any, is not read: the connection cannot carry another request.
            let mut resp = refuse(guard, Refusal::BadRequest(code));
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
        let path = match check_target(req.uri()) {
            Ok(p) => p.to_owned(),
            Err(e) => return refuse(guard, Refusal::BadPath(e)),
        };
        let break_glass = match break_glass_reason(req.headers()) {
            Ok(r) => r,
            Err(code) => return refuse(guard, Refusal::BadRequest(code)),
        };
        if let Some(rec) = guard.record.as_mut() {
            rec.break_glass = break_glass.is_some();
            rec.break_glass_reason = break_glass.clone();
        }

        let principal = match self
            .auth
            .authenticate(req.headers(), req.uri().query())
            .await
        {
            Ok(p) => p,
            Err(e) => return refuse(guard, Refusal::Auth(e)),
        };
        let snap = self.engine.snapshot();
        if let Some(rec) = guard.record.as_mut() {
            rec.roles = principal.roles.clone();
            rec.mfa = principal.mfa;
            rec.policy_version = Some(snap.version.clone());
        }
        let Some(route) = self.routes.find(req.method(), &path) else {
            if let Some(rec) = guard.record.as_mut() {
                rec.principal = Some(crate::policy::principal_display(&snap, &principal.subject));
            }
            return refuse(guard, Refusal::NoRoute);
        };

        let facts = RequestFacts {
            method: req.method().as_str(),
            path: &path,
            client_ip: peer.ip(),
            break_glass_reason: break_glass.as_deref(),
        };
        let decision = self
            .engine
            .decide_cached(&snap, &principal, &route, &facts)
            .await;
        self.metrics.decision_time(started_secs(guard.started));
        if let Some(rec) = guard.record.as_mut() {
            rec.principal = Some(decision.principal.clone());
            rec.action = Some(decision.action.clone());
            rec.resource = Some(decision.resource.clone());
            rec.policies = decision.policies.clone();
            rec.errors = decision.errors.clone();
            rec.decision = if decision.allowed() { "allow" } else { "deny" }.into();
            if let Some(cand) = decision
                .candidate_allowed
                .filter(|c| *c != decision.allowed())
            {
                rec.candidate_decision = Some(if cand { "allow" } else { "deny" }.into());
                self.metrics.candidate_disagreement(route.action, cand);
            }
        }
        if !decision.errors.is_empty() {
            tracing::warn!(decision_id = %decision_id, errors = ?decision.errors, "authorization errors; denied");
        }
        if let Some(reason) = decision.deny {
            if self.mode == Mode::Enforce {
                return refuse(guard, Refusal::Denied(reason));
            }
            // Shadow: the deny is recorded, the request still goes through.
            if let Some(rec) = guard.record.as_mut() {
                rec.reason = Some(reason.as_str().into());
            }
        } else if let Some(rec) = guard.record.as_mut() {
            rec.reason = None;
        }

        let shadow_reason = guard.record.as_ref().and_then(|r| r.reason.clone());
        let upstream_req = self.upstream_request(
            req,
            peer.ip(),
            &principal.subject,
            &principal.roles,
            &decision_id,
        );
        let sent = Instant::now();
        let result =
            tokio::time::timeout(self.limits.upstream_timeout, self.pool.send(upstream_req)).await;
        let refusal = match result {
            Ok(Ok(mut resp)) => {
                let status = resp.status().as_u16();
                self.metrics.upstream_time(status, started_secs(sent));
                strip_hop_by_hop(resp.headers_mut());
                guard.finish(status, shadow_reason);
                return resp.map(Either::Left);
            }
            Ok(Err(e)) => {
                tracing::warn!(decision_id = %decision_id, error = %e, "upstream request failed");
                Refusal::UpstreamUnavailable
            }
            Err(_) => Refusal::UpstreamTimeout,
        };
        self.metrics
            .upstream_time(refusal.status().as_u16(), started_secs(sent));
        // The decision stands (allow, or shadow's deny); the status says what went wrong.
        let resp: Response<ProxyBody> = refusal.response(&decision_id).map(Either::Right);
        guard.finish(
            resp.status().as_u16(),
            Some(shadow_reason.unwrap_or_else(|| refusal.reason().into())),
        );
        resp
    }

    /// A message hyper refused before it became a request (bad framing, bad header syntax, a
    /// head over hyper's hard cap) was answered 400 or 431 by hyper; it still gets its one
    /// audit record. An HTTP/2 preface, a timeout or a hang-up got no answer and is not a request.
    fn audit_unparsed(&self, e: &hyper::Error, peer: SocketAddr) {
        if !e.is_parse() || e.is_parse_version_h2() {
            return;
        }
        let (status, reason) = if e.is_parse_too_large() {
            (431, "headers_too_large")
        } else {
            (400, "bad_request: unparseable")
        };
        let rec = DecisionRecord {
            at: Some(std::time::SystemTime::now()),
            decision_id: uuid::Uuid::now_v7().to_string(),
            decision: "deny".into(),
            mode: self.mode.as_str().into(),
            client_ip: peer.ip().to_string(),
            status,
            reason: Some(reason.into()),
            ..DecisionRecord::default()
        };
        self.metrics.request("deny", reason);
        self.auditor.record(None, rec);
    }

    /// Rewrites the request for the upstream: same method, path and query, body streamed;
    /// hop-by-hop and client-sent `X-Wardgate-*` headers removed; identity headers set.
    fn upstream_request(
        &self,
        req: Request<Incoming>,
        client_ip: IpAddr,
        subject: &str,
        roles: &[String],
        decision_id: &str,
    ) -> Request<Incoming> {
        let (mut parts, body) = req.into_parts();
        // Origin form (`/path?query`), as HTTP/1.1 sends it to an origin server; a client's
        // absolute form loses its scheme and authority here.
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            let mut uri = http::uri::Parts::default();
            uri.path_and_query = parts.uri.path_and_query().cloned();
            if let Ok(u) = http::Uri::from_parts(uri) {
                parts.uri = u;
            }
        }
        // A proxy sends its own HTTP version (RFC 9110 §6.2).
        parts.version = http::Version::HTTP_11;
        let h = &mut parts.headers;
        strip_hop_by_hop(h);
        let trusted = self.trusted_proxies.iter().any(|n| n.contains(&client_ip));
        strip_identity(h, trusted);
        if !h.contains_key(http::header::HOST) {
            // An HTTP/1.0 client needs no Host (and `Connection: host` removes one); HTTP/1.1
            // to the upstream needs it. The config refuses credentials in `upstream`, so the
            // authority is host and port.
            if let Ok(v) = HeaderValue::from_str(self.upstream.authority.as_str()) {
                h.insert(http::header::HOST, v);
            }
        }
        // The token rules keep control characters out of both; UTF-8 goes through as is.
        if let Ok(v) = HeaderValue::from_bytes(subject.as_bytes()) {
            h.insert("x-wardgate-subject", v);
        }
        if let Ok(v) = HeaderValue::from_bytes(roles.join(",").as_bytes()) {
            h.insert("x-wardgate-roles", v);
        }
        if let Ok(v) = HeaderValue::from_str(decision_id) {
            h.insert("x-wardgate-decision-id", v);
        }
        let forwarded = if trusted {
            let prior: Vec<&str> = h
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if prior.is_empty() {
                client_ip.to_string()
            } else {
                format!("{}, {client_ip}", prior.join(", "))
            }
        } else {
            client_ip.to_string()
        };
        if let Ok(v) = HeaderValue::from_str(&forwarded) {
            h.insert("x-forwarded-for", v);
        }
        Request::from_parts(parts, body)
    }
}

/// The method's name, without a copy for the standard ones.
fn method_name(m: &http::Method) -> Cow<'static, str> {
    use http::Method;
    let known: &'static str = match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => return Cow::Owned(m.as_str().to_owned()),
    };
    Cow::Borrowed(known)
}

fn started_secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// Request-head rules beyond hyper's parser: exactly one `Host` for HTTP/1.1 (RFC 9112 §3.2),
/// no method or URL override header, `Transfer-Encoding` only as one plain `chunked`, no body
/// on GET or HEAD.
fn head_rules<B>(req: &Request<B>) -> Result<(), &'static str> {
    // One pass over the fields (a lookup by name parses and hashes it; a request has few
    // fields), then the rules in their order of precedence.
    let mut hosts = 0usize;
    let mut override_header = false;
    let mut codings = 0usize;
    let mut plain_chunked = false;
    let mut content_length: Option<&HeaderValue> = None;
    for (name, value) in req.headers() {
        match name.as_str() {
            "host" => hosts += 1,
            "transfer-encoding" => {
                codings += 1;
                // hyper reads any coding list that ends in `chunked`; anything but one plain
                // `chunked` is an obfuscation attempt (RFC 9112 §6.1: chunked is never applied
                // twice).
                plain_chunked = codings == 1
                    && value
                        .to_str()
                        .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
            }
            "content-length" => {
                content_length.get_or_insert(value);
            }
            n => override_header |= OVERRIDE_HEADERS.contains(&n),
        }
    }
    if hosts > 1 || (hosts == 0 && req.version() == http::Version::HTTP_11) {
        return Err("bad_request: host");
    }
    if override_header {
        return Err("bad_request: override_header");
    }
    if codings > 0 && !(codings == 1 && plain_chunked) {
        return Err("bad_request: transfer_encoding");
    }
    // A GET or HEAD body has no meaning, and a backend that ignores its framing would read it
    // as the next request.
    if matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
        let has_body = codings > 0 || content_length.is_some_and(|v| v.as_bytes() != b"0");
        if has_body {
            return Err("bad_request: body_not_allowed");
        }
    }
    Ok(())
}

/// Removes every client-sent identity header (and, from an untrusted peer, what it claims
/// about forwarding) before wardgate sets its own.
fn strip_identity(h: &mut HeaderMap, trusted: bool) {
    let gone: Vec<HeaderName> = h
        .keys()
        .filter(|k| {
            let k = k.as_str();
            IDENTITY_HEADERS.contains(&k)
                || IDENTITY_PREFIXES.iter().any(|p| k.starts_with(p))
                || (!trusted
                    && (FORWARDING_HEADERS.contains(&k)
                        || (k.starts_with("x-forwarded-") && k != "x-forwarded-for")))
        })
        .cloned()
        .collect();
    for k in gone {
        h.remove(k);
    }
}

/// The size of the header block as sent: names, values, `: ` and CRLF per field.
fn header_bytes(h: &HeaderMap) -> usize {
    h.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum()
}

/// The `X-Break-Glass` reason: `None` when absent or blank; one header at most, printable
/// text, at most 1 KiB.
fn break_glass_reason(h: &HeaderMap) -> Result<Option<String>, &'static str> {
    let mut all = h.get_all(X_BREAK_GLASS).iter();
    let Some(v) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err("bad_request: duplicate_break_glass");
    }
    let text = v
        .to_str()
        .map_err(|_| "bad_request: break_glass_reason")?
        .trim();
    if text.len() > MAX_BREAK_GLASS_REASON {
        return Err("bad_request: break_glass_reason");
    }
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

/// Removes hop-by-hop headers and every header named in `Connection`, in one pass over the
/// fields rather than a lookup per name (most messages carry none of them).
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let mut gone: Vec<HeaderName> = Vec::new();
    for (name, value) in h.iter() {
        if name == CONNECTION {
            gone.extend(
                value
                    .to_str()
                    .ok()
                    .into_iter()
                    .flat_map(|v| v.split(','))
                    .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
            );
        }
        if HOP_BY_HOP.contains(&name.as_str()) {
            gone.push(name.clone());
        }
    }
    for n in gone {
        h.remove(n);
    }
}

/// Holds the request's audit record and writes it exactly once: when the request finishes,
/// or, if the client goes away first, when the request's future is dropped.
struct AuditGuard<'a> {
    draining: &'a AtomicBool,
    slot: Option<Slot<'a>>,
    auditor: &'a Auditor,
    metrics: &'a Metrics,
    started: Instant,
    record: Option<DecisionRecord>,
}

impl AuditGuard<'_> {
    fn decision_id(&self) -> &str {
        self.record.as_ref().map_or("", |r| r.decision_id.as_str())
    }

    fn finish(&mut self, status: u16, reason: Option<Cow<'static, str>>) {
        if let Some(rec) = self.record.as_mut() {
            rec.status = status;
            rec.reason = reason;
        }
        self.write();
    }

    fn write(&mut self) {
        if let Some(mut rec) = self.record.take() {
            rec.latency_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.metrics
                .request(&rec.decision, rec.reason.as_deref().unwrap_or("allow"));
            self.auditor.record(self.slot.take(), rec);
        }
    }
}

impl Drop for AuditGuard<'_> {
    fn drop(&mut self) {
        if let Some(rec) = self.record.as_mut() {
            self.metrics.in_flight().dec();
            if self.draining.load(Ordering::Acquire) {
                // Cut at the end of the shutdown grace period, not by the client.
                rec.reason = Some("shutdown".into());
            }
        }
        self.write();
    }
}

/// Serves the proxy listener until `shutdown` fires, then drains: open connections finish
/// their in-flight requests within `grace`; any still running after it are cut, which drops
/// their requests' futures and so writes their audit records. Returns when every connection
/// task has ended.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    grace: std::time::Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let limits = gateway.limits().clone();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let gw = gateway.clone();
        let service = hyper::service::service_fn(move |req| {
            let gw = gw.clone();
            async move { gw.handle(req, peer).await }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            // Our own cap (431 with an audit record) is `max_header_bytes`; hyper's hard cap is
            // larger so that an oversized block reaches ours instead of being cut off unaudited.
            // The header read timeout also runs while a keep-alive connection sits idle.
            .max_header_size((limits.max_header_bytes * 4).max(64 * 1024))
            // hyper's read buffer (about 400 KB by default) would otherwise cap the head first.
            .max_buf_size((limits.max_header_bytes * 4).max(64 * 1024))
            .max_headers(4 * MAX_HEADER_FIELDS);
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let handshake_timeout = limits.header_read_timeout;
        let gw = gateway.clone();
        let open = gateway.metrics.connections().clone();
        open.inc();
        conns.spawn(async move {
            // Counted down however the task ends (finished, failed or cut at shutdown).
            struct Open(prometheus::IntGauge);
            impl Drop for Open {
                fn drop(&mut self) {
                    self.0.dec();
                }
            }
            let _open = Open(open);
            let result =
                match tls {
                    None => {
                        let conn =
                            builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                        watcher.watch(conn).await
                    }
                    Some(acceptor) => {
                        // The handshake counts against the header read timeout (slowloris).
                        let stream =
                            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, %peer, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                        let conn =
                            builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                        watcher.watch(conn).await
                    }
                };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
                gw.audit_unparsed(&e, peer);
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            open = conns.len(),
            "grace period over; cutting the remaining connections"
        );
        conns.abort_all();
    }
    while conns.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("close, X-Foo"));
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-bar", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-bar"));
    }

    #[test]
    fn break_glass_reason_rules() {
        let mut h = HeaderMap::new();
        assert_eq!(break_glass_reason(&h), Ok(None));
        h.insert(X_BREAK_GLASS, HeaderValue::from_static("  "));
        assert_eq!(break_glass_reason(&h), Ok(None));
        h.insert(X_BREAK_GLASS, HeaderValue::from_static(" cardiac arrest "));
        assert_eq!(break_glass_reason(&h), Ok(Some("cardiac arrest".into())));
        h.append(X_BREAK_GLASS, HeaderValue::from_static("again"));
        assert!(break_glass_reason(&h).is_err());
    }
}
