//! The integration suite, one binary: wardgate in-process (and as a child process) against real
//! keys, a real JWKS server and a real records backend, everything on `127.0.0.1:0`.
//!
//! Each test checks what a client sees (status, headers, problem+json), what the backend
//! received (or that it received nothing) and the audit record the request left behind.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a failing assertion is how a test reports"
)]

#[path = "../support/mod.rs"]
mod support;

mod admin;
mod attacks;
mod audit;
mod audit_http;
mod audit_syslog;
mod auth;
mod cli;
mod jwks;
mod oidc;
mod operations;
mod policy;
mod proxy;
mod reload;
mod routing;
mod streaming;
mod tls;
mod tooling;
mod upstream;
