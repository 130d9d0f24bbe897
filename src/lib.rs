//! wardgate: an authorization sidecar for clinic records APIs.
//!
//! The modules follow one request through the pipeline: [`routes`] (path rules, route table)
//! → [`auth`] (bearer JWT) → [`policy`] (Cedar) → [`proxy`] (forward or refuse, via
//! [`error`]) → [`audit`] (one chained record). [`config`] and [`app`] build it all;
//! [`admin`] and [`metrics`] let an operator watch it.

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod routes;
pub mod tester;
pub mod tls;
pub mod upstream;

/// Selects rustls' ring provider for every TLS client in the process (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
