//! Log setup from `log:` (RUST_LOG, when set, wins over `log.level`).

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("invalid log filter: {0}")]
    Filter(String),
    #[error("logging already initialised")]
    AlreadySet,
}

pub fn init_logging(log: &LogConfig) -> Result<(), LoggingError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directive) if !directive.is_empty() => EnvFilter::try_new(directive),
        _ => EnvFilter::try_new(&log.level),
    }
    .map_err(|e| LoggingError::Filter(e.to_string()))?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|_| LoggingError::AlreadySet)
}
