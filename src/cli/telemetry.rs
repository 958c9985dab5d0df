//! Logging: to standard error, as text or one JSON object per line, filtered by `RUST_LOG`.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::cli::args::LogFormat;
use crate::core::json::{self, Escaping};

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
        // The JSON builder's field format (for spans) and no ANSI, with the lines below.
        LogFormat::Json => builder.json().event_format(JsonLines::default()).init(),
    }
}

/// tracing-subscriber's JSON lines with the event's fields flattened (`{"timestamp", "level",
/// the fields in order, "target"}`), the same bytes, written straight into the line for an
/// event outside any span that is not a `log` record: every admission logs one, and the
/// general format costs several times as much (a serializer per line, each piece checked as
/// UTF-8 again). Anything else goes to that format.
struct JsonLines {
    general: Format<Json, SystemTime>,
}

impl Default for JsonLines {
    fn default() -> Self {
        Self {
            general: Format::default().json().flatten_event(true),
        }
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let in_span = event
            .parent()
            .and_then(|id| context.span(id))
            .or_else(|| context.lookup_current())
            .is_some();
        if in_span || event.is_log() {
            return self.general.format_event(context, writer, event);
        }
        let metadata = event.metadata();
        let mut line = String::with_capacity(320);
        line.push_str(r#"{"timestamp":""#);
        SystemTime.format_time(&mut Writer::new(&mut line))?;
        line.push_str(r#"","level":""#);
        line.push_str(metadata.level().as_str());
        line.push('"');
        event.record(&mut Members(&mut line));
        line.push_str(r#","target":"#);
        json::push_string(&mut line, metadata.target());
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// Writes each field as `,"name":value`, as `tracing_serde`'s map visitor serializes it: numbers
/// and booleans as such, strings and anything else (`Debug`) as strings.
struct Members<'a>(&'a mut String);

impl Members<'_> {
    fn key(&mut self, field: &Field) {
        self.0.push(',');
        json::push_key(self.0, field.name());
    }
}

impl Visit for Members<'_> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.0.push_str(if value { "true" } else { "false" });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.0, "{value}");
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.0, "{value}");
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        // serde_json's own text for a float (`1.0`, `1e20`, `null` for NaN).
        let text = serde_json::to_string(&value).unwrap_or_else(|_| "null".to_owned());
        self.0.push_str(&text);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        json::push_string(self.0, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.0.push('"');
        let _ = write!(Escaping(self.0), "{value:?}");
        self.0.push('"');
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Lines written by a subscriber, shared with the test.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What `emit` logs through the JSON subscriber, with kvinject's lines (`fast`) or the
    /// general format, one line per event.
    fn logged(fast: bool, emit: &dyn Fn()) -> Vec<String> {
        let lines = Lines::default();
        let writer = lines.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .json();
        if fast {
            let subscriber = builder.event_format(JsonLines::default()).finish();
            tracing::subscriber::with_default(subscriber, emit);
        } else {
            let subscriber = builder.flatten_event(true).finish();
            tracing::subscriber::with_default(subscriber, emit);
        }
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    /// The timestamp's value, which differs between two runs, blanked.
    fn without_timestamp(line: &str) -> String {
        let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
        value["timestamp"] = serde_json::Value::Null;
        serde_json::to_string(&value).unwrap()
    }

    #[test]
    fn lines_are_the_bytes_of_the_general_json_format() {
        let emit = || {
            let optional: Option<&str> = None;
            tracing::info!(
                route = "mutate",
                text = "quote \" backslash \\ newline \n tab \t bell \u{7} é 🦀",
                count = 42u64,
                delta = -7i64,
                ratio = 0.25f64,
                whole = 3.0f64,
                nan = f64::NAN,
                flag = true,
                absent = optional,
                debugged = ?vec!["a\"b"],
                shown = %"display \u{1b}",
                "admission of {} pods", 3
            );
            tracing::warn!(target: "a \"target\"", status = 415u64, "rejected");
            tracing::error!("");
            let span = tracing::info_span!("a span", id = 7u64);
            let _inside = span.enter();
            tracing::info!(inside = true, "in a span");
        };
        let fast = logged(true, &emit);
        let general = logged(false, &emit);
        assert_eq!(fast.len(), 4, "{fast:?}");
        assert_eq!(fast.len(), general.len());
        for (fast, general) in fast.iter().zip(&general) {
            // The same members in the same order, with the same text, and a timestamp of the
            // same form.
            assert_eq!(without_timestamp(fast), without_timestamp(general));
            let strip = |line: &str| {
                let end = line.find(r#"","level""#).unwrap();
                (line[..14].to_owned(), line[end..].to_owned(), end)
            };
            assert_eq!(strip(fast), strip(general), "{fast}\n{general}");
        }
        assert!(fast[3].contains(r#""span":{"#), "{}", fast[3]);
    }
}
