//! Resource entities from `entities_url`: `GET` with `{type}` and `{id}` filled in, the answer a
//! JSON array of Cedar entities. Answers are cached briefly (bounded by entry count and TTL),
//! concurrent lookups of one resource share a fetch, and failures are never cached. A `404`
//! means "nobody knows this resource" and yields no entities; any other failure denies.

use std::sync::Arc;
use std::time::Duration;

use cedar_policy::{Entities, Entity};
use moka::future::Cache;

use super::PolicySnapshot;
use crate::metrics::Metrics;

const MAX_ENTITIES_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EntityFetchError {
    #[error("entities_url: {0}")]
    Transport(String),
    #[error("entities_url answered status {0}")]
    Status(u16),
    #[error("entities_url answer is not valid Cedar entities: {0}")]
    Invalid(String),
}

pub struct EntityResolver {
    template: String,
    client: reqwest::Client,
    /// By policy generation, type and id: an answer was checked against the schema of the
    /// snapshot that fetched it, and serves only that snapshot (a fetch still running when a
    /// reload lands must not serve the new schema unchecked).
    cache: Cache<(u64, String, String), Arc<Vec<Entity>>>,
    metrics: Metrics,
}

impl EntityResolver {
    pub fn new(
        template: String,
        entries: u64,
        ttl: Duration,
        timeout: Duration,
        metrics: Metrics,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            template,
            client,
            cache: Cache::builder()
                .max_capacity(entries)
                .time_to_live(ttl)
                .build(),
            metrics,
        })
    }

    /// The resolver `config.entities_url` asks for, if any.
    pub fn from_config(
        config: &crate::config::Config,
        metrics: &Metrics,
    ) -> Result<Option<Self>, reqwest::Error> {
        config
            .entities_url
            .as_ref()
            .map(|url| {
                Self::new(
                    url.clone(),
                    config.limits.entity_cache_entries,
                    config.limits.entity_cache_ttl,
                    config.limits.entity_fetch_timeout,
                    metrics.clone(),
                )
            })
            .transpose()
    }

    /// Forgets every cached answer (after a policy reload, whose schema may differ).
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    pub async fn resolve(
        &self,
        snap: &PolicySnapshot,
        type_name: &str,
        id: &str,
    ) -> Result<Arc<Vec<Entity>>, EntityFetchError> {
        let key = (snap.generation, type_name.to_owned(), id.to_owned());
        if let Some(hit) = self.cache.get(&key).await {
            self.metrics.entity_cache(true);
            return Ok(hit);
        }
        self.metrics.entity_cache(false);
        self.cache
            .try_get_with(key, self.fetch(snap, type_name, id))
            .await
            .map_err(|e| (*e).clone())
    }

    async fn fetch(
        &self,
        snap: &PolicySnapshot,
        type_name: &str,
        id: &str,
    ) -> Result<Arc<Vec<Entity>>, EntityFetchError> {
        let url = self
            .template
            .replace("{type}", &encode_segment(type_name))
            .replace("{id}", &encode_segment(id));
        let mut resp = self
            .client
            .get(&url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| EntityFetchError::Transport(e.to_string()))?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(Arc::new(Vec::new())),
            s => return Err(EntityFetchError::Status(s)),
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| EntityFetchError::Transport(e.to_string()))?
        {
            if body.len() + chunk.len() > MAX_ENTITIES_BYTES {
                return Err(EntityFetchError::Invalid("answer larger than 1 MiB".into()));
            }
            body.extend_from_slice(&chunk);
        }
        let text =
            std::str::from_utf8(&body).map_err(|e| EntityFetchError::Invalid(e.to_string()))?;
        let entities = Entities::from_json_str(text, Some(&snap.schema))
            .map_err(|e| EntityFetchError::Invalid(e.to_string()))?;
        // Action entities come from the schema; never from the answer.
        let list = entities
            .into_iter()
            .filter(|e| e.uid().type_name().basename() != "Action")
            .collect();
        Ok(Arc::new(list))
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An answer was checked against the schema of the snapshot that fetched it; a reloaded
    /// snapshot (whose schema may differ) never gets it from the cache, even if it was stored
    /// after the reload cleared the cache.
    #[tokio::test]
    async fn an_answer_serves_only_the_policy_generation_that_checked_it() {
        crate::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fetches = Arc::new(AtomicUsize::new(0));
        let counted = fetches.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                counted.fetch_add(1, SeqCst);
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
            }
        });
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let files = crate::config::PolicyFiles {
            dir: dir.clone(),
            schema: dir.join("clinic.cedarschema"),
            entities: Some(dir.join("entities.json")),
            namespace: "Clinic".into(),
            candidate_dir: None,
        };
        let raw: Vec<crate::routes::RawRoute> = serde_yaml::from_str(
            r#"[{method: GET, path: "/patients/{id}", action: ReadPatient, resource: {type: Patient, id: "{id}"}}]"#,
        )
        .unwrap();
        let routes = crate::routes::RouteTable::compile(raw).unwrap();
        let first = super::super::load::load(&files, &routes).unwrap().snapshot;
        let mut second = super::super::load::load(&files, &routes).unwrap().snapshot;
        second.generation = first.generation + 1;
        let resolver = EntityResolver::new(
            format!("http://{addr}/entities/{{type}}/{{id}}"),
            100,
            Duration::from_secs(60),
            Duration::from_secs(5),
            Metrics::new(),
        )
        .unwrap();
        for snap in [&first, &first, &second, &second] {
            let found = resolver.resolve(snap, "Patient", "p-9").await.unwrap();
            assert!(found.is_empty(), "404 is no entity");
        }
        assert_eq!(
            fetches.load(SeqCst),
            2,
            "one fetch per generation, then cached"
        );
    }

    #[test]
    fn ids_are_encoded_for_the_url() {
        assert_eq!(encode_segment("p-1"), "p-1");
        assert_eq!(encode_segment("a b/?#%"), "a%20b%2F%3F%23%25");
    }
}
