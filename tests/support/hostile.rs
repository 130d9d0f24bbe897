//! Pieces for hostile clients: a raw send that tolerates a server closing without an answer, a
//! held-open raw connection for pipelining and dripping, and the issuer's RSA public key in
//! every encoding a key-confusion attack would try as an HMAC secret.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::keys::keys;
use super::raw::{read_response, RawResponse};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Sends `bytes` on a fresh connection and reads one response; `None` when the server closes
/// the connection without answering.
pub async fn try_send(addr: SocketAddr, bytes: &[u8]) -> Option<RawResponse> {
    let stream = TcpStream::connect(addr).await.expect("connect to proxy");
    let (mut rd, mut wr) = stream.into_split();
    // Write and read at once: a server that answers early (431) is heard before it closes.
    let bytes = bytes.to_vec();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&bytes).await;
        let _ = wr.flush().await;
        wr
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_done = |b: &[u8]| b.windows(4).any(|w| w == b"\r\n\r\n");
    loop {
        match tokio::time::timeout(TIMEOUT, rd.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                if head_done(&buf) && body_complete(&buf) {
                    break;
                }
            }
            Err(_) => panic!("no answer and no close within 20 s"),
        }
    }
    let _ = writer.await;
    if !head_done(&buf) {
        return None;
    }
    Some(parse_response(&buf))
}

/// The response in `buf` is complete (by `Content-Length`, or no body to wait for).
fn body_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match len {
        Some(n) => buf.len() >= end + 4 + n,
        // Chunked or close-delimited: read to the close.
        None => false,
    }
}

/// Parses one complete response (head and `Content-Length` body).
fn parse_response(buf: &[u8]) -> RawResponse {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(buf.len() - end - 4);
    let body = buf[end + 4..(end + 4 + len).min(buf.len())].to_vec();
    RawResponse {
        status,
        headers,
        body,
    }
}

/// One raw connection held open.
pub struct Conn {
    pub stream: TcpStream,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        Conn {
            stream: TcpStream::connect(addr).await.expect("connect to proxy"),
        }
    }

    /// Writes, ignoring errors (the server may already have answered and closed).
    pub async fn write(&mut self, bytes: &[u8]) -> bool {
        let ok = self.stream.write_all(bytes).await.is_ok();
        ok && self.stream.flush().await.is_ok()
    }

    /// The next response, or `None` when the connection ends before a response head.
    pub async fn try_read_response(&mut self, head: bool) -> Option<RawResponse> {
        // read_response panics on a close before a head: peek first so a plain close is `None`.
        let mut probe = [0u8; 1];
        let n = tokio::time::timeout(TIMEOUT, self.stream.peek(&mut probe))
            .await
            .expect("no answer and no close within 20 s")
            .unwrap_or(0);
        if n == 0 {
            return None;
        }
        Some(
            tokio::time::timeout(TIMEOUT, read_response(&mut self.stream, head))
                .await
                .expect("response within 20 s"),
        )
    }

    /// True once the server has closed the connection (a read gives EOF or an error) within
    /// `wait`; any bytes read before the close are returned in the error case.
    pub async fn closed_within(&mut self, wait: Duration) -> Result<Vec<u8>, Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(got),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => return Err(got),
            }
        }
    }
}

/// The issuer's RSA public key as the secrets an RS256→HS256 confusion attack tries: PKCS#1 and
/// SPKI PEM (with and without the final newline), PKCS#1 and SPKI DER, the raw modulus.
pub fn rsa_public_key_encodings() -> Vec<(&'static str, Vec<u8>)> {
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    let k = keys();
    let public = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(&k.rsa_n),
        rsa::BigUint::from_bytes_be(&k.rsa_e),
    )
    .expect("rsa public key");
    let pkcs1_pem = public
        .to_pkcs1_pem(LineEnding::LF)
        .expect("pkcs1 pem")
        .into_bytes();
    let spki_pem = public
        .to_public_key_pem(LineEnding::LF)
        .expect("spki pem")
        .into_bytes();
    let trim = |mut v: Vec<u8>| {
        while v.last() == Some(&b'\n') {
            v.pop();
        }
        v
    };
    vec![
        ("PKCS#1 PEM", pkcs1_pem.clone()),
        ("PKCS#1 PEM without the last newline", trim(pkcs1_pem)),
        ("SPKI PEM", spki_pem.clone()),
        ("SPKI PEM without the last newline", trim(spki_pem)),
        (
            "PKCS#1 DER",
            public
                .to_pkcs1_der()
                .expect("pkcs1 der")
                .as_bytes()
                .to_vec(),
        ),
        (
            "SPKI DER",
            public
                .to_public_key_der()
                .expect("spki der")
                .as_bytes()
                .to_vec(),
        ),
        ("raw modulus", k.rsa_n.clone()),
    ]
}
