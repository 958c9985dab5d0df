//! Logging: to standard error, as text or one JSON object per line, filtered by `RUST_LOG`.
//! While serving, routine lines are held briefly and written together ([`hold_routine_lines`]).

use std::fmt::{self, Write as _};
use std::io::{self, IsTerminal};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::MakeWriter;
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
        .with_writer(&LOG_OUTPUT)
        .with_ansi(io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        // The JSON builder's field format (for spans) and no ANSI, with the lines below.
        LogFormat::Json => builder.json().event_format(JsonLines::default()).init(),
    }
}

/// How long a routine line (`info`, `debug`, `trace`) waits in memory while serving, at most.
const HOLD_FOR: Duration = Duration::from_millis(100);
/// Held lines are written as soon as they reach this size.
const HOLD_BYTES: usize = 16 * 1024;

/// Standard error for log lines: line by line, or, once [`hold_routine_lines`] is called,
/// routine lines held for up to [`HOLD_FOR`] and written together. A log write is a system
/// call, and on a pipe it also wakes the reader (the container runtime's log collector): one
/// per admission cost a busy server about a tenth of its CPU.
static LOG_OUTPUT: LogOutput = LogOutput {
    ever_held: AtomicBool::new(false),
    held: Mutex::new(Held {
        bytes: Vec::new(),
        holding: false,
    }),
    waiting: Condvar::new(),
};

struct LogOutput {
    /// Set once by [`hold_routine_lines`]: until then lines go straight to standard error, as
    /// in every subcommand but `serve`, without taking [`Self::held`].
    ever_held: AtomicBool,
    held: Mutex<Held>,
    /// Wakes the writer thread when the first line of a burst is held.
    waiting: Condvar,
}

impl LogOutput {
    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes what is held to standard error, and keeps the lock for the caller.
    fn write_held(&self) -> MutexGuard<'_, Held> {
        let mut held = self.held();
        let _ = held.write_out(&mut io::stderr());
        held
    }
}

/// Lines not yet written, in the order they were logged.
struct Held {
    bytes: Vec<u8>,
    /// Whether routine lines wait; the flag that decides, under the lock.
    holding: bool,
}

impl Held {
    /// One whole line: held when routine and holding, else written after what is held, so
    /// lines keep their order. Whether it is the first line held (the writer thread waits for
    /// it).
    fn push(&mut self, line: &[u8], routine: bool, out: &mut impl io::Write) -> io::Result<bool> {
        if self.holding && routine {
            let first = self.bytes.is_empty();
            self.bytes.extend_from_slice(line);
            if self.bytes.len() >= HOLD_BYTES {
                self.write_out(out)?;
            }
            return Ok(first);
        }
        let held = self.write_out(out);
        out.write_all(line).and(held).map(|()| false)
    }

    /// Writes what is held. On an error the lines are dropped, not tried again.
    fn write_out(&mut self, out: &mut impl io::Write) -> io::Result<()> {
        if self.bytes.is_empty() {
            return Ok(());
        }
        let written = out.write_all(&self.bytes);
        self.bytes.clear();
        // What a burst grows it to stays (the buffer doubles past HOLD_BYTES before it is
        // written); only a line far longer than that gives its memory back.
        self.bytes.shrink_to(2 * HOLD_BYTES);
        written
    }
}

/// The writer of one event: tracing-subscriber formats the whole line, then writes it in one
/// `write_all`.
struct LineWriter {
    routine: bool,
}

impl io::Write for LineWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let output = &LOG_OUTPUT;
        if !output.ever_held.load(Ordering::Acquire) {
            return io::stderr().write_all(line).map(|()| line.len());
        }
        let first = output.held().push(line, self.routine, &mut io::stderr())?;
        if first {
            output.waiting.notify_one();
        }
        Ok(line.len())
    }

    /// Nothing to do: a line is written or held whole by `write`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for &'static LogOutput {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter { routine: false }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter {
        LineWriter {
            routine: *meta.level() > Level::WARN,
        }
    }
}

/// From now on, hold routine lines for up to [`HOLD_FOR`] (a thread writes them out), writing a
/// warning or an error at once with everything held before it. A panic writes the held lines
/// before its message; [`WriteHeldLogs`] writes them when `main` ends.
pub fn hold_routine_lines() {
    let output = &LOG_OUTPUT;
    if output.ever_held.load(Ordering::Acquire) {
        return;
    }
    let writer = std::thread::Builder::new()
        .name("log-writer".to_owned())
        .spawn(|| {
            loop {
                let mut held = output.held();
                while held.bytes.is_empty() {
                    held = output
                        .waiting
                        .wait(held)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                drop(held);
                std::thread::sleep(HOLD_FOR);
                drop(output.write_held());
            }
        });
    if writer.is_err() {
        // Without the thread nothing would write held lines: stay line by line.
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // The lock stays taken while the message is written, so no line lands inside it.
        // Nothing panics while holding it, so this never waits on itself.
        let _held = output.write_held();
        previous(info);
    }));
    output.held().holding = true;
    output.ever_held.store(true, Ordering::Release);
}

/// Writes the held log lines when dropped, and every line at once from then on: `main` keeps
/// one, so held lines are written however it ends (a return, an error, a panic unwinding).
pub struct WriteHeldLogs;

impl Drop for WriteHeldLogs {
    fn drop(&mut self) {
        LOG_OUTPUT.write_held().holding = false;
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
        if !push_timestamp(&mut line, std::time::SystemTime::now()) {
            SystemTime.format_time(&mut Writer::new(&mut line))?;
        }
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

/// Appends `now` as [`SystemTime`] formats it (RFC 3339 in UTC, to the microsecond:
/// `2026-12-04T19:26:39.767716Z`) from the date's digits, without `fmt`'s machinery: false,
/// and nothing written, for a time before 1970 or after 9999, left to [`SystemTime`].
fn push_timestamp(line: &mut String, now: std::time::SystemTime) -> bool {
    let Ok(since) = now.duration_since(std::time::UNIX_EPOCH) else {
        return false;
    };
    let seconds = since.as_secs();
    let (year, month, day) = civil_date(seconds / 86_400);
    if year > 9999 {
        return false;
    }
    let time_of_day = seconds % 86_400;
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let fields = [
        (0..4, year),
        (5..7, month),
        (8..10, day),
        (11..13, time_of_day / 3600),
        (14..16, time_of_day / 60 % 60),
        (17..19, time_of_day % 60),
        (20..26, u64::from(since.subsec_micros())),
    ];
    for (place, mut value) in fields {
        for digit in text[place].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    // Digits and separators: ASCII.
    line.push_str(std::str::from_utf8(&text).unwrap_or_default());
    true
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01: the civil
/// calendar in 400-year eras of 146,097 days, each year counted from March so that the leap day
/// is its last.
fn civil_date(days: u64) -> (u64, u64, u64) {
    // Days since 0000-03-01.
    let days = days + 719_468;
    let (era, day_of_era) = (days / 146_097, days % 146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March: 0 is March, 11 February.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
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

    #[test]
    fn held_lines_keep_their_order_and_wait_only_while_holding() {
        let mut out = Vec::new();
        let mut held = Held {
            bytes: Vec::new(),
            holding: false,
        };
        assert!(!held.push(b"a\n", true, &mut out).unwrap());
        assert_eq!(out, b"a\n", "line by line until holding");
        held.holding = true;
        assert!(held.push(b"b\n", true, &mut out).unwrap(), "the first held");
        assert!(!held.push(b"c\n", true, &mut out).unwrap());
        assert_eq!(out, b"a\n", "routine lines wait");
        held.push(b"W\n", false, &mut out).unwrap();
        assert_eq!(
            out, b"a\nb\nc\nW\n",
            "a warning writes what waits, then itself"
        );
        held.push(b"d\n", true, &mut out).unwrap();
        held.write_out(&mut out).unwrap();
        held.write_out(&mut out).unwrap();
        assert_eq!(out, b"a\nb\nc\nW\nd\n", "written once");
        let line = [b'x'; 1000];
        let mut big = Vec::new();
        while big.is_empty() {
            held.push(&line, true, &mut big).unwrap();
        }
        assert_eq!(big.len(), HOLD_BYTES.div_ceil(line.len()) * line.len());
        assert!(held.bytes.is_empty(), "no more than HOLD_BYTES waits");
    }

    /// Standard error that refuses every write.
    struct Closed;

    impl io::Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_of_held_lines_still_writes_the_warning_after_them() {
        let mut held = Held {
            bytes: b"held\n".to_vec(),
            holding: true,
        };
        assert!(held.push(b"W\n", false, &mut Closed).is_err());
        let mut out = Vec::new();
        held.bytes = b"held\n".to_vec();
        struct FailsOnce<'a>(&'a mut Vec<u8>, bool);
        impl io::Write for FailsOnce<'_> {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                if std::mem::replace(&mut self.1, false) {
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
                self.0.write(bytes)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        assert!(
            held.push(b"W\n", false, &mut FailsOnce(&mut out, true))
                .is_err()
        );
        assert_eq!(out, b"W\n");
        assert!(held.bytes.is_empty());
    }

    #[test]
    fn only_warnings_and_errors_are_written_at_once() {
        let subscriber = || {
            tracing_subscriber::fmt()
                .with_max_level(Level::TRACE)
                .finish()
        };
        let routine = |span: fn() -> tracing::Span| {
            tracing::subscriber::with_default(subscriber(), || {
                (&LOG_OUTPUT)
                    .make_writer_for(span().metadata().unwrap())
                    .routine
            })
        };
        assert!(!routine(|| tracing::error_span!("e")));
        assert!(!routine(|| tracing::warn_span!("w")));
        assert!(routine(|| tracing::info_span!("i")));
        assert!(routine(|| tracing::debug_span!("d")));
        assert!(routine(|| tracing::trace_span!("t")));
    }

    #[test]
    fn timestamps_are_written_as_the_general_format_writes_them() {
        use std::time::{Duration, SystemTime as Clock, UNIX_EPOCH};
        let at = |seconds: u64, micros: u32| {
            let mut line = String::new();
            let time = UNIX_EPOCH + Duration::new(seconds, micros * 1000 + 999);
            assert!(push_timestamp(&mut line, time));
            line
        };
        // Leap days of a year divisible by 4, by 400 (2000) and not by 100 (2100), the last
        // microsecond of a day, and the last instant written.
        let known = [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (68_169_600, 7, "1972-02-29T00:00:00.000007Z"),
            (951_782_400, 1, "2000-02-29T00:00:00.000001Z"),
            (951_868_799, 999_999, "2000-02-29T23:59:59.999999Z"),
            (1_709_164_800, 42, "2024-02-29T00:00:00.000042Z"),
            (1_796_412_399, 767_716, "2026-12-04T19:26:39.767716Z"),
            (4_107_542_400, 500_000, "2100-03-01T00:00:00.500000Z"),
            (253_402_300_799, 999_999, "9999-12-31T23:59:59.999999Z"),
        ];
        for (seconds, micros, text) in known {
            assert_eq!(at(seconds, micros), text);
        }
        // Every day to 2400-12-31 (past its leap day) against a walk through the calendar a
        // day at a time.
        let (mut year, mut month, mut day) = (1970, 1, 1);
        for days in 0..157_420 {
            assert_eq!(civil_date(days), (year, month, day), "day {days}");
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            let length = [
                31,
                28 + u64::from(leap),
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            day += 1;
            if day > length[month as usize - 1] {
                (day, month) = (1, month + 1);
                if month > 12 {
                    (month, year) = (1, year + 1);
                }
            }
        }
        // Outside the years of four digits, the general format writes the line.
        let mut line = String::new();
        assert!(!push_timestamp(
            &mut line,
            UNIX_EPOCH - Duration::from_secs(1)
        ));
        assert!(!push_timestamp(
            &mut line,
            UNIX_EPOCH + Duration::from_secs(253_402_300_800)
        ));
        assert!(line.is_empty());
        // The same text as tracing's own timer, to the second (retried across a second's edge).
        let seconds = |line: &str| line[..19].to_owned();
        let same = (0..10).any(|_| {
            let mut general = String::new();
            SystemTime
                .format_time(&mut Writer::new(&mut general))
                .unwrap();
            let mut fast = String::new();
            push_timestamp(&mut fast, Clock::now());
            general.len() == fast.len() && seconds(&general) == seconds(&fast)
        });
        assert!(same);
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
