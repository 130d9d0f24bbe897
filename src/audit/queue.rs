//! Admission to the audit queue: the bound on records held in memory, and the back-pressure
//! state that turns new requests into 503s.
//!
//! A request reserves its record's place when it arrives ([`Gate::admit`]); the place is
//! given back only once the record is durable in every sink (written, or in the sink's spool),
//! when the writer drops the [`Release`] of its batch. So `capacity` bounds requests in flight
//! plus records queued plus records waiting for a sink, and a record that was admitted always
//! has room: nothing is ever dropped.
//!
//! A request that is refused still leaves a record (its 503). Those take places beyond
//! `capacity`, up to twice it; past that the refusal waits for a place, so memory stays
//! bounded even while the sinks are down and traffic keeps coming.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::metrics::Metrics;

/// Why a new request cannot be audited right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("the audit queue is full")]
    QueueFull,
    #[error("a sink cannot make records durable (spool full or unwritable)")]
    NotDurable,
    #[error("the audit writer has stopped")]
    WriterGone,
}

/// The shared admission state.
pub struct Gate {
    reserved: AtomicUsize,
    capacity: usize,
    /// Every sink has taken every record handed to it.
    durable: AtomicBool,
    writer_alive: AtomicBool,
    freed: tokio::sync::Notify,
    metrics: Metrics,
}

impl Gate {
    pub fn new(capacity: usize, metrics: Metrics) -> Self {
        Self {
            reserved: AtomicUsize::new(0),
            capacity,
            durable: AtomicBool::new(true),
            writer_alive: AtomicBool::new(true),
            freed: tokio::sync::Notify::new(),
            metrics,
        }
    }

    /// Reserves the place of a new request's record, or says why the request must be refused.
    pub fn admit(&self) -> Result<Slot<'_>, Unavailable> {
        if !self.writer_alive.load(Ordering::Acquire) {
            return Err(Unavailable::WriterGone);
        }
        if !self.durable.load(Ordering::Acquire) {
            return Err(Unavailable::NotDurable);
        }
        if !self.take_below(self.capacity) {
            return Err(Unavailable::QueueFull);
        }
        Ok(Slot { gate: self })
    }

    /// Takes a place if fewer than `limit` are taken.
    fn take_below(&self, limit: usize) -> bool {
        self.reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                (r < limit).then_some(r + 1)
            })
            .is_ok()
    }

    /// A place for the record of a refused request: beyond `capacity` up to twice it, else
    /// waits until places are given back.
    pub async fn admit_refusal(&self) -> Slot<'_> {
        loop {
            let freed = self.freed.notified();
            if self.take_below(self.capacity.saturating_mul(2)) {
                return Slot { gate: self };
            }
            freed.await;
        }
    }

    /// Takes a place without asking (a record whose request had none, e.g. its client left
    /// while it waited in [`Gate::admit_refusal`]).
    pub fn force(&self) {
        self.reserved.fetch_add(1, Ordering::AcqRel);
    }

    /// Gives `n` places back.
    pub fn release(&self, n: usize) {
        if n > 0 {
            self.reserved.fetch_sub(n, Ordering::AcqRel);
            self.freed.notify_waiters();
        }
    }

    pub fn set_durable(&self, ok: bool) {
        if self.durable.swap(ok, Ordering::AcqRel) != ok {
            self.metrics.audit_blocked(!ok);
            if ok {
                tracing::info!("audit sinks caught up; accepting requests again");
            } else {
                tracing::error!(
                    "an audit sink cannot make records durable; new requests get 503 until it recovers"
                );
            }
        }
    }

    pub fn set_writer_gone(&self) {
        self.writer_alive.store(false, Ordering::Release);
        self.metrics.audit_blocked(true);
    }

    /// Whether a new request would be admitted now.
    pub fn is_open(&self) -> bool {
        self.writer_alive.load(Ordering::Acquire)
            && self.durable.load(Ordering::Acquire)
            && self.reserved.load(Ordering::Acquire) < self.capacity
    }

    /// Places taken now (requests in flight and records not yet durable).
    pub fn reserved(&self) -> usize {
        self.reserved.load(Ordering::Acquire)
    }
}

/// A reserved place for one record. Handing it to [`crate::audit::Auditor::record`] moves the
/// place to the record; dropping it unused gives the place back.
pub struct Slot<'a> {
    gate: &'a Gate,
}

impl Slot<'_> {
    /// The place now belongs to a queued record (released with its batch).
    pub(crate) fn into_record(self) {
        std::mem::forget(self);
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.gate.release(1);
    }
}

/// Gives a batch's places back when the last sink has taken it.
pub struct Release {
    gate: std::sync::Arc<Gate>,
    n: usize,
}

impl Release {
    pub fn new(gate: std::sync::Arc<Gate>, n: usize) -> Self {
        Self { gate, n }
    }

    /// A release of nothing (benchmarks and tests that build batches by hand).
    pub fn none(gate: std::sync::Arc<Gate>) -> Self {
        Self { gate, n: 0 }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        self.gate.metrics.audit_queue().sub(self.n as i64);
        self.gate.release(self.n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_bounds_admission_and_places_come_back() {
        let gate = Gate::new(2, Metrics::new());
        let a = gate.admit().expect("first");
        let b = gate.admit().expect("second");
        assert_eq!(gate.admit().err(), Some(Unavailable::QueueFull));
        drop(a);
        let c = gate.admit().expect("a place came back");
        b.into_record();
        drop(c);
        assert_eq!(gate.reserved(), 1, "a recorded slot keeps its place");
        gate.release(1);
        assert_eq!(gate.reserved(), 0);
    }

    #[test]
    fn not_durable_refuses_everything() {
        let gate = Gate::new(8, Metrics::new());
        gate.set_durable(false);
        assert_eq!(gate.admit().err(), Some(Unavailable::NotDurable));
        assert!(!gate.is_open());
        gate.set_durable(true);
        assert!(gate.admit().is_ok());
    }

    #[tokio::test]
    async fn refusals_get_places_beyond_capacity_then_wait() {
        let gate = std::sync::Arc::new(Gate::new(1, Metrics::new()));
        let a = gate.admit_refusal().await;
        let b = gate.admit_refusal().await;
        a.into_record();
        b.into_record();
        let g = gate.clone();
        let waiter = tokio::spawn(async move {
            g.admit_refusal().await.into_record();
        });
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "a third place is past twice the capacity"
        );
        gate.release(1);
        waiter.await.expect("the waiter got the freed place");
        assert_eq!(gate.reserved(), 2);
    }
}
