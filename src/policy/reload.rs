//! Live reload: a fingerprint of the policy files (every `*.cedar` in `policies.dir`, the
//! schema, the entities file — size, modification time and inode, read through symlinks, so a
//! Kubernetes ConfigMap's `..data` swap counts as a change) is polled every second; a change
//! reloads the set off the request path. SIGHUP reloads unconditionally (see `app`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::load::cedar_files;
use crate::config::PolicyFiles;
use crate::proxy::Gateway;

/// How often the files are looked at; a change takes effect within this plus a load.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// Size, modification time (ns) and inode of one file.
pub type Stamp = (u64, i128, u64);

/// What the watched files look like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Vec<(PathBuf, Option<Stamp>)>);

/// The file's stamp, read through symlinks; `None` when it cannot be read.
pub fn file_stamp(p: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(p).ok()?;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.len(), mtime, ino))
}

pub fn fingerprint(files: &PolicyFiles) -> Fingerprint {
    let mut paths = cedar_files(&files.dir).unwrap_or_default();
    if let Some(c) = &files.candidate_dir {
        paths.extend(cedar_files(c).unwrap_or_default());
    }
    paths.push(files.schema.clone());
    paths.extend(files.entities.iter().cloned());
    Fingerprint(
        paths
            .into_iter()
            .map(|p| {
                let s = file_stamp(&p);
                (p, s)
            })
            .collect(),
    )
}

/// Reloads the set on a blocking thread and logs the outcome (metrics are counted inside).
pub async fn reload(gateway: &Arc<Gateway>, why: &str) {
    let gw = gateway.clone();
    match tokio::task::spawn_blocking(move || gw.engine.reload()).await {
        Ok(Ok(snap)) => {
            tracing::info!(version = %snap.version, policies = snap.policy_count, trigger = why, "policies reloaded")
        }
        Ok(Err(e)) => tracing::error!(
            trigger = why,
            "policy reload failed; keeping the current set:\n{e}"
        ),
        Err(e) => {
            tracing::error!(trigger = why, error = %e, "policy reload task failed; keeping the current set")
        }
    }
}

/// Polls the fingerprint until `stop` fires; `last` is the fingerprint of the set in force.
pub async fn watch(
    gateway: Arc<Gateway>,
    files: PolicyFiles,
    mut last: Fingerprint,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL_EVERY) => {}
            _ = stop.changed() => return,
        }
        let f = files.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&f)).await else {
            continue;
        };
        if now != last {
            last = now;
            reload(&gateway, "file change").await;
        }
    }
}
