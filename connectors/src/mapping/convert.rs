//! Conversions between jq values and `serde_json` values. Numbers keep their decimal text
//! on the way in; on the way out an exact decimal becomes an integer when it is one.

use jaq_json::{Num, Val};
use serde_json::{Number, Value};

use crate::decode::{array, object, text};

/// A JSON value as a jq value. Non-integral numbers keep their text (`849.99`).
pub fn to_val(value: &Value) -> Val {
    match value {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Val::Num(Num::from_integral(i)),
            None => Val::Num(Num::Dec(jaq_json::Rc::new(n.to_string()))),
        },
        Value::String(s) => text(s.clone()),
        Value::Array(items) => array(items.iter().map(to_val).collect()),
        Value::Object(map) => object(map.iter().map(|(k, v)| (k.clone(), to_val(v)))),
    }
}

/// A jq value as JSON, or why it is not one (a mapping output must be plain JSON).
/// `budget` counts bytes of strings and nodes; the conversion stops when it runs out.
pub fn to_json(val: &Val, budget: &mut usize) -> Result<Value, String> {
    *budget = budget
        .checked_sub(8)
        .ok_or("output is larger than the mapping output cap")?;
    Ok(match val {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => Value::Number(number(n)?),
        Val::TStr(bytes) | Val::BStr(bytes) => {
            *budget = budget
                .checked_sub(bytes.len())
                .ok_or("output is larger than the mapping output cap")?;
            Value::String(String::from_utf8_lossy(bytes).into_owned())
        }
        Val::Arr(items) => Value::Array(
            items
                .iter()
                .map(|v| to_json(v, budget))
                .collect::<Result<_, _>>()?,
        ),
        Val::Obj(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (k, v) in map.iter() {
                let key = match k {
                    Val::TStr(bytes) | Val::BStr(bytes) => {
                        String::from_utf8_lossy(bytes).into_owned()
                    }
                    other => return Err(format!("object key {other} is not a string")),
                };
                out.insert(key, to_json(v, budget)?);
            }
            Value::Object(out)
        }
    })
}

fn number(n: &Num) -> Result<Number, String> {
    match n {
        Num::Int(i) => Ok(Number::from(*i as i64)),
        Num::Float(f) => Number::from_f64(*f).ok_or_else(|| format!("{f} is not a JSON number")),
        Num::Dec(text) => {
            let integral = match text.split_once('.') {
                Some((int, frac)) if frac.bytes().all(|b| b == b'0') => int,
                _ => text.as_str(),
            };
            if let Ok(i) = integral.parse::<i64>() {
                return Ok(Number::from(i));
            }
            text.parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .ok_or_else(|| format!("{text} is not a JSON number"))
        }
        Num::BigInt(b) => Err(format!("integer {b} is too large")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_keeps_decimals() {
        let v = json!({"a": [1, 849.99, "x", null, true], "b": {"c": -3}});
        let val = to_val(&v);
        assert_eq!(
            val.to_string(),
            r#"{"a":[1,849.99,"x",null,true],"b":{"c":-3}}"#
        );
        let mut budget = 1 << 20;
        assert_eq!(to_json(&val, &mut budget).expect("json"), v);
    }

    #[test]
    fn budget_caps_output() {
        let val = to_val(&json!({"s": "x".repeat(1000)}));
        let mut budget = 100;
        assert!(to_json(&val, &mut budget).is_err());
    }
}
