//! Appends CDR lines to `cdr.path`. Runs as one task fed by every worker; each
//! batch of records that arrived together is written and flushed before the
//! writer waits again, so a call's CDR is on disk (in the OS) when its call ends.
//! Closing the channel drains it, flushes and fsyncs: none is lost on shutdown.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use tokio::fs::{File, OpenOptions};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::CdrRecord;

#[derive(Debug, thiserror::Error)]
pub enum CdrWriterError {
    #[error("cannot open CDR file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write CDR file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct CdrWriter {
    path: PathBuf,
    file: File,
}

impl CdrWriter {
    /// Opens (creating if needed) the CDR file for appending.
    pub async fn open(path: &Path) -> Result<CdrWriter, CdrWriterError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| CdrWriterError::Open {
                    path: path.to_path_buf(),
                    source,
                })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .map_err(|source| CdrWriterError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(CdrWriter {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Writes records until every sender is gone, then syncs the file. Returns how
    /// many records were written.
    pub async fn run(
        mut self,
        mut records: mpsc::UnboundedReceiver<CdrRecord>,
    ) -> Result<u64, CdrWriterError> {
        let mut written = 0u64;
        let mut batch = Vec::new();
        while records.recv_many(&mut batch, 1024).await > 0 {
            let now = Instant::now();
            let wall = SystemTime::now();
            let mut text = String::with_capacity(batch.len() * 400);
            for record in batch.drain(..) {
                text.push_str(&record.to_json_line(now, wall));
                text.push('\n');
                written += 1;
            }
            self.write(text.as_bytes()).await?;
        }
        self.file
            .sync_all()
            .await
            .map_err(|source| self.err(source))?;
        Ok(written)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), CdrWriterError> {
        self.file
            .write_all(bytes)
            .await
            .map_err(|source| self.err(source))?;
        self.file.flush().await.map_err(|source| self.err(source))
    }

    fn err(&self, source: std::io::Error) -> CdrWriterError {
        CdrWriterError::Write {
            path: self.path.clone(),
            source,
        }
    }
}
