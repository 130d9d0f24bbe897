//! The `file` sink: JSON lines appended to one file, forced to disk per `fsync`, rotated by
//! size.
//!
//! Rotation renames the active file `audit.jsonl` to `audit.<first seq, 20 digits>.jsonl` and
//! starts a new `audit.jsonl`; the chain simply continues, so `wardgate audit verify audit.*`
//! (the shell sorts the rotated files by `seq`, then the active file last) checks every file
//! as one chain. Old files are never deleted: retention is the operator's decision.
//!
//! On open, a last line cut short by a crash is truncated away (it was never a whole record),
//! and the chain head is read from the end of the active file, or of the newest rotated one.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{Batch, Sink, Taken};
use crate::audit::spool::private;
use crate::audit::{head_of_line, ChainHead};
use crate::config::{FileSinkConfig, Fsync};
use crate::metrics::Metrics;

pub struct FileSink {
    path: PathBuf,
    file: File,
    len: u64,
    /// `seq` of the active file's first line (names the file when it is rotated).
    first_seq: Option<u64>,
    max_bytes: Option<u64>,
    fsync: Fsync,
    dirty_since: Option<Instant>,
    metrics: Metrics,
}

impl FileSink {
    /// Opens (creating folders and file) for appending; returns the chain head found at the
    /// end of the existing trail so that a restart continues the chain.
    pub fn open(
        cfg: &FileSinkConfig,
        metrics: Metrics,
    ) -> io::Result<(FileSink, Option<ChainHead>)> {
        let path = cfg.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file =
            private(OpenOptions::new().create(true).read(true).append(true)).open(&path)?;
        let len = repair_tail(&mut file, &path)?;
        let mut head = match last_line(&mut file, len)? {
            Some(line) => Some(head_of_line(&line)?),
            None => None,
        };
        if head.is_none() {
            if let Some((_, newest)) = rotated_files(&path)?.pop() {
                let mut f = File::open(&newest)?;
                let l = f.metadata()?.len();
                if let Some(line) = last_line(&mut f, l)? {
                    head = Some(head_of_line(&line)?);
                }
            }
        }
        let first_seq = if len > 0 {
            first_line_seq(&mut file)
        } else {
            None
        };
        Ok((
            FileSink {
                path,
                file,
                len,
                first_seq,
                max_bytes: cfg.max_bytes,
                fsync: cfg.fsync,
                dirty_since: None,
                metrics,
            },
            head,
        ))
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_all()?;
        self.dirty_since = None;
        let seq = self.first_seq.unwrap_or(0);
        let mut target = rotated_path(&self.path, seq, 0);
        let mut n = 0;
        while target.exists() {
            n += 1;
            target = rotated_path(&self.path, seq, n);
        }
        std::fs::rename(&self.path, &target)?;
        self.file =
            private(OpenOptions::new().create(true).read(true).append(true)).open(&self.path)?;
        self.len = 0;
        self.first_seq = None;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename itself durable.
            File::open(dir)?.sync_all()?;
        }
        tracing::info!(rotated = %target.display(), "audit file rotated");
        Ok(())
    }

    /// Appends `bytes`; on failure the file is cut back so no partial line stays behind.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Err(e) = self.file.write_all(bytes) {
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += bytes.len() as u64;
        if self.dirty_since.is_none() {
            self.dirty_since = Some(Instant::now());
        }
        Ok(())
    }
}

impl Sink for FileSink {
    fn name(&self) -> &'static str {
        "file"
    }

    fn write(&mut self, batch: &Batch, from: usize) -> Taken {
        let n = batch.len();
        let mut i = from;
        while i < n {
            // As many whole lines as fit before the rotation size (at least one).
            let mut j = i;
            let mut size = 0u64;
            while j < n {
                let l = batch.line_len(j) as u64;
                if let Some(max) = self.max_bytes {
                    if self.len + size + l > max && (self.len > 0 || j > i) {
                        break;
                    }
                }
                size += l;
                j += 1;
            }
            if j == i {
                if let Err(e) = self.rotate() {
                    self.metrics.audit_error(self.name());
                    return Taken::failed(i - from, e);
                }
                continue;
            }
            if let Err(e) = self.append(batch.lines(i, j)) {
                self.metrics.audit_error(self.name());
                return Taken::failed(i - from, e);
            }
            if self.first_seq.is_none() {
                self.first_seq = Some(batch.first_seq + i as u64);
            }
            self.metrics.audit_written(self.name(), (j - i) as u64);
            i = j;
        }
        if self.fsync == Fsync::Always {
            if let Err(e) = self.sync() {
                // The lines are in the file; only their durability is late. Report, keep them.
                self.metrics.audit_error(self.name());
                tracing::error!(path = %self.path.display(), error = %e, "audit file fsync failed");
            }
        }
        Taken::all(n - from)
    }

    fn tick(&mut self, now: Instant) -> io::Result<()> {
        if self.fsync.interval_due(self.dirty_since, now) {
            self.sync()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        if self.dirty_since.is_some() {
            self.file.sync_data()?;
            self.dirty_since = None;
        }
        Ok(())
    }
}

/// `audit.jsonl` → `audit.00000000000000000042.jsonl` (`-n` appended to the number when that
/// name is taken).
pub fn rotated_path(path: &Path, first_seq: u64, n: u32) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name = format!("{stem}.{first_seq:020}");
    if n > 0 {
        name.push_str(&format!("-{n}"));
    }
    if let Some(ext) = path.extension() {
        name.push('.');
        name.push_str(&ext.to_string_lossy());
    }
    path.with_file_name(name)
}

/// The rotated files of `path`, oldest first, with their first `seq`.
pub fn rotated_files(path: &Path) -> io::Result<Vec<((u64, u32), PathBuf)>> {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(middle) = name
            .strip_prefix(&format!("{stem}."))
            .and_then(|r| r.strip_suffix(&ext))
        else {
            continue;
        };
        let (num, n) = match middle.split_once('-') {
            Some((a, b)) => (a, b.parse::<u32>().ok()),
            None => (middle, Some(0)),
        };
        if num.len() != 20 || !num.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let (Ok(seq), Some(n)) = (num.parse::<u64>(), n) {
            found.push(((seq, n), entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Cuts a trailing partial line (a write cut short by a crash); returns the new length.
fn repair_tail(file: &mut File, path: &Path) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last == *b"\n" {
        return Ok(len);
    }
    let keep = match last_newline_before(file, len)? {
        Some(p) => p + 1,
        None => 0,
    };
    tracing::warn!(
        path = %path.display(),
        bytes = len - keep,
        "audit file ends in a partial line (a write cut short); truncating it"
    );
    file.set_len(keep)?;
    Ok(keep)
}

/// Offset of the last `\n` before `end`.
fn last_newline_before(file: &mut File, end: u64) -> io::Result<Option<u64>> {
    let mut pos = end;
    let mut buf = vec![0u8; 64 * 1024];
    while pos > 0 {
        let start = pos.saturating_sub(buf.len() as u64);
        let chunk = buf.get_mut(..(pos - start) as usize).unwrap_or_default();
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            return Ok(Some(start + i as u64));
        }
        pos = start;
    }
    Ok(None)
}

/// The last non-empty line of a file of `len` bytes that ends in `\n`.
pub fn last_line(file: &mut File, len: u64) -> io::Result<Option<Vec<u8>>> {
    let mut end = len;
    while end > 0 {
        // `end - 1` is a `\n`; the line starts after the one before it.
        let start = match last_newline_before(file, end - 1)? {
            Some(p) => p + 1,
            None => 0,
        };
        let mut line = vec![0u8; (end - 1 - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut line)?;
        if !line.iter().all(u8::is_ascii_whitespace) {
            return Ok(Some(line));
        }
        end = start;
    }
    Ok(None)
}

fn first_line_seq(file: &mut File) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    file.seek(SeekFrom::Start(0)).ok()?;
    let mut buf = Vec::new();
    let mut reader = io::BufReader::new(file.take(1024 * 1024));
    io::BufRead::read_until(&mut reader, b'\n', &mut buf).ok()?;
    serde_json::from_slice::<Seq>(&buf).ok().map(|s| s.seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::sinks::tests::batch;
    use std::time::Duration;

    fn cfg(path: PathBuf, max_bytes: Option<u64>) -> FileSinkConfig {
        FileSinkConfig {
            path,
            fsync: Fsync::Interval(Duration::from_millis(10)),
            max_bytes,
        }
    }

    fn line(seq: u64) -> String {
        format!(
            r#"{{"hash":"h{seq}","pad":"{}","seq":{seq}}}"#,
            "x".repeat(20)
        )
    }

    #[test]
    fn rotates_by_size_and_reopens_at_the_chain_head() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        let (mut sink, head) =
            FileSink::open(&cfg(path.clone(), Some(110)), Metrics::new()).expect("open");
        assert!(head.is_none());
        let lines: Vec<String> = (1..=7).map(line).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let taken = sink.write(&batch(1, &refs), 0);
        assert_eq!(taken.lines, 7);
        assert!(taken.error.is_none());
        let rotated = rotated_files(&path).expect("list");
        let names: Vec<String> = rotated
            .iter()
            .map(|(_, p)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        // 51-byte lines, 110-byte files: two lines per file.
        assert_eq!(
            names,
            [
                "audit.00000000000000000001.jsonl",
                "audit.00000000000000000003.jsonl",
                "audit.00000000000000000005.jsonl"
            ]
        );
        let active = std::fs::read_to_string(&path).expect("read");
        assert_eq!(active, format!("{}\n", line(7)));
        drop(sink);

        let (_, head) =
            FileSink::open(&cfg(path.clone(), Some(110)), Metrics::new()).expect("reopen");
        assert_eq!(head.map(|h| h.next_seq), Some(8));
        // Just rotated, active file empty: the head comes from the newest rotated file.
        std::fs::write(&path, "").expect("truncate");
        let (_, head) = FileSink::open(&cfg(path, Some(110)), Metrics::new()).expect("reopen");
        assert_eq!(
            head.map(|h| (h.next_seq, h.prev_hash)),
            Some((7, "h6".to_owned()))
        );
    }

    #[test]
    fn a_partial_last_line_is_cut_on_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("a.jsonl");
        std::fs::write(&path, format!("{}\n{{\"seq\":2,\"ha", line(1))).expect("write");
        let (_, head) = FileSink::open(&cfg(path.clone(), None), Metrics::new()).expect("open");
        assert_eq!(head.map(|h| h.next_seq), Some(2));
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            format!("{}\n", line(1))
        );
    }

    #[test]
    fn interval_fsync_happens_on_tick() {
        let dir = tempfile::tempdir().expect("tmp");
        let (mut sink, _) =
            FileSink::open(&cfg(dir.path().join("a"), None), Metrics::new()).expect("open");
        sink.write(&batch(1, &["{\"seq\":1}"]), 0);
        assert!(sink.dirty_since.is_some());
        sink.tick(Instant::now()).expect("tick");
        sink.tick(Instant::now() + Duration::from_millis(20))
            .expect("tick");
        assert!(
            sink.dirty_since.is_none(),
            "synced once the interval passed"
        );
    }
}
