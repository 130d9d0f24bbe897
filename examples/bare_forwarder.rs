//! A forwarder with nothing of wardgate's work in it, for `bench/run.sh`: it tells how much of
//! wardgate's cost per request is the forwarding path itself (hyper server, upstream
//! connections, tokio) and how much is authorization and audit.
//!
//! `bare_forwarder LISTEN UPSTREAM [pool|legacy]`: `pool` forwards through wardgate's own
//! upstream pool (`wardgate::upstream`), `legacy` through hyper-util's legacy `Client`, the
//! textbook forwarder of the shared performance notes. Same runtime choice as `wardgate run`.
#![allow(
    clippy::expect_used,
    reason = "a benchmark tool whose set-up fails should stop loudly"
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

fn main() {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .expect("LISTEN")
        .parse()
        .expect("LISTEN is IP:PORT");
    let upstream: Uri = format!("http://{}", args.next().expect("UPSTREAM"))
        .parse()
        .expect("UPSTREAM is HOST:PORT");
    let legacy = args.next().as_deref() == Some("legacy");
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let rt = if cpus > 1 {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .expect("runtime");
    rt.block_on(serve(listen, upstream, legacy));
}

async fn serve(listen: SocketAddr, upstream: Uri, legacy: bool) {
    let target = wardgate::config::Upstream {
        scheme: http::uri::Scheme::HTTP,
        authority: upstream.authority().cloned().expect("authority"),
    };
    let limits = wardgate::config::Limits {
        max_header_bytes: 16 * 1024,
        header_read_timeout: Duration::from_secs(10),
        upstream_connect_timeout: Duration::from_secs(2),
        upstream_timeout: Duration::from_secs(30),
        upstream_idle_timeout: Duration::from_secs(90),
        token_cache_entries: 0,
        entity_cache_entries: 0,
        entity_cache_ttl: Duration::ZERO,
        entity_fetch_timeout: Duration::ZERO,
        shutdown_grace: Duration::ZERO,
        decision_cache_entries: 0,
    };
    let pool = wardgate::upstream::Pool::new(&target, None, &limits).expect("pool");
    let client: Client<_, Incoming> =
        Client::builder(TokioExecutor::new()).build_http::<Incoming>();
    let client = Arc::new(client);
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (pool, client, upstream) = (pool.clone(), client.clone(), upstream.clone());
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let (pool, client, upstream) = (pool.clone(), client.clone(), upstream.clone());
            async move {
                let resp = if legacy {
                    let mut parts = upstream.into_parts();
                    parts.path_and_query = req.uri().path_and_query().cloned();
                    *req.uri_mut() = Uri::from_parts(parts).expect("uri");
                    client
                        .request(req)
                        .await
                        .map(|r| r.map(|b| Either::Left(Either::Left(b))))
                        .ok()
                } else {
                    pool.send(req)
                        .await
                        .map(|r| r.map(|b| Either::Left(Either::Right(b))))
                        .ok()
                };
                Ok::<_, Infallible>(resp.unwrap_or_else(|| {
                    let mut r = Response::new(Either::Right(Empty::<Bytes>::new()));
                    *r.status_mut() = http::StatusCode::BAD_GATEWAY;
                    r
                }))
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
