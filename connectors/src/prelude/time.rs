//! Time: every partner spelling of "when" -> an [`EventTime`] that is exactly as precise as
//! the partner was. RFC 3339 with an offset is `zoned`; epoch milliseconds are instants
//! (`Z` is what they mean); a wall-clock time without an offset takes the zone the caller
//! knows (the location's), else stays `local`; a date alone stays a `date`. A zone is never
//! invented.
//!
//! Accepted: `2026-11-27T09:14:03-05:00`, `...Z`, `2026-11-27 09:14:03`, `2026-11-27T09:14`,
//! `2026-11-27`, `20261127` (`CCYYMMDD`), integers (epoch milliseconds), and prose dates
//! `January 27, 2026, 8:03 am`, `Jan 27, 2026`, `27 January 2026 14:05`. A date and a time
//! in separate fields go through [`split`].

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use jiff::fmt::temporal::Pieces;
use jiff::tz::{Offset, TimeZone};
use mallgate_schemas::{EventTime, EventTimeKind};

/// The zone a caller knows for a time: an IANA name or a fixed offset.
#[derive(Debug, Clone)]
pub enum Zone {
    Named { name: String, tz: TimeZone },
    Fixed(Offset),
}

/// Why a time could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeError {
    NotATime(String),
    UnknownZone(String),
    OutOfRange(String),
}

impl std::fmt::Display for TimeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotATime(t) => write!(f, "`{t}` is not a date or time this prelude reads"),
            Self::UnknownZone(z) => write!(f, "`{z}` is neither an IANA time zone nor an offset"),
            Self::OutOfRange(t) => write!(f, "`{t}` is out of range"),
        }
    }
}

impl Zone {
    /// `America/Chicago`, `UTC`, `+01:00`, `-0500`, `-05`, `-5`, `-5.0`, `+5.5`, `Z`.
    pub fn parse(text: &str) -> Result<Self, TimeError> {
        let t = text.trim();
        let unknown = || TimeError::UnknownZone(text.to_owned());
        if t.eq_ignore_ascii_case("z") {
            return Ok(Self::Fixed(Offset::UTC));
        }
        if let Some(rest) = t.strip_prefix(['+', '-']) {
            let sign = if t.starts_with('-') { -1 } else { 1 };
            let seconds = offset_seconds(rest).ok_or_else(unknown)?;
            return Offset::from_seconds(sign * seconds)
                .map(Self::Fixed)
                .map_err(|_| unknown());
        }
        if t == "0" || t == "0.0" {
            return Ok(Self::Fixed(Offset::UTC));
        }
        if !t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b))
        {
            return Err(unknown());
        }
        let tz = TimeZone::get(t).map_err(|_| unknown())?;
        let name = tz.iana_name().unwrap_or(t).to_owned();
        Ok(Self::Named { name, tz })
    }

    fn offset_at(&self, dt: DateTime) -> Result<(Timestamp, Offset), TimeError> {
        let range = || TimeError::OutOfRange(dt.to_string());
        match self {
            Self::Fixed(offset) => Ok((offset.to_timestamp(dt).map_err(|_| range())?, *offset)),
            Self::Named { tz, .. } => {
                // A wall-clock time in a DST gap or fold: the "compatible" choice (the
                // earlier instant of a fold, later of a gap), as RFC 9557 and Temporal do.
                let zoned = tz
                    .to_ambiguous_zoned(dt)
                    .compatible()
                    .map_err(|_| range())?;
                Ok((zoned.timestamp(), zoned.offset()))
            }
        }
    }

    fn name(&self) -> Option<String> {
        match self {
            Self::Named { name, .. } => Some(name.clone()),
            Self::Fixed(_) => None,
        }
    }
}

/// `HH:MM`, `HHMM`, `HH`, `H`, `H.5` (hours with a decimal fraction) -> seconds.
fn offset_seconds(text: &str) -> Option<i32> {
    let digits = |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
    let (h, m) = if let Some((h, m)) = text.split_once(':') {
        (h, m)
    } else if let Some((h, frac)) = text.split_once('.') {
        let minutes = match frac.trim_end_matches('0') {
            "" => "0",
            "5" => "30",
            "25" => "15",
            "75" => "45",
            _ => return None,
        };
        (h, minutes)
    } else if text.len() == 4 && text.is_ascii() {
        text.split_at(2)
    } else {
        (text, "0")
    };
    if !digits(h) || !digits(m) {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 18 && m < 60).then_some(h * 3600 + m * 60)
}

fn zoned(ts: Timestamp, offset: Offset, time_zone: Option<String>) -> EventTime {
    EventTime {
        kind: EventTimeKind::Zoned,
        value: ts.display_with_offset(offset).to_string(),
        time_zone,
    }
}

fn local_or_zoned(dt: DateTime, zone: Option<&Zone>) -> Result<EventTime, TimeError> {
    match zone {
        Some(zone) => {
            let (ts, offset) = zone.offset_at(dt)?;
            Ok(zoned(ts, offset, zone.name()))
        }
        None => Ok(EventTime {
            kind: EventTimeKind::Local,
            value: dt.strftime("%Y-%m-%dT%H:%M:%S").to_string(),
            time_zone: None,
        }),
    }
}

fn date_only(date: Date, zone: Option<&Zone>) -> EventTime {
    EventTime {
        kind: EventTimeKind::Date,
        value: date.strftime("%Y-%m-%d").to_string(),
        time_zone: zone.and_then(Zone::name),
    }
}

/// A time given as an integer: epoch milliseconds, shown in the zone when one is known.
pub fn from_epoch_ms(ms: i64, zone: Option<&Zone>) -> Result<EventTime, TimeError> {
    let ts = Timestamp::from_millisecond(ms).map_err(|_| TimeError::OutOfRange(ms.to_string()))?;
    Ok(match zone {
        Some(Zone::Named { name, tz }) => zoned(ts, tz.to_offset(ts), Some(name.clone())),
        Some(Zone::Fixed(offset)) => zoned(ts, *offset, None),
        None => EventTime {
            kind: EventTimeKind::Zoned,
            value: ts.to_string(),
            time_zone: None,
        },
    })
}

fn ccyymmdd(text: &str) -> Option<Date> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, md) = text.split_at(4);
    let (m, d) = md.split_at(2);
    Date::new(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?).ok()
}

/// Reads one time value (see the module documentation for the spellings).
pub fn parse(text: &str, zone: Option<&Zone>) -> Result<EventTime, TimeError> {
    let t = text.trim();
    let not_a_time = || TimeError::NotATime(text.to_owned());
    if t.is_empty() || t.len() > 64 {
        return Err(not_a_time());
    }
    if t.len() == 8 && t.bytes().all(|b| b.is_ascii_digit()) {
        // Eight digits are a CCYYMMDD date, never an epoch.
        return ccyymmdd(t)
            .map(|d| date_only(d, zone))
            .ok_or_else(not_a_time);
    }
    if (t.bytes().all(|b| b.is_ascii_digit()) || (t.starts_with('-') && t.len() > 1))
        && let Ok(ms) = t.parse::<i64>()
    {
        return from_epoch_ms(ms, zone);
    }
    if let Ok(pieces) = Pieces::parse(t) {
        let date = pieces.date();
        let Some(time) = pieces.time() else {
            return Ok(date_only(date, zone));
        };
        let dt = date.to_datetime(time);
        if let Some(offset) = pieces.offset() {
            let offset = offset.to_numeric_offset();
            let ts = offset.to_timestamp(dt).map_err(|_| not_a_time())?;
            // Keep the partner's offset; name the caller's zone only if it agrees.
            let name = match zone {
                Some(Zone::Named { name, tz }) if tz.to_offset(ts) == offset => Some(name.clone()),
                _ => None,
            };
            let mut time = zoned(ts, offset, name);
            if matches!(
                pieces.offset(),
                Some(jiff::fmt::temporal::PiecesOffset::Zulu)
            ) {
                time.value = ts.to_string();
            }
            return Ok(time);
        }
        if let Ok(Some(tz)) = pieces.to_time_zone() {
            let name = tz.iana_name().map(str::to_owned);
            let zone = match name {
                Some(name) => Zone::Named { name, tz },
                None => return Err(not_a_time()),
            };
            return local_or_zoned(dt, Some(&zone));
        }
        return local_or_zoned(dt, zone);
    }
    match prose(t) {
        Some((date, Some(time))) => local_or_zoned(date.to_datetime(time), zone),
        Some((date, None)) => Ok(date_only(date, zone)),
        None => Err(not_a_time()),
    }
}

/// A date and a time of day in separate fields (SwiftShip's `date: "20261123"`,
/// `time: "063800"`), with an optional offset or zone. No time (null or empty) is a date.
pub fn split(date: &str, time: Option<&str>, zone: Option<&Zone>) -> Result<EventTime, TimeError> {
    let bad_date = || TimeError::NotATime(date.to_owned());
    let day = match ccyymmdd(date.trim()) {
        Some(d) => d,
        None => match Pieces::parse(date.trim()) {
            Ok(p) if p.time().is_none() && p.offset().is_none() => p.date(),
            _ => return Err(bad_date()),
        },
    };
    let Some(time) = time.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(date_only(day, zone));
    };
    let clock = clock(time).ok_or_else(|| TimeError::NotATime(time.to_owned()))?;
    local_or_zoned(day.to_datetime(clock), zone)
}

/// `063800`, `0638`, `06:38`, `6:38:15`, `8:03 am`, `8:03pm`, `12:00 AM`.
fn clock(text: &str) -> Option<Time> {
    let lower = text.trim().to_ascii_lowercase();
    let (body, meridiem) = if let Some(b) = lower.strip_suffix("am") {
        (b.trim_end().trim_end_matches('.').trim_end(), Some(false))
    } else if let Some(b) = lower.strip_suffix("a.m.") {
        (b.trim_end(), Some(false))
    } else if let Some(b) = lower.strip_suffix("pm") {
        (b.trim_end().trim_end_matches('.').trim_end(), Some(true))
    } else if let Some(b) = lower.strip_suffix("p.m.") {
        (b.trim_end(), Some(true))
    } else {
        (lower.as_str(), None)
    };
    let parts: Vec<&str> = if body.contains(':') {
        body.split(':').collect()
    } else if body.len() == 4 || body.len() == 6 {
        body.as_bytes()
            .chunks(2)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .collect()
    } else {
        return None;
    };
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut hour: i8 = parts[0].parse().ok()?;
    let minute: i8 = parts[1].parse().ok()?;
    let second: i8 = parts.get(2).map_or(Some(0), |s| s.parse().ok())?;
    if let Some(pm) = meridiem {
        if !(1..=12).contains(&hour) {
            return None;
        }
        hour = match (hour, pm) {
            (12, false) => 0,
            (12, true) => 12,
            (h, true) => h + 12,
            (h, false) => h,
        };
    }
    Time::new(hour, minute, second, 0).ok()
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

fn month(word: &str) -> Option<i8> {
    let w = word.trim_end_matches('.').to_ascii_lowercase();
    if w.len() < 3 {
        return None;
    }
    MONTHS
        .iter()
        .position(|m| {
            *m == w || (w.len() == 3 && m.starts_with(&w)) || (w == "sept" && *m == "september")
        })
        .and_then(|i| i8::try_from(i + 1).ok())
}

/// `January 27, 2026, 8:03 am`, `Jan 27 2026`, `27 January 2026 14:05` -> date and time.
pub fn prose(text: &str) -> Option<(Date, Option<Time>)> {
    let tokens: Vec<&str> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .collect();
    let number = |t: &str| {
        t.trim_end_matches(['s', 't', 'n', 'd', 'r', 'h'])
            .parse::<i16>()
            .ok()
    };
    let (m, d, y, rest) = match tokens.as_slice() {
        [a, b, c, rest @ ..] if month(a).is_some() => {
            (month(a)?, number(b)?, c.parse::<i16>().ok()?, rest)
        }
        [a, b, c, rest @ ..] if month(b).is_some() => {
            (month(b)?, number(a)?, c.parse::<i16>().ok()?, rest)
        }
        _ => return None,
    };
    let date = Date::new(y, m, i8::try_from(d).ok()?).ok()?;
    let time = match rest {
        [] => None,
        [t] => Some(clock(t)?),
        [t, meridiem] => Some(clock(&format!("{t} {meridiem}"))?),
        _ => return None,
    };
    Some((date, time))
}

/// The instant of a time for `as_of`-style fields: a zoned time's value, a date's start of
/// day in a known zone; `None` for local times and dates without a zone.
pub fn instant(time: &EventTime, zone: Option<&Zone>) -> Option<String> {
    match time.kind {
        EventTimeKind::Zoned => Some(time.value.clone()),
        EventTimeKind::Local => None,
        EventTimeKind::Date => {
            let zone = zone?;
            let date = Pieces::parse(&time.value).ok()?.date();
            let (ts, offset) = zone.offset_at(date.to_datetime(Time::midnight())).ok()?;
            Some(ts.display_with_offset(offset).to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, zone: Option<&str>) -> (EventTimeKind, String, Option<String>) {
        let zone = zone.map(|z| Zone::parse(z).expect("zone"));
        let t = parse(text, zone.as_ref()).expect(text);
        (t.kind, t.value, t.time_zone)
    }

    use EventTimeKind::{Date as D, Local as L, Zoned as Z};

    #[test]
    fn offsets_are_kept() {
        assert_eq!(
            at("2026-11-27T09:14:03-05:00", None),
            (Z, "2026-11-27T09:14:03-05:00".into(), None)
        );
        assert_eq!(
            at("2026-11-27T14:14:03Z", None),
            (Z, "2026-11-27T14:14:03Z".into(), None)
        );
        assert_eq!(
            at("2026-11-27 09:14:03.250+01:00", None),
            (Z, "2026-11-27T09:14:03.25+01:00".into(), None)
        );
        assert_eq!(
            at("2026-11-27T09:14:03-06:00", Some("America/Chicago")),
            (
                Z,
                "2026-11-27T09:14:03-06:00".into(),
                Some("America/Chicago".into())
            ),
            "the zone is named when it agrees with the offset"
        );
        assert_eq!(
            at("2026-11-27T09:14:03-05:00", Some("America/Chicago")).2,
            None
        );
    }

    #[test]
    fn zoneless_times_use_the_known_zone_or_stay_local() {
        assert_eq!(
            at("2026-11-27T09:14:03", None),
            (L, "2026-11-27T09:14:03".into(), None)
        );
        assert_eq!(
            at("2026-11-27 09:14", None),
            (L, "2026-11-27T09:14:00".into(), None)
        );
        assert_eq!(
            at("2026-11-27T09:14:03", Some("America/Chicago")),
            (
                Z,
                "2026-11-27T09:14:03-06:00".into(),
                Some("America/Chicago".into())
            )
        );
        assert_eq!(
            at("2026-07-01T09:00", Some("America/Chicago")).1,
            "2026-07-01T09:00:00-05:00",
            "summer time"
        );
        assert_eq!(
            at("2026-11-27T09:14:03", Some("+05:30")),
            (Z, "2026-11-27T09:14:03+05:30".into(), None)
        );
    }

    #[test]
    fn dates_stay_dates() {
        assert_eq!(at("20261123", None), (D, "2026-11-23".into(), None));
        assert_eq!(
            at("2026-11-23", Some("Europe/Berlin")),
            (D, "2026-11-23".into(), Some("Europe/Berlin".into()))
        );
        assert!(parse("20261323", None).is_err(), "month 13");
    }

    #[test]
    fn epoch_milliseconds_are_instants() {
        assert_eq!(
            at("1795433880000", None),
            (Z, "2026-11-23T11:38:00Z".into(), None)
        );
        let t = from_epoch_ms(
            1_795_433_880_123,
            Some(&Zone::parse("America/New_York").expect("zone")),
        )
        .expect("ms");
        assert_eq!(t.value, "2026-11-23T06:38:00.123-05:00");
        assert_eq!(t.time_zone.as_deref(), Some("America/New_York"));
    }

    #[test]
    fn prose_dates() {
        assert_eq!(
            at("January 27, 2026, 8:03 am", None),
            (L, "2026-01-27T08:03:00".into(), None)
        );
        assert_eq!(at("Jan 27, 2026 8:03 pm", None).1, "2026-01-27T20:03:00");
        assert_eq!(
            at("27 January 2026 12:05 AM", None).1,
            "2026-01-27T00:05:00"
        );
        assert_eq!(at("February 3, 2026", None), (D, "2026-02-03".into(), None));
        assert_eq!(at("Sept 3rd, 2026", None), (D, "2026-09-03".into(), None));
        for bad in [
            "Smarch 3, 2026",
            "January 32, 2026",
            "soon",
            "13:00 pm January 1 2026",
            "",
        ] {
            assert!(parse(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn split_date_and_time() {
        let sw = |d, t, z: Option<&str>| {
            let z = z.map(|z| Zone::parse(z).expect("zone"));
            split(d, t, z.as_ref()).map(|e| (e.kind, e.value))
        };
        assert_eq!(
            sw("20261123", Some("063800"), None),
            Ok((L, "2026-11-23T06:38:00".into()))
        );
        assert_eq!(
            sw("20261123", Some("063800"), Some("-5.0")),
            Ok((Z, "2026-11-23T06:38:00-05:00".into()))
        );
        assert_eq!(
            sw("20261123", Some("0638"), Some("-05:00")),
            Ok((Z, "2026-11-23T06:38:00-05:00".into()))
        );
        assert_eq!(sw("2026-11-23", None, None), Ok((D, "2026-11-23".into())));
        assert_eq!(sw("20261123", Some(""), None), Ok((D, "2026-11-23".into())));
        assert!(sw("20261123", Some("25:00"), None).is_err());
        assert!(sw("tomorrow", Some("0638"), None).is_err());
    }

    #[test]
    fn zones_parse() {
        for ok in [
            "UTC",
            "America/Chicago",
            "Z",
            "+01:00",
            "-0500",
            "-05",
            "-5",
            "-5.0",
            "+5.5",
            "+05:45",
        ] {
            assert!(Zone::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "Mars/Olympus",
            "+25:00",
            "-5.3",
            "EST5EDT; rm -rf",
            "../etc/passwd",
            "",
        ] {
            assert!(Zone::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn instants_for_as_of() {
        let chicago = Zone::parse("America/Chicago").expect("zone");
        let date = parse("20261123", None).expect("date");
        assert_eq!(
            instant(&date, Some(&chicago)).as_deref(),
            Some("2026-11-23T00:00:00-06:00")
        );
        assert_eq!(instant(&date, None), None);
        let local = parse("2026-11-23T08:00", None).expect("local");
        assert_eq!(instant(&local, None), None);
    }
}
