//! Wiring: builds the components from a [`Config`], binds the listeners, and runs the life of
//! the process — ready → serve → signal → drain (bounded) → flush the audit trail → exit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::Auditor;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::{EntityResolver, PolicyEngine};
use crate::proxy::Gateway;

/// How long in-flight requests may take to finish once shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// A started wardgate.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    stop: watch::Sender<bool>,
    graceful: Arc<GracefulShutdown>,
    tasks: Vec<JoinHandle<()>>,
}

/// Builds every component and starts serving. Invalid policies, an unreadable key file or an
/// unbindable address are errors; an unreachable `jwks_url` is not (`/readyz` waits for it).
pub async fn start(config: Config) -> anyhow::Result<Running> {
    crate::install_crypto_provider();
    let metrics = Metrics::new();
    let resolver = EntityResolver::from_config(&config, &metrics).context("entities_url client")?;
    let fingerprint = crate::policy::reload::fingerprint(&config.policies);
    let (engine, warnings) = PolicyEngine::new(
        config.policies.clone(),
        config.routes.clone(),
        resolver,
        metrics.clone(),
    )?;
    for w in &warnings {
        tracing::warn!("{}", w.text);
    }
    let snap = engine.snapshot();
    tracing::info!(version = %snap.version, policies = snap.policy_count, "policy set loaded");
    let auth = Authenticator::new(
        &config.jwt,
        config.limits.token_cache_entries,
        metrics.clone(),
    )?;
    auth.start().await?;
    let auditor = Auditor::start(&config.audit, metrics.clone())?;

    let proxy = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on `{}` (listen)", config.listen))?;
    let admin = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot listen on `{}` (admin_listen)", config.admin_listen))?;
    let proxy_addr = proxy.local_addr()?;
    let admin_addr = admin.local_addr()?;

    let gateway = Arc::new(Gateway::new(&config, auth, engine, auditor, metrics));
    let (stop, stopped) = watch::channel(false);
    let graceful = Arc::new(GracefulShutdown::new());
    let tasks = vec![
        tokio::spawn(crate::proxy::serve(
            gateway.clone(),
            proxy,
            graceful.clone(),
            stopped.clone(),
        )),
        tokio::spawn(crate::admin::serve(gateway.clone(), admin, stopped.clone())),
        tokio::spawn(crate::policy::reload::watch(
            gateway.clone(),
            config.policies.clone(),
            fingerprint,
            stopped,
        )),
    ];
    Ok(Running {
        proxy_addr,
        admin_addr,
        gateway,
        stop,
        graceful,
        tasks,
    })
}

impl Running {
    /// Stops accepting, lets in-flight requests finish within [`SHUTDOWN_GRACE`], and returns
    /// once every audit record is written.
    pub async fn shutdown(self) {
        self.shutdown_within(SHUTDOWN_GRACE).await;
    }

    pub async fn shutdown_within(self, grace: Duration) {
        self.gateway.start_draining();
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        // Every connection holds a clone of the watcher; the proxy loop has dropped its own.
        match Arc::try_unwrap(self.graceful) {
            Ok(g) => {
                if tokio::time::timeout(grace, g.shutdown()).await.is_err() {
                    tracing::warn!(?grace, "grace period over; closing remaining connections");
                }
            }
            Err(_) => tracing::warn!("connections still tracked elsewhere; not waiting for them"),
        }
        self.gateway.auditor.flush().await;
    }
}

/// `wardgate run`: start, report readiness, reload on SIGHUP, stop on SIGTERM or ctrl-c.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    tracing::info!(
        "wardgate ready: proxy http://{} admin http://{}",
        running.proxy_addr,
        running.admin_addr
    );
    wait_for_stop(&running).await?;
    tracing::info!("shutting down");
    running.shutdown().await;
    tracing::info!("stopped; audit trail flushed");
    Ok(())
}

#[cfg(unix)]
async fn wait_for_stop(running: &Running) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = hup.recv() => crate::policy::reload::reload(&running.gateway, "SIGHUP").await,
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_stop(_running: &Running) -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await?;
    Ok(())
}
