//! A log collector for the `http` audit sink: a hyper server on `127.0.0.1:0` that takes
//! NDJSON `POST`s (gzip'd or not) and keeps every line and every request's headers. It can be
//! stopped (port closed, connections cut) and restarted on the same port to play an outage.

use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::Value;

use super::servers::{Handler, HttpServer};

/// One `POST` as the collector received it.
#[derive(Debug, Clone)]
pub struct Post {
    pub headers: http::HeaderMap,
    pub lines: Vec<String>,
}

pub struct Collector {
    pub server: HttpServer,
    posts: Arc<Mutex<Vec<Post>>>,
}

impl Collector {
    pub async fn start() -> Collector {
        let posts = Arc::new(Mutex::new(Vec::new()));
        let p = posts.clone();
        let handler: Handler = Arc::new(move |req: Request<Incoming>| {
            let p = p.clone();
            Box::pin(async move { ingest(req, p).await })
        });
        Collector {
            server: HttpServer::bind(handler).await,
            posts,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/ingest", self.server.addr)
    }

    pub fn stop(&self) {
        self.server.stop();
    }

    pub async fn restart(&self) {
        self.server.restart().await;
    }

    pub fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }

    /// Every line received, in arrival order (duplicates included).
    pub fn lines(&self) -> Vec<String> {
        self.posts().into_iter().flat_map(|p| p.lines).collect()
    }
}

async fn ingest(req: Request<Incoming>, posts: Arc<Mutex<Vec<Post>>>) -> Response<Full<Bytes>> {
    let reply = |status: u16| {
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    if req.method() != http::Method::POST || req.uri().path() != "/ingest" {
        return reply(404);
    }
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await else {
        return reply(400);
    };
    let mut bytes = body.to_bytes().to_vec();
    if parts
        .headers
        .get("content-encoding")
        .is_some_and(|v| v == "gzip")
    {
        let mut plain = Vec::new();
        if flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut plain)
            .is_err()
        {
            return reply(400);
        }
        bytes = plain;
    }
    let Ok(text) = String::from_utf8(bytes) else {
        return reply(400);
    };
    if !text.ends_with('\n') {
        return reply(400);
    }
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if lines
        .iter()
        .any(|l| serde_json::from_str::<Value>(l).is_err())
    {
        return reply(400);
    }
    posts.lock().unwrap().push(Post {
        headers: parts.headers,
        lines,
    });
    reply(204)
}
