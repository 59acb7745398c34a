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
use crate::prelude::{gtin, money};

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

/// The prelude natives and the sandbox's replacements.
pub(crate) fn funs() -> impl Iterator<Item = Fun<D>> {
    let natives: [jaq_core::native::Filter<jaq_core::RunPtr<D>>; 3] = [
        ("money", v(1), |mut cv| {
            let currency = cv.0.pop_var();
            bome(money_of(&cv.1, &currency))
        }),
        ("gtin14", v(0), |cv| bome(gtin_of(&cv.1))),
        ("range", v(2), |mut cv| {
            let upto = cv.0.pop_var();
            let from = cv.0.pop_var();
            capped_range(&from, &upto)
        }),
    ];
    natives.into_iter().map(run::<D>)
}
