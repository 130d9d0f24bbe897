//! Audit sinks. Each takes whole batches of already-sealed JSON lines from the writer thread,
//! in `seq` order, and reports whether the batch reached its destination.

pub mod file;
pub mod stdout;

use std::io;

/// A destination for audit lines.
pub trait Sink: Send {
    /// A fixed name for logs and the `sink` metric label.
    fn name(&self) -> &'static str;
    /// Writes a batch of complete lines.
    fn write_batch(&mut self, lines: &[u8]) -> io::Result<()>;
}
