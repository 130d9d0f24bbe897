//! The `stdout` sink: JSON lines on standard output, for Kubernetes log collectors.

use std::io::{self, Write};

use super::{Batch, Sink, Taken};
use crate::metrics::Metrics;

pub struct StdoutSink {
    metrics: Metrics,
}

impl StdoutSink {
    pub fn new(metrics: Metrics) -> Self {
        StdoutSink { metrics }
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> &'static str {
        "stdout"
    }

    fn write(&mut self, batch: &Batch, from: usize) -> Taken {
        let mut out = io::stdout().lock();
        match out
            .write_all(batch.lines(from, batch.len()))
            .and_then(|()| out.flush())
        {
            Ok(()) => {
                self.metrics
                    .audit_written(self.name(), (batch.len() - from) as u64);
                Taken::all(batch.len() - from)
            }
            Err(e) => {
                self.metrics.audit_error(self.name());
                Taken::failed(0, e)
            }
        }
    }
}
