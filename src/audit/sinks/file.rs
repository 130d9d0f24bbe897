//! The `file` sink: JSON lines appended to one file, written through to the OS per batch.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use super::Sink;
use crate::audit::{chain_head_of, ChainHead};

pub struct FileSink {
    file: File,
}

impl FileSink {
    /// Opens (creating folders and file) for appending; returns the chain head found at the
    /// end of an existing file so that a restart continues the chain.
    pub fn open(path: &Path) -> io::Result<(FileSink, Option<ChainHead>)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let head = chain_head_of(path)?;
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok((FileSink { file }, head))
    }
}

impl Sink for FileSink {
    fn name(&self) -> &'static str {
        "file"
    }

    fn write_batch(&mut self, lines: &[u8]) -> io::Result<()> {
        self.file.write_all(lines)?;
        self.file.flush()
    }
}
