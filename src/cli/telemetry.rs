//! Logging: to standard error, as text or one JSON object per line, filtered by `RUST_LOG`.

use std::io::IsTerminal;

use crate::cli::args::LogFormat;

/// Sets up logging to standard error; text is coloured only on a terminal, so log files and
/// `kubectl logs` get no escape codes.
pub fn init_telemetry(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
