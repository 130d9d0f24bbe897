//! A network sink's disk spool: the write-ahead log between the writer thread and the sender
//! that delivers to the collector.
//!
//! Every record a network sink will deliver is first appended here, in `seq` order, exactly as
//! sealed (one canonical JSON line each), so a collector that is slow or down costs disk, not
//! memory, and what was not delivered is still there after a restart.
//!
//! On disk, `spool_dir` holds segment files `<id, 20 digits>.spool` (ids rise; a new segment
//! starts when the current one passes an eighth of `spool_max_bytes`, at least 64 KiB) and a
//! `cursor` file, `"<segment id> <byte offset>\n"`, written (temp file + rename) after every
//! delivery: everything before it was delivered. A delivered segment is deleted, except the
//! newest, whose last line carries the chain head across restarts when no file sink does.
//!
//! Delivery is at-least-once: a crash between a delivery and its cursor write, or a
//! connection lost before the peer confirmed, sends those lines again — with the same `seq`,
//! so a collector drops a line whose `seq` it already has.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::sinks::{Batch, Sink, Taken};
use super::{head_of_line, ChainHead};
use crate::config::{Fsync, SpoolConfig};
use crate::metrics::Metrics;

/// A place in the spool: segment id and byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
}

#[derive(Debug, Clone, Copy)]
struct Seg {
    id: u64,
    len: u64,
}

struct State {
    segments: VecDeque<Seg>,
    acked: Pos,
    unsent: u64,
}

struct Shared {
    dir: PathBuf,
    name: &'static str,
    max_bytes: u64,
    state: Mutex<State>,
    data: tokio::sync::Notify,
    metrics: Metrics,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        segment_path(&self.dir, id)
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.spool"))
}

/// Opens (or creates) the spool of sink `name`; returns its two ends and the chain head found
/// in its newest segment.
pub fn open(
    cfg: &SpoolConfig,
    name: &'static str,
    metrics: Metrics,
) -> io::Result<(SpoolWriter, SpoolReader, Option<ChainHead>)> {
    create_private_dir(&cfg.dir)?;
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(&cfg.dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(num) = name.strip_suffix(".spool") {
            if num.len() == 20 {
                if let Ok(id) = num.parse::<u64>() {
                    ids.push(id);
                }
            }
        }
    }
    ids.sort_unstable();
    let next_id = ids.last().map_or(1, |l| l + 1);
    let mut acked = read_cursor(&cfg.dir).unwrap_or_default();
    let mut segments = VecDeque::new();
    let mut head = None;
    let last_id = ids.last().copied();
    for id in ids {
        let path = segment_path(&cfg.dir, id);
        if id < acked.segment {
            remove(&path);
            continue;
        }
        let mut f = OpenOptions::new().read(true).write(true).open(&path)?;
        let mut len = f.metadata()?.len();
        if Some(id) == last_id {
            len = cut_partial_line(&mut f, len)?;
            if let Some(line) = super::sinks::file::last_line(&mut f, len)? {
                head = Some(head_of_line(&line)?);
            }
        }
        segments.push_back(Seg { id, len });
    }
    match segments.iter().find(|s| s.id == acked.segment) {
        Some(s) => acked.offset = acked.offset.min(s.len),
        None => {
            acked = Pos {
                segment: segments.front().map_or(0, |s| s.id),
                offset: 0,
            }
        }
    }
    let unsent = segments
        .iter()
        .map(|s| s.len)
        .sum::<u64>()
        .saturating_sub(acked.offset);
    metrics.audit_spool_bytes(name).add(unsent as i64);
    let shared = Arc::new(Shared {
        dir: cfg.dir.clone(),
        name,
        max_bytes: cfg.max_bytes,
        state: Mutex::new(State {
            segments,
            acked,
            unsent,
        }),
        data: tokio::sync::Notify::new(),
        metrics,
    });
    if unsent > 0 {
        tracing::info!(sink = name, bytes = unsent, dir = %cfg.dir.display(), "audit spool holds undelivered records; replaying");
    }
    Ok((
        SpoolWriter {
            shared: shared.clone(),
            file: None,
            next_id,
            cur_id: 0,
            cur_len: 0,
            segment_bytes: (cfg.max_bytes / 8).clamp(64 * 1024, 64 * 1024 * 1024),
            fsync: cfg.fsync,
            dirty_since: None,
            unlimited: false,
        },
        SpoolReader { shared, file: None },
        head,
    ))
}

/// Audit records name patients: the spool is readable by its owner only.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// New files readable and writable by their owner only.
pub(crate) fn private(o: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(o, 0o600);
    o
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove delivered spool segment");
        }
    }
}

fn read_cursor(dir: &Path) -> Option<Pos> {
    let text = std::fs::read_to_string(dir.join("cursor")).ok()?;
    let (a, b) = text.trim().split_once(' ')?;
    Some(Pos {
        segment: a.parse().ok()?,
        offset: b.parse().ok()?,
    })
}

/// Cuts a trailing partial line; returns the new length.
fn cut_partial_line(f: &mut File, len: u64) -> io::Result<u64> {
    if len == 0 {
        return Ok(0);
    }
    let mut buf = Vec::new();
    f.seek(SeekFrom::Start(0))?;
    f.read_to_end(&mut buf)?;
    let keep = buf.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1) as u64;
    if keep != len {
        tracing::warn!(
            bytes = len - keep,
            "audit spool segment ends in a partial line; truncating it"
        );
        f.set_len(keep)?;
    }
    Ok(keep)
}

/// The writer thread's end: appends batches (a [`Sink`]).
pub struct SpoolWriter {
    shared: Arc<Shared>,
    file: Option<File>,
    next_id: u64,
    cur_id: u64,
    cur_len: u64,
    segment_bytes: u64,
    fsync: Fsync,
    dirty_since: Option<Instant>,
    /// Shutting down: take everything, whatever `spool_max_bytes` says.
    unlimited: bool,
}

impl Sink for SpoolWriter {
    fn name(&self) -> &'static str {
        self.shared.name
    }

    fn write(&mut self, batch: &Batch, from: usize) -> Taken {
        let room = if self.unlimited {
            u64::MAX
        } else {
            let st = self.shared.lock();
            self.shared.max_bytes.saturating_sub(st.unsent)
        };
        let mut to = from;
        let mut size = 0u64;
        while to < batch.len() && size + batch.line_len(to) as u64 <= room {
            size += batch.line_len(to) as u64;
            to += 1;
        }
        if to == from {
            return Taken::all(0);
        }
        let mut new_segment = false;
        if self.file.is_none() || self.cur_len >= self.segment_bytes {
            if let Err(e) = self.sync() {
                tracing::warn!(sink = self.shared.name, error = %e, "spool fsync failed");
            }
            let id = self.next_id;
            let path = self.shared.segment_path(id);
            match private(OpenOptions::new().create_new(true).append(true)).open(&path) {
                Ok(f) => {
                    self.file = Some(f);
                    self.cur_id = id;
                    self.cur_len = 0;
                    self.next_id += 1;
                    new_segment = true;
                }
                Err(e) => {
                    self.shared.metrics.audit_error(self.shared.name);
                    return Taken::failed(0, e);
                }
            }
        }
        let Some(file) = self.file.as_mut() else {
            return Taken::failed(0, io::Error::other("no spool segment"));
        };
        if let Err(e) = file.write_all(batch.lines(from, to)) {
            let _ = file.set_len(self.cur_len);
            if new_segment {
                self.file = None;
                remove(&self.shared.segment_path(self.cur_id));
            }
            self.shared.metrics.audit_error(self.shared.name);
            return Taken::failed(0, e);
        }
        self.cur_len += size;
        {
            let mut st = self.shared.lock();
            if new_segment {
                st.segments.push_back(Seg {
                    id: self.cur_id,
                    len: self.cur_len,
                });
            } else if let Some(last) = st.segments.back_mut() {
                last.len = self.cur_len;
            }
            st.unsent += size;
        }
        self.shared.data.notify_one();
        self.shared
            .metrics
            .audit_spool_bytes(self.shared.name)
            .add(size as i64);
        if self.dirty_since.is_none() {
            self.dirty_since = Some(Instant::now());
        }
        if self.fsync == Fsync::Always {
            if let Err(e) = self.sync() {
                tracing::warn!(sink = self.shared.name, error = %e, "spool fsync failed");
            }
        }
        Taken::all(to - from)
    }

    fn tick(&mut self, now: Instant) -> io::Result<()> {
        if self.fsync.interval_due(self.dirty_since, now) {
            self.sync()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        if let (Some(f), Some(_)) = (&self.file, self.dirty_since) {
            f.sync_data()?;
        }
        self.dirty_since = None;
        Ok(())
    }

    fn lift_limit(&mut self) {
        self.unlimited = true;
    }
}

/// Lines read from the spool for one delivery.
pub struct Chunk {
    /// Whole lines, each ending in `\n`.
    pub bytes: Vec<u8>,
    /// End offset of each line in `bytes`.
    pub ends: Vec<usize>,
    /// The place right after the last line.
    pub end: Pos,
}

impl Chunk {
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&e| {
            let l = self.bytes.get(start..e).unwrap_or_default();
            start = e;
            l
        })
    }
}

/// The sender's end: reads undelivered lines in order and records deliveries.
pub struct SpoolReader {
    shared: Arc<Shared>,
    file: Option<(u64, File)>,
}

impl SpoolReader {
    /// Everything before this place was delivered.
    pub fn acked(&self) -> Pos {
        self.shared.lock().acked
    }

    /// Bytes not yet delivered.
    pub fn unsent(&self) -> u64 {
        self.shared.lock().unsent
    }

    /// Resolves when the writer appended something (or had before this was awaited).
    pub async fn data(&self) {
        self.shared.data.notified().await;
    }

    /// Up to `max_lines` whole lines (and about `max_bytes`, at least one line) from `from`.
    pub fn read(
        &mut self,
        from: Pos,
        max_lines: usize,
        max_bytes: usize,
    ) -> io::Result<Option<Chunk>> {
        let (seg, offset) = {
            let st = self.shared.lock();
            let mut at = from.max(st.acked);
            let mut found = None;
            for s in &st.segments {
                if s.id < at.segment {
                    continue;
                }
                if s.id > at.segment {
                    at = Pos {
                        segment: s.id,
                        offset: 0,
                    };
                }
                if at.offset < s.len {
                    found = Some((*s, at.offset));
                    break;
                }
            }
            match found {
                Some(f) => f,
                None => return Ok(None),
            }
        };
        let file = match &mut self.file {
            Some((id, f)) if *id == seg.id => f,
            slot => {
                let f = File::open(self.shared.segment_path(seg.id))?;
                &mut slot.insert((seg.id, f)).1
            }
        };
        let avail = seg.len - offset;
        let mut want = avail.min(max_bytes.max(1) as u64);
        loop {
            let mut bytes = vec![0u8; want as usize];
            file.seek(SeekFrom::Start(offset))?;
            file.read_exact(&mut bytes)?;
            let mut ends = Vec::new();
            for (i, b) in bytes.iter().enumerate() {
                if *b == b'\n' {
                    ends.push(i + 1);
                    if ends.len() >= max_lines.max(1) {
                        break;
                    }
                }
            }
            if let Some(&last) = ends.last() {
                bytes.truncate(last);
                return Ok(Some(Chunk {
                    bytes,
                    ends,
                    end: Pos {
                        segment: seg.id,
                        offset: offset + last as u64,
                    },
                }));
            }
            if want >= avail {
                // The segment's length always ends on a line; this is a damaged file.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("spool segment {} has a line without an end", seg.id),
                ));
            }
            want = avail;
        }
    }

    /// Records that everything before `to` was delivered; deletes delivered segments.
    pub fn ack(&mut self, to: Pos) -> io::Result<()> {
        let mut gone = Vec::new();
        let (freed, acked) = {
            let mut st = self.shared.lock();
            let from = st.acked;
            if to <= from {
                return Ok(());
            }
            let mut freed = 0u64;
            for s in &st.segments {
                if s.id < from.segment || s.id > to.segment {
                    continue;
                }
                let a = if s.id == from.segment { from.offset } else { 0 };
                let b = if s.id == to.segment { to.offset } else { s.len };
                freed += b.saturating_sub(a);
            }
            st.unsent = st.unsent.saturating_sub(freed);
            st.acked = to;
            while st.segments.len() > 1 {
                let Some(front) = st.segments.front().copied() else {
                    break;
                };
                let done = front.id < st.acked.segment
                    || (front.id == st.acked.segment && st.acked.offset >= front.len);
                if !done {
                    break;
                }
                st.segments.pop_front();
                if let Some(next) = st.segments.front() {
                    if st.acked.segment <= front.id {
                        st.acked = Pos {
                            segment: next.id,
                            offset: 0,
                        };
                    }
                }
                gone.push(front.id);
            }
            (freed, st.acked)
        };
        self.shared
            .metrics
            .audit_spool_bytes(self.shared.name)
            .sub(freed as i64);
        for id in gone {
            if matches!(&self.file, Some((open, _)) if *open == id) {
                self.file = None;
            }
            remove(&self.shared.segment_path(id));
        }
        let tmp = self.shared.dir.join("cursor.tmp");
        std::fs::write(&tmp, format!("{} {}\n", acked.segment, acked.offset))?;
        std::fs::rename(&tmp, self.shared.dir.join("cursor"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::sinks::tests::batch;
    use std::time::Duration;

    fn cfg(dir: &Path, max_bytes: u64) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes,
            fsync: Fsync::Interval(Duration::from_secs(1)),
        }
    }

    fn line(seq: u64) -> String {
        format!(r#"{{"hash":"h{seq}","seq":{seq}}}"#)
    }

    fn lines(from: u64, to: u64) -> Vec<String> {
        (from..=to).map(line).collect()
    }

    fn write(w: &mut SpoolWriter, first: u64, ls: &[String]) -> usize {
        let refs: Vec<&str> = ls.iter().map(String::as_str).collect();
        let t = w.write(&batch(first, &refs), 0);
        assert!(t.error.is_none(), "{:?}", t.error);
        t.lines
    }

    fn drain(r: &mut SpoolReader, max_lines: usize) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(c) = r.read(r.acked(), max_lines, 1 << 20).expect("read") {
            out.extend(
                c.lines()
                    .map(|l| String::from_utf8_lossy(l).trim_end().to_owned()),
            );
            r.ack(c.end).expect("ack");
        }
        out
    }

    #[test]
    fn delivers_in_order_and_resumes_after_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let (mut w, mut r, head) =
            open(&cfg(dir.path(), 1 << 20), "http", Metrics::new()).expect("open");
        assert!(head.is_none());
        assert_eq!(write(&mut w, 1, &lines(1, 5)), 5);
        let c = r.read(r.acked(), 2, 1 << 20).expect("read").expect("data");
        assert_eq!(c.ends.len(), 2);
        r.ack(c.end).expect("ack");
        drop((w, r));

        let (mut w, mut r, head) =
            open(&cfg(dir.path(), 1 << 20), "http", Metrics::new()).expect("reopen");
        assert_eq!(
            head.map(|h| h.next_seq),
            Some(6),
            "chain head from the newest segment"
        );
        assert_eq!(write(&mut w, 6, &lines(6, 7)), 2);
        assert_eq!(
            drain(&mut r, 3),
            lines(3, 7),
            "undelivered lines, in order, once"
        );
        assert_eq!(r.unsent(), 0);
        let segs: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".spool"))
            .collect();
        assert_eq!(
            segs.len(),
            1,
            "delivered segments are deleted but the newest"
        );
    }

    #[test]
    fn a_full_spool_takes_what_fits_and_then_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let (mut w, mut r, _) =
            open(&cfg(dir.path(), 1024), "syslog", Metrics::new()).expect("open");
        let many = lines(1, 100); // ~24 bytes each
        let took = write(&mut w, 1, &many);
        assert!(took > 10 && took < 100, "{took}");
        let rest: Vec<String> = many[took..].to_vec();
        assert_eq!(write(&mut w, 1 + took as u64, &rest), 0, "full");
        let got = drain(&mut r, 1000);
        assert_eq!(got.len(), took);
        assert!(write(&mut w, 1 + took as u64, &rest) > 0, "room again");
    }

    #[test]
    fn a_reread_from_an_earlier_place_sends_the_same_lines() {
        let dir = tempfile::tempdir().expect("tmp");
        let (mut w, mut r, _) = open(&cfg(dir.path(), 1 << 20), "x", Metrics::new()).expect("open");
        write(&mut w, 1, &lines(1, 4));
        let a = r.read(r.acked(), 2, 1 << 20).expect("read").expect("data");
        let b = r.read(a.end, 2, 1 << 20).expect("read").expect("data");
        assert_eq!(b.lines().count(), 2);
        // The connection died before confirmation: start again from the acked place.
        let again = r.read(r.acked(), 10, 1 << 20).expect("read").expect("data");
        assert_eq!(again.lines().count(), 4);
    }
}
