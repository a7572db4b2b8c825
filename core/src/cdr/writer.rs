//! Appends CDR lines to `cdr.path`. Runs as one task fed by every worker; each
//! batch of records that arrived together is written and flushed before the
//! writer waits again, so a call's CDR is on disk (in the OS) when its call ends.
//! Closing the channel drains it, flushes and fsyncs: none is lost on shutdown.
//! On a reload the file is reopened by its path, so log rotation can move it
//! away (`mv`, then `vigil reload`) without losing a line: records written
//! before the reopen are in the moved file, the rest in the new one.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use tokio::fs::{File, OpenOptions};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

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
    /// many records were written. Each change on `reopen` (every reload, applied
    /// or refused) reopens the file by its path.
    pub async fn run(
        mut self,
        mut records: mpsc::UnboundedReceiver<CdrRecord>,
        mut reopen: watch::Receiver<u64>,
    ) -> Result<u64, CdrWriterError> {
        let mut written = 0u64;
        let mut batch = Vec::new();
        let mut reopen_open = true;
        loop {
            tokio::select! {
                received = records.recv_many(&mut batch, 1024) => {
                    if received == 0 {
                        break;
                    }
                }
                changed = reopen.changed(), if reopen_open => {
                    match changed {
                        Ok(()) => self.reopen().await,
                        Err(_) => reopen_open = false,
                    }
                    continue;
                }
            }
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

    /// Switches to a fresh handle on the path (the old file was perhaps moved
    /// away); if that fails, writing goes on to the old one.
    async fn reopen(&mut self) {
        if let Err(e) = self.file.sync_all().await {
            tracing::warn!(file = %self.path.display(), error = %e, "CDR file sync before reopen failed");
        }
        match CdrWriter::open(&self.path).await {
            Ok(fresh) => {
                self.file = fresh.file;
                tracing::info!(file = %self.path.display(), "CDR file reopened");
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot reopen the CDR file: still writing to the old one")
            }
        }
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
