//! Bodies stream through: the real binary (`wardgate run`) forwards a 10 MB chunked upload
//! without holding it in memory, and the backend gets every byte.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::process::spawn_wardgate;
use crate::support::raw::read_response;
use crate::support::*;

/// VmHWM (peak resident set) of `pid`, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM line")
}

/// Deterministic, incompressible-looking bytes.
fn block(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// POSTs `total` bytes as a chunked body of 64 KiB chunks; returns (status, SHA-256 sent).
async fn upload(proxy: SocketAddr, token: &str, total: usize) -> (u16, String) {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    let head = format!(
        "POST /patients/p-1/notes HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    let mut hasher = Sha256::new();
    let mut sent = 0usize;
    let mut seed = 1u64;
    while sent < total {
        let len = (total - sent).min(64 * 1024);
        let data = block(seed, len);
        seed += 1;
        hasher.update(&data);
        stream
            .write_all(format!("{len:x}\r\n").as_bytes())
            .await
            .expect("write chunk size");
        stream.write_all(&data).await.expect("write chunk");
        stream.write_all(b"\r\n").await.expect("write chunk end");
        sent += len;
    }
    stream
        .write_all(b"0\r\n\r\n")
        .await
        .expect("write last chunk");
    let resp = tokio::time::timeout(Duration::from_secs(60), read_response(&mut stream, false))
        .await
        .expect("upload response within 60 s");
    (resp.status, hex::encode(hasher.finalize()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mb_upload_streams_through_the_binary_without_being_buffered() {
    const TEN_MB: usize = 10 * 1024 * 1024;
    let p = fixture().prepare().await;
    let (mut wardgate, proxy, admin) = spawn_wardgate(&p.config_path);
    let client = fixture::client();
    let ready = eventually(Duration::from_secs(10), || async {
        matches!(client.get(format!("http://{admin}/readyz")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(ready, "/readyz never 200; stderr:\n{}", wardgate.log());

    let token = token_amr("dr-ada", &["doctor"], &["pwd", "otp"]);
    // Warm up every buffer and pool on the path with 1 MB first.
    let (status, _) = upload(proxy, &token, 1024 * 1024).await;
    assert_eq!(status, 200, "warm-up upload; stderr:\n{}", wardgate.log());
    let before = vm_hwm_kib(wardgate.pid());

    let (status, sent_sha) = upload(proxy, &token, TEN_MB).await;
    assert_eq!(status, 200, "10 MB upload; stderr:\n{}", wardgate.log());
    let after = vm_hwm_kib(wardgate.pid());
    let grown_kib = after.saturating_sub(before);
    eprintln!("wardgate VmHWM before the 10 MB upload {before} KiB, after {after} KiB");
    assert!(
        grown_kib < 6 * 1024,
        "peak RSS grew by {grown_kib} KiB ({before} → {after}) for a 10 MB upload: the body was buffered"
    );

    let got = p.backend.forwarded();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].body_len, TEN_MB as u64, "the backend got every byte");
    assert_eq!(got[1].body_sha256, sent_sha, "and the same bytes");

    // SIGTERM stops it, and the audit records are on disk when it has gone.
    let pid = wardgate.pid();
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let mut child = wardgate.child.take().expect("child");
    let mut exited = None;
    for _ in 0..200 {
        if let Some(s) = child.try_wait().expect("try_wait") {
            exited = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some(status) = exited else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "wardgate did not stop within 10 s of SIGTERM; stderr:\n{}",
            wardgate.log()
        );
    };
    assert!(
        status.success(),
        "exit after SIGTERM: {status:?}; stderr:\n{}",
        wardgate.log()
    );
    let records = read_audit(&p.audit_path);
    assert_eq!(records.len(), 2, "{records:#?}");
    assert!(records
        .iter()
        .all(|r| r["decision"] == "allow" && r["status"] == 200));
}
