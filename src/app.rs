//! Wiring: builds the components from a [`Config`], binds the listeners, and runs the life of
//! the process — ready → serve → signal → drain (bounded) → flush the audit trail → exit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::Auditor;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::{EntityResolver, PolicyEngine};
use crate::proxy::Gateway;

/// A started wardgate.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    grace: Duration,
    stop_proxy: watch::Sender<bool>,
    proxy_task: JoinHandle<()>,
    stop_rest: watch::Sender<bool>,
    other_tasks: Vec<JoinHandle<()>>,
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
    // A cached decision is as fresh as the entities it was made with.
    let decision_ttl = if config.entities_url.is_some() {
        config.limits.entity_cache_ttl
    } else {
        Duration::from_secs(60)
    };
    let engine = engine.with_decision_cache(config.limits.decision_cache_entries, decision_ttl);
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

    let gateway = Arc::new(Gateway::new(&config, auth, engine, auditor, metrics)?);
    let cert = match &config.tls {
        Some(t) => Some(crate::tls::ReloadingCert::load(&t.cert_file, &t.key_file)?),
        None => None,
    };
    let acceptor = cert
        .clone()
        .map(|c| tokio_rustls::TlsAcceptor::from(crate::tls::server_config(c)));
    let grace = config.limits.shutdown_grace;
    let (stop_proxy, proxy_stopped) = watch::channel(false);
    let (stop_rest, rest_stopped) = watch::channel(false);
    let proxy_task = tokio::spawn(crate::proxy::serve(
        gateway.clone(),
        proxy,
        proxy_stopped,
        grace,
        acceptor,
    ));
    let mut other_tasks = vec![
        tokio::spawn(crate::admin::serve(
            gateway.clone(),
            admin,
            rest_stopped.clone(),
        )),
        tokio::spawn(crate::policy::reload::watch(
            gateway.clone(),
            config.policies.clone(),
            fingerprint,
            rest_stopped.clone(),
        )),
    ];
    if let Some(cert) = cert {
        other_tasks.push(tokio::spawn(cert.watch(rest_stopped)));
    }
    Ok(Running {
        proxy_addr,
        admin_addr,
        gateway,
        grace,
        stop_proxy,
        proxy_task,
        stop_rest,
        other_tasks,
    })
}

impl Running {
    /// Shuts down: `/readyz` turns 503 at once (the admin listener keeps answering), the proxy
    /// stops accepting, in-flight requests finish within `limits.shutdown_grace_ms` (the rest
    /// are cut and still audited), every audit record is written, then the admin listener and
    /// the policy watcher stop.
    pub async fn shutdown(self) {
        self.gateway.start_draining();
        let _ = self.stop_proxy.send(true);
        if self.proxy_task.await.is_err() {
            tracing::error!("proxy listener task failed during shutdown");
        }
        // Every record durable; spooled sinks deliver what they can within
        // `audit.drain_timeout_ms` (the rest waits in their spools for the next start).
        self.gateway.auditor.shutdown().await;
        let _ = self.stop_rest.send(true);
        for t in self.other_tasks {
            let _ = t.await;
        }
    }

    /// The grace period in-flight requests get at shutdown.
    pub fn grace(&self) -> Duration {
        self.grace
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
