//! The writer thread: takes records off the queue, seals them into the chain (once), and
//! hands each batch to every sink's [`Lane`].
//!
//! A lane keeps, in order, what its sink has not taken yet (the sink failed, or its spool is
//! full) and offers it again every tick (50 ms), ahead of anything newer: each sink sees every
//! record, once, in `seq` order. While any lane holds something, the [`Gate`] refuses new
//! requests (503) and `/readyz` says not ready; when every lane is empty again, both recover.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::queue::{Gate, Release};
use super::sinks::{Batch, Sink};
use super::{ChainHead, DecisionRecord};
use crate::metrics::Metrics;

const TICK: Duration = Duration::from_millis(50);
/// While records keep coming, the writer naps this long between batches instead of waiting on
/// the channel: senders then never have to wake it (no futex call, no context switch on the
/// request path), and each batch carries whatever arrived meanwhile.
const GATHER: Duration = Duration::from_millis(1);
/// A batch closes at this many records or bytes, whichever comes first.
const MAX_BATCH_RECORDS: usize = 4096;
const MAX_BATCH_BYTES: usize = 1024 * 1024;

pub(super) enum Msg {
    Record(Box<DecisionRecord>),
    /// Answer once everything before it is durable everywhere.
    Flush(tokio::sync::oneshot::Sender<()>),
    /// Finish: what a sink has still not taken is counted lost.
    Stop,
}

/// One sink and the batches it has not fully taken yet.
pub(super) struct Lane {
    sink: Box<dyn Sink>,
    held: VecDeque<(Arc<Batch>, usize)>,
    failing: bool,
}

impl Lane {
    pub(super) fn new(sink: Box<dyn Sink>) -> Self {
        Self {
            sink,
            held: VecDeque::new(),
            failing: false,
        }
    }

    /// Offers held lines to the sink, oldest first; `true` when it took all of them.
    fn drain(&mut self) -> bool {
        while let Some((batch, from)) = self.held.front_mut() {
            let taken = self.sink.write(batch, *from);
            *from += taken.lines;
            if *from >= batch.len() {
                self.held.pop_front();
                continue;
            }
            match taken.error {
                Some(e) if !self.failing => {
                    tracing::error!(sink = self.sink.name(), error = %e, "audit sink cannot write; holding its records and retrying");
                }
                None if !self.failing => {
                    tracing::error!(
                        sink = self.sink.name(),
                        "audit spool full; holding its records until the collector catches up"
                    );
                }
                _ => {}
            }
            self.failing = true;
            return false;
        }
        if self.failing {
            tracing::info!(sink = self.sink.name(), "audit sink caught up");
            self.failing = false;
        }
        true
    }

    fn held_records(&self) -> usize {
        self.held.iter().map(|(b, from)| b.len() - from).sum()
    }
}

pub(super) fn run(
    rx: Receiver<Msg>,
    mut lanes: Vec<Lane>,
    mut head: ChainHead,
    gate: Arc<Gate>,
    metrics: Metrics,
) {
    let mut flushes: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
    let mut stopping = false;
    let mut bytes: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut ends: Vec<usize> = Vec::new();
    let mut busy = false;
    loop {
        let mut next = if busy {
            std::thread::sleep(GATHER);
            match rx.try_recv() {
                Ok(msg) => Some(msg),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => {
                    stopping = true;
                    None
                }
            }
        } else {
            match rx.recv_timeout(TICK) {
                Ok(msg) => Some(msg),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    stopping = true;
                    None
                }
            }
        };
        while let Some(msg) = next {
            match msg {
                Msg::Record(mut rec) => {
                    head.seal_into(&mut rec, &mut bytes);
                    ends.push(bytes.len());
                }
                Msg::Flush(done) => flushes.push(done),
                Msg::Stop => stopping = true,
            }
            // Stopping: take everything still queued, however much.
            next = if stopping || (ends.len() < MAX_BATCH_RECORDS && bytes.len() < MAX_BATCH_BYTES)
            {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        busy = !ends.is_empty();
        if !ends.is_empty() {
            let n = ends.len();
            let batch = Arc::new(Batch::new(
                head.next_seq - n as u64,
                std::mem::replace(&mut bytes, Vec::with_capacity(64 * 1024)),
                std::mem::take(&mut ends),
                Release::new(gate.clone(), n),
            ));
            for lane in &mut lanes {
                lane.held.push_back((batch.clone(), 0));
            }
        }
        let now = Instant::now();
        let mut durable = true;
        for lane in &mut lanes {
            durable &= lane.drain();
            if let Err(e) = lane.sink.tick(now) {
                metrics.audit_error(lane.sink.name());
                tracing::error!(sink = lane.sink.name(), error = %e, "audit fsync failed");
            }
        }
        gate.set_durable(durable);
        if durable && !flushes.is_empty() {
            for lane in &mut lanes {
                if let Err(e) = lane.sink.sync() {
                    metrics.audit_error(lane.sink.name());
                    tracing::error!(sink = lane.sink.name(), error = %e, "audit fsync failed");
                }
            }
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
        if stopping {
            for lane in &mut lanes {
                // A spool over its limit beats a record lost with the process.
                lane.sink.lift_limit();
                lane.drain();
                let lost = lane.held_records();
                if lost > 0 {
                    metrics.audit_lost(lost as u64);
                    tracing::error!(
                        sink = lane.sink.name(),
                        records = lost,
                        "stopping with audit records this sink never took"
                    );
                }
                let _ = lane.sink.sync();
            }
            break;
        }
    }
    gate.set_writer_gone();
}
