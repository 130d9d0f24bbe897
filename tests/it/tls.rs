//! TLS: HTTPS on `listen` with a test CA, the certificate reloaded when its files change, and an
//! HTTPS upstream trusted through `upstream_tls.ca_file`, with and without a client certificate.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;

use crate::support::fixture::Fixture;
use crate::support::pki::{client_trusting, Ca};
use crate::support::*;

fn https_client(ca: &Ca) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .use_preconfigured_tls(client_trusting(ca))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_serves_with_the_configured_certificate_and_reloads_it() {
    let ca1 = Ca::new("ca-one");
    let leaf1 = ca1.leaf("wardgate");
    let fx = fixture()
        .file("certs/tls.crt", &leaf1.cert_pem)
        .file("certs/tls.key", &leaf1.key_pem)
        .set(
            "tls",
            json!({"cert_file": "certs/tls.crt", "key_file": "certs/tls.key"}),
        )
        .start()
        .await;
    let url = format!("https://127.0.0.1:{}/patients/p-1", fx.proxy.port());
    let t = token("dr-ada", &["doctor"]);
    let resp = https_client(&ca1)
        .get(&url)
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(fx.backend().forwarded().len(), 1);

    // Plain HTTP on the TLS port gets nothing forwarded.
    let plain = fx
        .client
        .get(fx.url("/patients/p-1"))
        .bearer_auth(&t)
        .send()
        .await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));

    // Rotate to a certificate from another CA: new handshakes present it, without a restart.
    let ca2 = Ca::new("ca-two");
    let leaf2 = ca2.leaf("wardgate");
    let dir = fx.prepared.dir.path().join("certs");
    std::fs::write(dir.join("tls.key.new"), &leaf2.key_pem).unwrap();
    std::fs::write(dir.join("tls.crt.new"), &leaf2.cert_pem).unwrap();
    std::fs::rename(dir.join("tls.key.new"), dir.join("tls.key")).unwrap();
    std::fs::rename(dir.join("tls.crt.new"), dir.join("tls.crt")).unwrap();
    let rotated = eventually(Duration::from_secs(6), || async {
        matches!(https_client(&ca2).get(&url).bearer_auth(&t).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(rotated, "the new certificate was not served within 6 s");
    assert!(
        https_client(&ca1)
            .get(&url)
            .bearer_auth(&t)
            .send()
            .await
            .is_err(),
        "the old certificate is no longer presented"
    );
    let (records, _) = fx.finish().await;
    assert!(records.iter().filter(|r| r["status"] == 200).count() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_certificate_stops_start_up_naming_the_file() {
    let p = fixture()
        .set(
            "tls",
            json!({"cert_file": "certs/none.crt", "key_file": "certs/none.key"}),
        )
        .prepare()
        .await;
    let config = wardgate::config::Config::load(&p.config_path).unwrap();
    let err = match wardgate::app::start(config).await {
        Ok(_) => panic!("started without its certificate"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("none.crt"), "{err}");
}

/// An HTTPS records backend; with `client_ca`, it demands a client certificate from that CA.
async fn tls_backend(ca: &Ca, client_ca: Option<&Ca>) -> (SocketAddr, Arc<AtomicUsize>) {
    let leaf = ca.leaf("backend");
    let certs =
        vec![rustls::pki_types::CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        Some(cca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(cca.der()).unwrap();
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .unwrap(),
            )
        }
        None => builder.with_no_client_auth(),
    };
    let cfg = Arc::new(builder.with_single_cert(certs, key).unwrap());
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |_req| {
                    count.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                            b"{}",
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, served)
}

use rustls::pki_types::pem::PemObject;

/// wardgate in front of the HTTPS backend at `addr`, with `files` written beside its config and
/// `upstream_tls` as given.
async fn behind_https(
    addr: SocketAddr,
    files: &[(&str, &str)],
    upstream_tls: serde_json::Value,
) -> Fixture {
    let mut b = fixture()
        .set("upstream", format!("https://127.0.0.1:{}", addr.port()))
        .set("upstream_tls", upstream_tls);
    for (name, text) in files {
        b = b.file(name, text);
    }
    b.start().await
}

/// The status dr-ada gets for `GET /patients/p-1`.
async fn doctor_status(fx: &Fixture) -> u16 {
    let resp = fx
        .get("/patients/p-1", &token("dr-ada", &["doctor"]))
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_trusted_through_the_configured_ca() {
    let ca = Ca::new("backend-ca");
    let (addr, served) = tls_backend(&ca, None).await;
    let fx = behind_https(
        addr,
        &[("certs/backend-ca.pem", &ca.pem())],
        json!({"ca_file": "certs/backend-ca.pem"}),
    )
    .await;
    assert_eq!(doctor_status(&fx).await, 200);
    assert_eq!(served.load(Ordering::SeqCst), 1);
    fx.finish().await;

    // Trusting another CA, the same upstream is refused: 502, nothing served.
    let other = Ca::new("someone-else");
    let fx = behind_https(
        addr,
        &[("certs/other-ca.pem", &other.pem())],
        json!({"ca_file": "certs/other-ca.pem"}),
    )
    .await;
    assert_eq!(doctor_status(&fx).await, 502);
    assert_eq!(served.load(Ordering::SeqCst), 1);
    let (records, _) = fx.finish().await;
    assert_eq!(records.last().unwrap()["status"], 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_presented_to_an_upstream_that_demands_one() {
    let ca = Ca::new("backend-ca");
    let clients = Ca::new("client-ca");
    let (addr, served) = tls_backend(&ca, Some(&clients)).await;
    let me = clients.leaf("wardgate");
    let ca_pem = ca.pem();
    let with_cert = behind_https(
        addr,
        &[
            ("certs/backend-ca.pem", &ca_pem),
            ("certs/client.crt", &me.cert_pem),
            ("certs/client.key", &me.key_pem),
        ],
        json!({"ca_file": "certs/backend-ca.pem", "cert_file": "certs/client.crt", "key_file": "certs/client.key"}),
    )
    .await;
    assert_eq!(doctor_status(&with_cert).await, 200);
    assert_eq!(served.load(Ordering::SeqCst), 1);
    with_cert.finish().await;

    let without = behind_https(
        addr,
        &[("certs/backend-ca.pem", &ca_pem)],
        json!({"ca_file": "certs/backend-ca.pem"}),
    )
    .await;
    assert_eq!(doctor_status(&without).await, 502);
    assert_eq!(served.load(Ordering::SeqCst), 1);
    without.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_on_an_http_upstream_is_a_config_error() {
    let p = fixture()
        .set("upstream_tls", json!({"ca_file": "x.pem"}))
        .prepare()
        .await;
    let err = wardgate::config::Config::load(&p.config_path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`upstream_tls`"), "{err}");
}
