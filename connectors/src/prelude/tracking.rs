//! Tracking: carrier status codes through a connector's table into the one normalized
//! status enum (unmapped codes become `unknown`, with the raw code kept and a note), and
//! ParcelPost-style prose lines read into their parts.

use jiff::civil::{Date, Time};
use mallgate_schemas::TrackingStatus;

use super::Note;
use super::time::prose;

/// A normalized status by its schema name (`in_transit`).
pub fn status_named(name: &str) -> Option<TrackingStatus> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}

/// The schema name of a status.
pub fn status_name(status: TrackingStatus) -> String {
    match serde_json::to_value(status) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "unknown".to_owned(),
    }
}

/// Squeezed, lower-case form of a code or phrase, for a second, forgiving lookup.
fn fold(code: &str) -> String {
    code.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Looks each code up in `table` in turn (most detailed first: SwiftShip's `code` before
/// its coarse `type`), exactly, then case- and space-insensitively. No match is `unknown`
/// with a note naming every code tried.
pub fn status<'a>(
    codes: impl IntoIterator<Item = &'a str> + Clone,
    table: &[(String, TrackingStatus)],
) -> (TrackingStatus, Option<Note>) {
    for code in codes.clone() {
        if let Some((_, s)) = table.iter().find(|(k, _)| k == code) {
            return (*s, None);
        }
    }
    for code in codes.clone() {
        let folded = fold(code);
        if let Some((_, s)) = table.iter().find(|(k, _)| fold(k) == folded) {
            return (*s, None);
        }
    }
    let tried: Vec<String> = codes.into_iter().map(|c| format!("`{c}`")).collect();
    (
        TrackingStatus::Unknown,
        Some(Note {
            code: "unmapped_status",
            message: format!(
                "status {} is not in the connector's table; reported as unknown",
                tried.join(" / ")
            ),
        }),
    )
}

/// One prose tracking line: `Sorting Complete, January 27, 2026, 8:03 am, DES MOINES, IA 50311`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProseEvent {
    /// The event phrase, the carrier's raw code.
    pub event: String,
    pub date: Date,
    pub time: Option<Time>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub postal_code: Option<String>,
}

fn is_postal(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: &[u8]| r.iter().all(u8::is_ascii_digit);
    (b.len() == 5 && digits(b))
        || (b.len() == 10 && b[5] == b'-' && digits(&b[..5]) && digits(&b[6..]))
}

/// Reads a prose line: the event phrase, then a `Month D, YYYY` date, an optional time and
/// an optional `CITY, ST ZIP` place. `None` when no date can be found.
pub fn prose_event(line: &str) -> Option<ProseEvent> {
    let parts: Vec<&str> = line.split(',').map(str::trim).collect();
    // The date is the first "Month D" part followed by a year part.
    let at = (1..parts.len().saturating_sub(1)).find(|&i| {
        parts[i + 1].len() == 4
            && parts[i + 1].bytes().all(|b| b.is_ascii_digit())
            && prose(&format!("{} {}", parts[i], parts[i + 1])).is_some()
    })?;
    let (date, _) = prose(&format!("{} {}", parts[at], parts[at + 1]))?;
    let event = parts[..at].join(", ");
    if event.is_empty() {
        return None;
    }
    let mut rest = &parts[at + 2..];
    let mut time = None;
    if let Some(first) = rest.first()
        && let Some((_, Some(t))) = prose(&format!("{} {} {first}", parts[at], parts[at + 1]))
    {
        time = Some(t);
        rest = &rest[1..];
    }
    let (mut city, mut region, mut postal_code) = (None, None, None);
    match rest {
        [] => {}
        [c, state_zip, ..] => {
            city = Some((*c).to_owned()).filter(|c| !c.is_empty());
            let mut words = state_zip.split_whitespace();
            if let Some(st) = words.next() {
                region = Some(st.to_owned());
            }
            if let Some(zip) = words.next().filter(|z| is_postal(z)) {
                postal_code = Some(zip.to_owned());
            }
        }
        [c] => city = Some((*c).to_owned()).filter(|c| !c.is_empty()),
    }
    Some(ProseEvent {
        event,
        date,
        time,
        city,
        region,
        postal_code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Vec<(String, TrackingStatus)> {
        vec![
            ("MP".into(), TrackingStatus::LabelCreated),
            ("PU".into(), TrackingStatus::PickedUp),
            ("I".into(), TrackingStatus::InTransit),
            ("Sorting Complete".into(), TrackingStatus::InTransit),
        ]
    }

    #[test]
    fn detailed_code_first_then_coarse() {
        assert_eq!(status(["PU", "I"], &table()).0, TrackingStatus::PickedUp);
        assert_eq!(
            status(["MP", "I"], &table()).0,
            TrackingStatus::LabelCreated
        );
        assert_eq!(
            status(["ZZ", "I"], &table()),
            (TrackingStatus::InTransit, None)
        );
        assert_eq!(
            status(["sorting   COMPLETE"], &table()).0,
            TrackingStatus::InTransit
        );
    }

    #[test]
    fn unmapped_codes_are_unknown_with_a_note() {
        let (s, note) = status(["QQ", "Q"], &table());
        assert_eq!(s, TrackingStatus::Unknown);
        let note = note.expect("note");
        assert_eq!(note.code, "unmapped_status");
        assert!(note.message.contains("`QQ` / `Q`"), "{}", note.message);
        assert_eq!(
            status_named("out_for_delivery"),
            Some(TrackingStatus::OutForDelivery)
        );
        assert_eq!(status_named("teleported"), None);
        assert_eq!(
            status_name(TrackingStatus::ReturnToSender),
            "return_to_sender"
        );
    }

    #[test]
    fn prose_lines() {
        let e = prose_event("Sorting Complete, January 27, 2026, 8:03 am, DES MOINES, IA 50311")
            .expect("line");
        assert_eq!(e.event, "Sorting Complete");
        assert_eq!(e.date, jiff::civil::date(2026, 1, 27));
        assert_eq!(e.time, Some(jiff::civil::time(8, 3, 0, 0)));
        assert_eq!(
            (
                e.city.as_deref(),
                e.region.as_deref(),
                e.postal_code.as_deref()
            ),
            (Some("DES MOINES"), Some("IA"), Some("50311"))
        );
        let e = prose_event("Shipping Label Created, USPS Awaiting Item, January 25, 2026")
            .expect("no time or place");
        assert_eq!(e.event, "Shipping Label Created, USPS Awaiting Item");
        assert_eq!((e.time, e.city), (None, None));
        let e = prose_event("Arrived at Post Office, January 28, 2026, 6:10 am, AMES, IA")
            .expect("no zip");
        assert_eq!((e.region.as_deref(), e.postal_code), (Some("IA"), None));
        let e = prose_event("In Transit to Next Facility, January 26, 2026, CHICAGO, IL 60601")
            .expect("no time");
        assert_eq!((e.time, e.city.as_deref()), (None, Some("CHICAGO")));
        assert_eq!(prose_event("Your item is on its way"), None);
        assert_eq!(prose_event("January 27, 2026"), None, "no event phrase");
    }
}
