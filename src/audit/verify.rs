//! `wardgate audit verify`: walks JSONL audit files in the order given and checks that `seq`
//! rises by one and every `hash` is the SHA-256 of `prev_hash` and the canonical record.
//!
//! Rotated files are one chain: `wardgate audit verify audit.*.jsonl audit.jsonl` (rotated
//! names carry their first `seq`, zero-padded, so the shell lists them in order). A trail that
//! starts past `seq` 1 (older files archived away) is checked from its first record on. What
//! no hash chain can show is a cut at the very end: compare the last `hash` with a copy held
//! elsewhere (a collector behind the `http` or `syslog` sink holds one).

use std::path::Path;

use super::{canonical, chain_hash, GENESIS_HASH};

/// The first record that breaks the chain.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}: record {seq}: {problem}")]
pub struct Broken {
    pub file: String,
    pub line: usize,
    /// The record's `seq`; for an unreadable line `after N` (N: the last good record's `seq`),
    /// or `?` on a first line.
    pub seq: String,
    pub problem: String,
}

/// Verifies the files as one chain; `Ok(n)` is the number of records checked.
pub fn verify_files(files: &[impl AsRef<Path>]) -> Result<u64, Broken> {
    let mut prev: Option<(u64, String)> = None;
    let mut count = 0;
    for file in files {
        let file = file.as_ref();
        let name = file.display().to_string();
        let text = std::fs::read_to_string(file).map_err(|e| Broken {
            file: name.clone(),
            line: 0,
            seq: "?".into(),
            problem: format!("cannot read file: {e}"),
        })?;
        for (i, line) in text.lines().enumerate() {
            // An unreadable line is named by its place: the record after the last good one.
            let unknown = prev
                .as_ref()
                .map_or_else(|| "?".to_owned(), |(s, _)| format!("after {s}"));
            let broken = |seq: String, problem: String| Broken {
                file: name.clone(),
                line: i + 1,
                seq,
                problem,
            };
            if line.trim().is_empty() {
                return Err(broken(unknown, "empty line".into()));
            }
            let mut v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| broken(unknown.clone(), format!("not JSON: {e}")))?;
            let obj = v
                .as_object_mut()
                .ok_or_else(|| broken(unknown.clone(), "not a JSON object".into()))?;
            let seq = obj.get("seq").and_then(serde_json::Value::as_u64);
            let seq_s = seq.map_or_else(|| "?".to_owned(), |s| s.to_string());
            let seq = seq.ok_or_else(|| broken(seq_s.clone(), "`seq` missing".into()))?;
            let hash = match obj.remove("hash") {
                Some(serde_json::Value::String(h)) => h,
                _ => return Err(broken(seq_s, "`hash` missing".into())),
            };
            let prev_hash = obj
                .get("prev_hash")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| broken(seq_s.clone(), "`prev_hash` missing".into()))?
                .to_owned();
            match &prev {
                Some((pseq, phash)) => {
                    if seq != pseq + 1 {
                        return Err(broken(
                            seq_s,
                            format!(
                                "expected seq {} (a record is missing or out of order)",
                                pseq + 1
                            ),
                        ));
                    }
                    if &prev_hash != phash {
                        return Err(broken(
                            seq_s,
                            "`prev_hash` does not match the previous record's hash".into(),
                        ));
                    }
                }
                None if seq == 1 && prev_hash != GENESIS_HASH => {
                    return Err(broken(
                        seq_s,
                        "the first record's `prev_hash` is not 64 zeros".into(),
                    ));
                }
                None => {}
            }
            let want = hex::encode(chain_hash(&prev_hash, canonical(&v).as_bytes()));
            if want != hash {
                return Err(broken(
                    seq_s,
                    "`hash` does not match the record (altered)".into(),
                ));
            }
            prev = Some((seq, hash));
            count += 1;
        }
    }
    Ok(count)
}
