//! Logging set-up shared by every Strata binary.
//!
//! Logs go to stderr (the harness and the `strata` CLI redirect it to `<service>.log`), as
//! plain text for people or JSON lines for log shippers. The level comes from `RUST_LOG`
//! (default `info`). Panics are logged through `tracing` too, so a crash leaves its reason
//! in the service log instead of only on a terminal nobody watches.

use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// The output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines: `2026-01-01T00:00:00.000000Z  INFO target: message key=value`.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// A `--log-format` value that is neither `plain` nor `json`.
#[derive(Debug, thiserror::Error)]
#[error("invalid log format {0:?}: expected \"plain\" or \"json\"")]
pub struct LogFormatParseError(String);

impl FromStr for LogFormat {
    type Err = LogFormatParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "plain" => Ok(LogFormat::Plain),
            "json" => Ok(LogFormat::Json),
            other => Err(LogFormatParseError(other.to_string())),
        }
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `RUST_LOG` holds something `tracing` cannot parse.
    #[error("invalid RUST_LOG: {0}")]
    BadFilter(String),
    /// Logging was already initialised in this process.
    #[error("logging already initialised: {0}")]
    AlreadyInitialised(String),
}

/// Installs the global subscriber and the panic hook. Call once, first thing in `main`.
pub fn init(format: LogFormat) -> Result<(), LoggingError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => {
            EnvFilter::try_new(&v).map_err(|e| LoggingError::BadFilter(format!("{v:?}: {e}")))?
        }
        _ => EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(true);
    let result = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| LoggingError::AlreadyInitialised(e.to_string()))?;
    install_panic_hook();
    Ok(())
}

/// Logs panics at ERROR (with location) before the default hook prints them.
fn install_panic_hook() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "<non-string panic payload>".to_string());
        tracing::error!(location, "panic: {payload}");
        default_hook(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse() {
        assert_eq!("plain".parse::<LogFormat>().unwrap(), LogFormat::Plain);
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        let e = "xml".parse::<LogFormat>().unwrap_err();
        assert!(e.to_string().contains("xml"));
    }
}
