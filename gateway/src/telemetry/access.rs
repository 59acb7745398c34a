//! The access line of a request as JSON, written by a formatter of its own.
//!
//! With JSON logs (the default of `serve`) the access line is the one log line every
//! request writes, and `tracing-subscriber`'s JSON formatter — a serde serializer fed field
//! by field through a visitor, its output checked as UTF-8 again — cost ~2.7 µs of a cached
//! answer's ~26 µs on the benchmark machine (`ops/bench/gateway.sh`, perf profile of (a)).
//! Here the line is the same JSON object, fields in the same order, written straight into
//! one buffer (the whole access line, hand-off to the writer included, ~0.9 µs in the same
//! profile), as nginx and Envoy write theirs apart from their event logs. It
//! goes to the same background writer as every other line (a blocked stdout drops lines,
//! counted, and never stalls a request); `RUST_LOG`, `log.level` and `log.access` still
//! turn it off (the log filter is asked at startup whether it lets an INFO record of
//! `mallgate::access` through; when not, the `tracing` event is written instead, and
//! refused). Text logs (`demo`) keep writing it as a `tracing` event.

use std::cell::RefCell;
use std::io::Write as _;
use std::sync::OnceLock;

use tracing_appender::non_blocking::NonBlocking;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

use super::request::Answered;

/// The writer of JSON access lines, once the process's logging says lines are JSON.
static JSON: OnceLock<NonBlocking> = OnceLock::new();

thread_local! {
    /// One line's buffer per thread, kept between requests.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// Access lines are JSON from now on, written to `writer` (set only when the log filter
/// lets them through: see `telemetry::init`).
pub(super) fn write_json_to(writer: NonBlocking) {
    let _ = JSON.set(writer);
}

/// Writes `a`'s access line itself when lines are JSON; `false` when they are not (the
/// caller then writes it as a `tracing` event).
pub(super) fn write(a: &Answered<'_>, trace_id: Option<&str>) -> bool {
    let Some(writer) = JSON.get() else {
        return false;
    };
    LINE.with(|line| {
        let Ok(mut line) = line.try_borrow_mut() else {
            return;
        };
        line.clear();
        format(&mut line, a, trace_id);
        let _ = writer.clone().write_all(&line);
    });
    true
}

/// The line, as `tracing-subscriber`'s flattened JSON format writes an event: timestamp,
/// level, message, the fields in order, target. Strings go through serde_json, as there
/// (a request id is the client's text); writes to a `Vec` do not fail.
fn format(out: &mut Vec<u8>, a: &Answered<'_>, trace_id: Option<&str>) {
    let t = &a.tally;
    out.extend_from_slice(b"{\"timestamp\":\"");
    let _ = SystemTime.format_time(&mut Writer::new(&mut Utf8(out)));
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"answered\"");
    let strings = [
        ("listener", a.listener),
        ("http.request.method", a.method),
        ("http.route", a.route),
    ];
    for (name, value) in strings {
        field(out, name, value);
    }
    let _ = write!(
        out,
        ",\"http.response.status_code\":{},\"duration_ms\":{:?},\"partner_ms\":{:?}",
        a.status,
        a.elapsed.as_secs_f64() * 1000.0,
        t.partner_wait.as_secs_f64() * 1000.0,
    );
    field(out, "request_id", a.request_id.unwrap_or("-"));
    field(out, "trace_id", trace_id.unwrap_or("-"));
    match a.client {
        // An address has no character JSON escapes.
        Some(ip) => {
            let _ = write!(out, ",\"client.address\":\"{ip}\"");
        }
        None => out.extend_from_slice(b",\"client.address\":\"-\""),
    }
    let _ = write!(
        out,
        ",\"sources.live\":{},\"sources.cached\":{},\"sources.stale\":{},\
         \"sources.failed\":{},\"sources.skipped\":{},\"target\":\"mallgate::access\"}}",
        t.live, t.cached, t.stale, t.failed, t.skipped
    );
    out.push(b'\n');
}

/// `,"name":"value"`, the value quoted and escaped by serde_json.
fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    let _ = serde_json::to_writer(&mut *out, value);
}

/// The line's bytes as a `fmt::Write` (for the timestamp formatter).
struct Utf8<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Utf8<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::telemetry::request::SourceTally;

    #[test]
    fn the_line_is_the_json_object_tracing_writes() {
        let tally = SourceTally {
            live: 3,
            failed: 1,
            partner_wait: Duration::from_micros(2500),
            ..SourceTally::default()
        };
        let a = Answered {
            listener: "public",
            method: "GET",
            route: "/v1/products",
            status: 200,
            elapsed: Duration::from_micros(3250),
            request_id: Some("a \"quoted\"\n\u{1}id\\ é"),
            client: Some(std::net::IpAddr::from([127, 0, 0, 1])),
            tally,
        };
        let mut bytes = Vec::new();
        format(&mut bytes, &a, Some("0af7651916cd43dd8448eb211c80319c"));
        let line = String::from_utf8(bytes).expect("UTF-8");
        assert!(line.ends_with("}\n"), "{line}");
        // Floats as serde_json writes them (`0.0`, not `0`): stores that infer a field's
        // type from its first value see a float.
        let idle = Answered {
            tally: SourceTally::default(),
            ..a
        };
        let mut zero = Vec::new();
        format(&mut zero, &idle, None);
        let zero = String::from_utf8(zero).expect("UTF-8");
        assert!(zero.contains("\"partner_ms\":0.0,"), "{zero}");
        let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "answered");
        assert_eq!(v["target"], "mallgate::access");
        assert_eq!(v["http.route"], "/v1/products");
        assert_eq!(v["http.response.status_code"], 200);
        assert_eq!(v["duration_ms"], 3.25);
        assert_eq!(v["partner_ms"], 2.5);
        assert_eq!(v["request_id"], "a \"quoted\"\n\u{1}id\\ é");
        assert_eq!(v["trace_id"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(v["client.address"], "127.0.0.1");
        assert_eq!(v["sources.live"], 3);
        assert_eq!(v["sources.failed"], 1);
        assert_eq!(v["sources.cached"], 0);
        let stamp = v["timestamp"].as_str().expect("a timestamp");
        stamp
            .parse::<jiff::Timestamp>()
            .expect("an RFC 3339 timestamp");
        let keys: Vec<&str> = v
            .as_object()
            .expect("an object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys.len(), 18, "{keys:?}");
    }
}
