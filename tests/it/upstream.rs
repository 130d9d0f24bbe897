//! The upstream connection pool, against a real HTTP/1.1 upstream on a raw socket that counts
//! the connections it accepts and can close them the way real backends do.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::fixture::FixtureBuilder;
use crate::support::*;

/// How the upstream treats a connection after answering.
#[derive(Clone, Copy)]
enum AfterAnswer {
    /// Keep it open for the next request.
    KeepAlive,
    /// Close it (without saying so), as a backend whose keep-alive timeout is short does.
    Close,
}

struct Upstream {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start(after: AfterAnswer) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let (acc, ans) = (accepted.clone(), answered.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                acc.fetch_add(1, Ordering::SeqCst);
                let ans = ans.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // One request head (GETs only: no body to read).
                        let end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        buf.drain(..end);
                        let body = b"{\"ok\":true}";
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        if stream.write_all(head.as_bytes()).await.is_err()
                            || stream.write_all(body).await.is_err()
                        {
                            return;
                        }
                        ans.fetch_add(1, Ordering::SeqCst);
                        if let AfterAnswer::Close = after {
                            return; // dropping the stream closes it
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            accepted,
            answered,
        }
    }

    /// A wardgate in front of this upstream.
    fn fixture(&self) -> FixtureBuilder {
        fixture().set("upstream", format!("http://{}", self.addr))
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_share_one_upstream_connection() {
    let up = Upstream::start(AfterAnswer::KeepAlive).await;
    let fx = up.fixture().start().await;
    let t = token("dr-ada", &["doctor"]);
    for i in 0..20 {
        let resp = fx.get("/patients/p-1", &t).send().await.unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(resp.text().await.unwrap(), "{\"ok\":true}");
    }
    assert_eq!(up.answered(), 20);
    assert_eq!(
        up.accepted(),
        1,
        "one keep-alive connection carries every request"
    );
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_closes_its_connections_costs_no_request() {
    let up = Upstream::start(AfterAnswer::Close).await;
    let fx = up.fixture().start().await;
    let t = token("dr-ada", &["doctor"]);
    for i in 0..10 {
        let resp = fx.get("/patients/p-1", &t).send().await.unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        // Give the close time to arrive, as it does between a client's requests.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(up.answered(), 10);
    assert_eq!(up.accepted(), 10, "a closed connection is never used again");
    let (records, _) = fx.finish().await;
    assert!(records.iter().all(|r| r["status"] == 200), "{records:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_idle_past_the_idle_timeout_are_not_reused() {
    let up = Upstream::start(AfterAnswer::KeepAlive).await;
    let fx = up
        .fixture()
        .set("limits.upstream_idle_timeout_ms", 200)
        .start()
        .await;
    let t = token("dr-ada", &["doctor"]);
    let first = fx.get("/patients/p-1", &t).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let again = fx.get("/patients/p-1", &t).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(up.accepted(), 1, "reused within the idle timeout");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = fx.get("/patients/p-1", &t).send().await.unwrap();
    assert_eq!(later.status(), 200);
    assert_eq!(up.accepted(), 2, "a new connection after the idle timeout");
    fx.finish().await;
}
