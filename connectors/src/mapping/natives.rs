//! The mall prelude as jq natives, plus the sandbox's capped `range`.
//!
//! Natives are plain `fn` pointers, so per-run state (warnings, the generator budget) lives
//! in thread locals that the engine resets before and drains after each run: a run is one
//! synchronous call on one thread.

use std::cell::{Cell, RefCell};

use jaq_core::box_iter::box_once;
use jaq_core::native::{Fun, bome, run, v};
use jaq_core::{Error, Exn};
use jaq_json::{Num, Val};

use super::D;
use crate::decode::{object, text};
use crate::prelude::{gtin, money, text as prose_text, time, tracking, units};

/// Elements a program may draw from `range` in one run.
pub const RANGE_BUDGET: u64 = 100_000;

thread_local! {
    static WARNINGS: RefCell<Vec<mallgate_schemas::Warning>> = const { RefCell::new(Vec::new()) };
    static RANGE_LEFT: Cell<u64> = const { Cell::new(RANGE_BUDGET) };
}

/// Resets the per-run state of this thread.
pub(crate) fn begin_run() {
    WARNINGS.with_borrow_mut(Vec::clear);
    RANGE_LEFT.set(RANGE_BUDGET);
}

/// The warnings the prelude raised since [`begin_run`].
pub(crate) fn take_warnings() -> Vec<mallgate_schemas::Warning> {
    WARNINGS.with_borrow_mut(std::mem::take)
}

fn warn(code: &str, message: String) {
    WARNINGS.with_borrow_mut(|w| {
        w.push(mallgate_schemas::Warning {
            code: code.to_owned(),
            message,
            field: None,
        });
    });
}

fn err(message: impl std::fmt::Display) -> Error<Val> {
    Error::str(message)
}

/// The text of a scalar: strings as they are, numbers as their exact decimal text.
fn scalar_text(val: &Val, what: &str) -> Result<String, Error<Val>> {
    match val {
        Val::TStr(b) | Val::BStr(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        Val::Num(Num::Int(i)) => Ok(i.to_string()),
        Val::Num(Num::BigInt(i)) => Ok(i.to_string()),
        Val::Num(Num::Dec(s)) => Ok(s.as_str().to_owned()),
        Val::Num(Num::Float(f)) => {
            warn(
                "float_amount",
                format!("{what} {f} was computed in floating point"),
            );
            Ok(f.to_string())
        }
        other => Err(err(format!(
            "{what} must be a string or a number, not {other}"
        ))),
    }
}

fn money_of(amount: &Val, currency: &Val) -> Result<Val, Error<Val>> {
    let Val::TStr(code) = currency else {
        return Err(err(format!(
            "money: currency must be a string, not {currency}"
        )));
    };
    let code = String::from_utf8_lossy(code).into_owned();
    let amount = scalar_text(amount, "money: amount")?;
    let (m, note) = money::parse(&amount, &code).map_err(|e| err(format!("money: {e}")))?;
    if let Some(note) = note {
        warn(note.code, note.message);
    }
    let mut members = vec![
        (
            "amount_minor".to_owned(),
            Val::from(m.amount_minor as isize),
        ),
        ("currency".to_owned(), text(m.currency)),
    ];
    if let Some(exact) = m.exact {
        members.push(("exact".to_owned(), text(exact)));
    }
    Ok(object(members))
}

fn gtin_of(raw: &Val) -> Result<Val, Error<Val>> {
    if matches!(raw, Val::Null) {
        return Ok(object([
            ("valid".to_owned(), Val::Bool(false)),
            ("value".to_owned(), Val::Null),
            ("raw".to_owned(), Val::Null),
        ]));
    }
    let code = scalar_text(raw, "gtin14: code")?;
    let g = gtin::normalize(&code);
    if g.gtin14.is_none() {
        warn(
            "invalid_gtin",
            format!("`{code}` is not a valid GTIN; kept raw, never merged"),
        );
    }
    Ok(object([
        ("valid".to_owned(), Val::Bool(g.gtin14.is_some())),
        ("value".to_owned(), g.gtin14.map_or(Val::Null, text)),
        ("raw".to_owned(), text(g.raw)),
    ]))
}

/// An integral number as an integer (`3`, `1e9`, `2.0`), else `None`.
fn integral(val: &Val) -> Option<i64> {
    let f = match val {
        Val::Num(Num::Int(i)) => return Some(*i as i64),
        Val::Num(Num::Dec(s)) => s.parse::<f64>().ok()?,
        Val::Num(Num::Float(f)) => *f,
        Val::Num(Num::BigInt(b)) => b.to_string().parse::<f64>().ok()?,
        _ => return None,
    };
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

/// `range($from; $upto)`, drawing from the run's budget.
fn capped_range<'a>(from: &Val, upto: &Val) -> jaq_core::ValXs<'a, Val> {
    let bounds = (|| {
        let (Some(from), Some(upto)) = (integral(from), integral(upto)) else {
            return Err(err("range: bounds must be integers"));
        };
        let count = u64::try_from(upto.saturating_sub(from)).unwrap_or(0);
        if count > RANGE_LEFT.get() {
            return Err(err(format!(
                "range of {count} elements exceeds the sandbox budget of {RANGE_BUDGET} per run"
            )));
        }
        RANGE_LEFT.set(RANGE_LEFT.get() - count);
        Ok((from, upto))
    })();
    match bounds {
        Ok((from, upto)) => Box::new((from..upto).map(|i| Ok(Val::from(i as isize)))),
        Err(e) => box_once(Err(Exn::from(e))),
    }
}

fn string_of(val: &Val, what: &str) -> Result<String, Error<Val>> {
    match val {
        Val::TStr(b) | Val::BStr(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        other => Err(err(format!("{what} must be a string, not {other}"))),
    }
}

/// A value the prelude built (a schema type) as a jq value.
fn model<T: serde::Serialize>(value: &T) -> Result<Val, Error<Val>> {
    serde_json::to_value(value)
        .map(|v| super::to_val(&v))
        .map_err(|e| err(format!("prelude value: {e}")))
}

fn zone_of(val: &Val, what: &str) -> Result<Option<time::Zone>, Error<Val>> {
    match val {
        Val::Null => Ok(None),
        other => {
            let text = string_of(other, what)?;
            time::Zone::parse(&text)
                .map(Some)
                .map_err(|e| err(format!("{what}: {e}")))
        }
    }
}

fn grams_of(amount: &Val, unit: &Val) -> Result<Val, Error<Val>> {
    if matches!(amount, Val::Null) {
        return Ok(Val::Null);
    }
    let unit = string_of(unit, "grams: unit")?;
    let value = scalar_text(amount, "grams: value")?;
    let w = units::grams(&value, &unit).map_err(|e| err(format!("grams: {e}")))?;
    model(&w)
}

fn grams_lb_oz_of(pounds: &Val, ounces: &Val) -> Result<Val, Error<Val>> {
    let pounds = scalar_text(pounds, "grams_lb_oz: pounds")?;
    let ounces = scalar_text(ounces, "grams_lb_oz: ounces")?;
    let w = units::grams_lb_oz(&pounds, &ounces).map_err(|e| err(format!("grams_lb_oz: {e}")))?;
    model(&w)
}

fn dimensions_of(input: &Val, unit: &Val) -> Result<Val, Error<Val>> {
    let unit = string_of(unit, "dimensions: unit")?;
    let side = |key: &str, index: usize| -> Result<String, Error<Val>> {
        let v = match input {
            Val::Arr(items) if items.len() == 3 => items[index].clone(),
            Val::Obj(map) => map.get(&text(key)).cloned().unwrap_or(Val::Null),
            other => {
                return Err(err(format!(
                    "dimensions: input must be [length, width, height] or an object with those keys, not {other}"
                )));
            }
        };
        scalar_text(&v, &format!("dimensions: {key}"))
    };
    let d = units::dimensions(
        &side("length", 0)?,
        &side("width", 1)?,
        &side("height", 2)?,
        &unit,
    )
    .map_err(|e| err(format!("dimensions: {e}")))?;
    model(&d)
}

fn pounds_ounces_of(grams: &Val) -> Result<Val, Error<Val>> {
    let g = scalar_text(grams, "pounds_ounces: grams")?;
    let (pounds, ounces) =
        units::pounds_ounces(&g).map_err(|e| err(format!("pounds_ounces: {e}")))?;
    Ok(object([
        ("pounds".to_owned(), Val::from(pounds as isize)),
        (
            "ounces".to_owned(),
            Val::Num(Num::Dec(jaq_json::Rc::new(ounces.to_string()))),
        ),
    ]))
}

fn weight_text_of(grams: &Val, unit: &Val) -> Result<Val, Error<Val>> {
    let g = scalar_text(grams, "weight_text: grams")?;
    let unit = string_of(unit, "weight_text: unit")?;
    units::weight_text(&g, &unit)
        .map(text)
        .map_err(|e| err(format!("weight_text: {e}")))
}

fn event_time(
    input: &Val,
    zone: Option<&time::Zone>,
) -> Result<Option<mallgate_schemas::EventTime>, Error<Val>> {
    let parsed = match input {
        Val::Null => return Ok(None),
        Val::Num(Num::Int(ms)) => time::from_epoch_ms(*ms as i64, zone),
        other => time::parse(&scalar_text(other, "ts: value")?, zone),
    };
    parsed.map(Some).map_err(|e| err(format!("ts: {e}")))
}

fn ts_of(input: &Val, zone: &Val) -> Result<Val, Error<Val>> {
    let zone = zone_of(zone, "ts: zone")?;
    match event_time(input, zone.as_ref())? {
        Some(t) => model(&t),
        None => Ok(Val::Null),
    }
}

fn instant_of(input: &Val, zone: &Val) -> Result<Val, Error<Val>> {
    let zone = zone_of(zone, "instant: zone")?;
    Ok(event_time(input, zone.as_ref())?
        .and_then(|t| time::instant(&t, zone.as_ref()))
        .map_or(Val::Null, text))
}

fn ts_split_of(date: &Val, clock: &Val, zone: &Val) -> Result<Val, Error<Val>> {
    if matches!(date, Val::Null) {
        return Ok(Val::Null);
    }
    let zone = zone_of(zone, "ts_split: zone")?;
    let date = scalar_text(date, "ts_split: date")?;
    let clock = match clock {
        Val::Null => None,
        other => Some(scalar_text(other, "ts_split: time")?),
    };
    let t = time::split(&date, clock.as_deref(), zone.as_ref())
        .map_err(|e| err(format!("ts_split: {e}")))?;
    model(&t)
}

fn status_of(input: &Val, table: &Val) -> Result<Val, Error<Val>> {
    let Val::Obj(map) = table else {
        return Err(err(format!(
            "status: the table must be an object of code -> status, not {table}"
        )));
    };
    let mut entries = Vec::with_capacity(map.len());
    for (k, v) in map.iter() {
        let key = string_of(k, "status: table key")?;
        let name = string_of(v, "status: table value")?;
        let s = tracking::status_named(&name).ok_or_else(|| {
            err(format!(
                "status: the table maps `{key}` to `{name}`, which is not a tracking status"
            ))
        })?;
        entries.push((key, s));
    }
    let codes: Vec<String> = match input {
        Val::Arr(items) => items
            .iter()
            .filter(|v| !matches!(v, Val::Null))
            .map(|v| scalar_text(v, "status: code"))
            .collect::<Result<_, _>>()?,
        Val::Null => Vec::new(),
        other => vec![scalar_text(other, "status: code")?],
    };
    if codes.is_empty() {
        warn(
            "unmapped_status",
            "no status code given; reported as unknown".to_owned(),
        );
        return Ok(text("unknown"));
    }
    let (s, note) = tracking::status(codes.iter().map(String::as_str), &entries);
    if let Some(note) = note {
        warn(note.code, note.message);
    }
    Ok(text(tracking::status_name(s)))
}

fn prose_event_of(input: &Val, zone: &Val) -> Result<Val, Error<Val>> {
    let line = string_of(input, "prose_event: line")?;
    let zone = zone_of(zone, "prose_event: zone")?;
    let e = tracking::prose_event(&line)
        .ok_or_else(|| err(format!("prose_event: no event and date in `{line}`")))?;
    let when = match e.time {
        Some(t) => time::split(
            &e.date.to_string(),
            Some(&t.strftime("%H:%M:%S").to_string()),
            zone.as_ref(),
        ),
        None => time::split(&e.date.to_string(), None, zone.as_ref()),
    }
    .map_err(|e| err(format!("prose_event: {e}")))?;
    let mut location = Vec::new();
    for (key, value) in [
        ("city", e.city),
        ("region", e.region),
        ("postal_code", e.postal_code),
    ] {
        if let Some(v) = value {
            location.push((key.to_owned(), text(v)));
        }
    }
    let mut members = vec![
        ("raw_code".to_owned(), text(e.event)),
        ("description".to_owned(), text(line.trim())),
        ("time".to_owned(), model(&when)?),
    ];
    if !location.is_empty() {
        members.push(("location".to_owned(), object(location)));
    }
    Ok(object(members))
}

fn text_fn(input: &Val, name: &str, f: fn(&str) -> String) -> Result<Val, Error<Val>> {
    match input {
        Val::Null => Ok(Val::Null),
        Val::TStr(b) | Val::BStr(b) => Ok(text(f(&String::from_utf8_lossy(b)))),
        other => Err(err(format!("{name}: input must be a string, not {other}"))),
    }
}

/// The prelude natives and the sandbox's replacements.
pub(crate) fn funs() -> impl Iterator<Item = Fun<D>> {
    let natives: [jaq_core::native::Filter<jaq_core::RunPtr<D>>; 18] = [
        ("money", v(1), |mut cv| {
            let currency = cv.0.pop_var();
            bome(if matches!(cv.1, Val::Null) {
                Ok(Val::Null)
            } else {
                money_of(&cv.1, &currency)
            })
        }),
        ("money", v(2), |mut cv| {
            let currency = cv.0.pop_var();
            let amount = cv.0.pop_var();
            bome(if matches!(amount, Val::Null) {
                Ok(Val::Null)
            } else {
                money_of(&amount, &currency)
            })
        }),
        ("gtin14", v(0), |cv| bome(gtin_of(&cv.1))),
        ("grams", v(1), |mut cv| {
            let unit = cv.0.pop_var();
            bome(grams_of(&cv.1, &unit))
        }),
        ("grams_lb_oz", v(2), |mut cv| {
            let ounces = cv.0.pop_var();
            let pounds = cv.0.pop_var();
            bome(grams_lb_oz_of(&pounds, &ounces))
        }),
        ("dimensions", v(1), |mut cv| {
            let unit = cv.0.pop_var();
            bome(dimensions_of(&cv.1, &unit))
        }),
        ("pounds_ounces", v(0), |cv| bome(pounds_ounces_of(&cv.1))),
        ("weight_text", v(1), |mut cv| {
            let unit = cv.0.pop_var();
            bome(weight_text_of(&cv.1, &unit))
        }),
        ("ts", v(1), |mut cv| {
            let zone = cv.0.pop_var();
            bome(ts_of(&cv.1, &zone))
        }),
        ("instant", v(1), |mut cv| {
            let zone = cv.0.pop_var();
            bome(instant_of(&cv.1, &zone))
        }),
        ("ts_split", v(3), |mut cv| {
            let zone = cv.0.pop_var();
            let clock = cv.0.pop_var();
            let date = cv.0.pop_var();
            bome(ts_split_of(&date, &clock, &zone))
        }),
        ("status", v(1), |mut cv| {
            let table = cv.0.pop_var();
            bome(status_of(&cv.1, &table))
        }),
        ("prose_event", v(0), |cv| {
            bome(prose_event_of(&cv.1, &Val::Null))
        }),
        ("prose_event", v(1), |mut cv| {
            let zone = cv.0.pop_var();
            bome(prose_event_of(&cv.1, &zone))
        }),
        ("clean_text", v(0), |cv| {
            bome(text_fn(&cv.1, "clean_text", prose_text::clean_text))
        }),
        ("html_unescape", v(0), |cv| {
            bome(text_fn(&cv.1, "html_unescape", prose_text::html_unescape))
        }),
        ("strip_html", v(0), |cv| {
            bome(text_fn(&cv.1, "strip_html", prose_text::strip_html))
        }),
        ("range", v(2), |mut cv| {
            let upto = cv.0.pop_var();
            let from = cv.0.pop_var();
            capped_range(&from, &upto)
        }),
    ];
    natives.into_iter().map(run::<D>)
}
