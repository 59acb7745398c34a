//! ANSI X12 846 (inventory inquiry/advice) -> a jq value.
//!
//! Separators come from the ISA header when present (element separator at byte 3, component
//! separator in ISA16, segment terminator after ISA16), else `*` and `~`. Structure is
//! checked: an ST/SE transaction set whose SE01 counts its segments, and a CTT whose CTT01
//! counts the LIN line items (and whose CTT02, when present, equals the sum of the QTY
//! quantities). Shape:
//!
//! ```json
//! {
//!   "sender": "NORTHWIND", "receiver": "MALLGATE",
//!   "control_number": "0001", "document": "846-000123", "date": "20261126",
//!   "items": [{
//!     "line": "1",
//!     "ids": {"UP": "036000291452", "VP": "NW-1001"},
//!     "quantities": [{"qualifier": "33", "quantity": "10", "unit": "EA"}],
//!     "locations": [{"location": "DC1", "quantity": "5", "unit": "EA"}],
//!     "dates": [{"qualifier": "018", "date": "20261201"}]
//!   }]
//! }
//! ```
//! All values are text, as in the document.

use jaq_json::Val;

use super::{array, error, object, text};
use crate::error::ConnectorError;
use crate::spec::Decode;

fn fail(segment: usize, reason: impl AsRef<str>) -> ConnectorError {
    error(
        Decode::X12,
        format!("segment {segment}: {}", reason.as_ref()),
    )
}

#[derive(Default)]
struct Item {
    line: String,
    ids: Vec<(String, Val)>,
    quantities: Vec<Val>,
    locations: Vec<Val>,
    dates: Vec<Val>,
}

impl Item {
    fn into_val(self) -> Val {
        object([
            ("line".to_owned(), text(self.line)),
            ("ids".to_owned(), object(self.ids)),
            ("quantities".to_owned(), array(self.quantities)),
            ("locations".to_owned(), array(self.locations)),
            ("dates".to_owned(), array(self.dates)),
        ])
    }
}

/// Parses a decimal quantity for the CTT hash total without floating point: returns
/// (integer part, fraction text) summed as scaled integers by the caller.
fn scaled(quantity: &str, scale: u32) -> Option<i128> {
    let (negative, digits) = match quantity.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, quantity),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > scale as usize
        || int.len() > 30
    {
        return None;
    }
    let mut value: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    for i in 0..scale as usize {
        let digit = frac.as_bytes().get(i).map_or(0, |b| i128::from(b - b'0'));
        value = value.checked_mul(10)?.checked_add(digit)?;
    }
    Some(if negative { -value } else { value })
}

/// Quantities are compared at this many decimal places (the CTT02 hash total).
const SCALE: u32 = 6;

/// An 846 document as read so far.
#[derive(Default)]
struct Reader {
    sender: String,
    receiver: String,
    control_number: Option<String>,
    document: String,
    date: String,
    items: Vec<Item>,
    in_set: bool,
    set_segments: usize,
    set_closed: bool,
    ctt: Option<(usize, Vec<String>)>,
    quantity_total: i128,
}

/// Decodes an 846 document.
pub fn decode(body: &str) -> Result<Val, ConnectorError> {
    let body = body.trim();
    let (element_sep, segment_sep) = if body.starts_with("ISA") && body.len() > 106 {
        let bytes = body.as_bytes();
        (char::from(bytes[3]), char::from(bytes[105]))
    } else {
        ('*', '~')
    };
    if element_sep == segment_sep || element_sep.is_alphanumeric() {
        return Err(error(Decode::X12, "ISA header has unusable separators"));
    }
    let mut reader = Reader::default();
    for (index, raw) in body
        .split(segment_sep)
        .map(|s| s.trim_matches(['\r', '\n', ' ']))
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        let elements: Vec<&str> = raw.split(element_sep).collect();
        reader.segment(index + 1, &elements)?;
    }
    reader.check_totals()?;
    Ok(reader.into_val())
}

impl Reader {
    /// Segment number `n` (1-based), split into its elements.
    fn segment(&mut self, n: usize, elements: &[&str]) -> Result<(), ConnectorError> {
        let id = elements[0];
        let get = |i: usize| elements.get(i).copied().unwrap_or("");
        if self.in_set {
            self.set_segments += 1;
        }
        match id {
            "ISA" => {
                self.sender = get(6).trim().to_owned();
                self.receiver = get(8).trim().to_owned();
            }
            "GS" | "GE" | "IEA" => {}
            "ST" => {
                if get(1) != "846" {
                    return Err(fail(n, format!("transaction set is `{}`, not 846", get(1))));
                }
                if self.in_set || self.set_closed {
                    return Err(fail(n, "only one ST transaction set is supported"));
                }
                self.in_set = true;
                self.set_segments = 1;
                self.control_number = Some(get(2).to_owned());
            }
            _ if !self.in_set => {
                return Err(fail(n, format!("`{id}` outside an ST/SE transaction set")));
            }
            "BIA" => {
                self.document = get(3).to_owned();
                self.date = get(4).to_owned();
            }
            "LIN" => {
                let mut item = Item {
                    line: get(1).to_owned(),
                    ..Item::default()
                };
                for pair in elements.get(2..).unwrap_or_default().chunks(2) {
                    if let [qualifier, value] = pair {
                        item.ids.push(((*qualifier).to_owned(), text(*value)));
                    } else {
                        return Err(fail(n, "LIN has a qualifier without an id"));
                    }
                }
                self.items.push(item);
            }
            "QTY" | "SDQ" | "DTM" => self.item_segment(n, elements)?,
            "CTT" => self.ctt = Some((n, elements[1..].iter().map(|s| (*s).to_owned()).collect())),
            "SE" => {
                let declared: usize = get(1)
                    .parse()
                    .map_err(|_| fail(n, format!("SE01 `{}` is not a count", get(1))))?;
                if declared != self.set_segments {
                    return Err(fail(
                        n,
                        format!(
                            "SE01 says {declared} segments, the transaction set has {}",
                            self.set_segments
                        ),
                    ));
                }
                if self.control_number.as_deref() != Some(get(2)) {
                    return Err(fail(n, "SE02 does not match the ST02 control number"));
                }
                self.in_set = false;
                self.set_closed = true;
            }
            // Other segments (N1, REF, ...) carry nothing the mall uses.
            _ => {}
        }
        Ok(())
    }

    /// A QTY, SDQ or DTM segment: detail of the last LIN's item.
    fn item_segment(&mut self, n: usize, elements: &[&str]) -> Result<(), ConnectorError> {
        let id = elements[0];
        let get = |i: usize| elements.get(i).copied().unwrap_or("");
        let Some(item) = self.items.last_mut() else {
            return Err(fail(n, format!("`{id}` before any LIN")));
        };
        match id {
            "QTY" => {
                let quantity = get(2);
                let value = scaled(quantity, SCALE)
                    .ok_or_else(|| fail(n, format!("QTY quantity `{quantity}` is not a number")))?;
                self.quantity_total = self
                    .quantity_total
                    .checked_add(value)
                    .ok_or_else(|| fail(n, "the QTY quantities overflow their sum"))?;
                item.quantities.push(object([
                    ("qualifier".to_owned(), text(get(1))),
                    ("quantity".to_owned(), text(quantity)),
                    ("unit".to_owned(), text(get(3))),
                ]));
            }
            "SDQ" => {
                let unit = get(1);
                for pair in elements.get(3..).unwrap_or_default().chunks(2) {
                    let [location, quantity] = pair else {
                        return Err(fail(n, "SDQ has a location without a quantity"));
                    };
                    if scaled(quantity, SCALE).is_none() {
                        return Err(fail(
                            n,
                            format!("SDQ quantity `{quantity}` is not a number"),
                        ));
                    }
                    item.locations.push(object([
                        ("location".to_owned(), text(*location)),
                        ("quantity".to_owned(), text(*quantity)),
                        ("unit".to_owned(), text(unit)),
                    ]));
                }
            }
            _ => item.dates.push(object([
                ("qualifier".to_owned(), text(get(1))),
                ("date".to_owned(), text(get(2))),
            ])),
        }
        Ok(())
    }

    /// One complete transaction set whose CTT counts its items and, when it gives a hash
    /// total, sums its quantities.
    fn check_totals(&self) -> Result<(), ConnectorError> {
        if self.in_set || !self.set_closed {
            return Err(error(
                Decode::X12,
                "no complete ST/SE transaction set (truncated?)",
            ));
        }
        let Some((ctt_segment, ctt)) = &self.ctt else {
            return Err(error(Decode::X12, "no CTT control total"));
        };
        let ctt_segment = *ctt_segment;
        let declared: usize = ctt
            .first()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| fail(ctt_segment, "CTT01 is not a count"))?;
        if declared != self.items.len() {
            return Err(fail(
                ctt_segment,
                format!(
                    "CTT01 says {declared} line items, the document has {}",
                    self.items.len()
                ),
            ));
        }
        if let Some(hash) = ctt.get(1).filter(|s| !s.is_empty()) {
            let expected = scaled(hash, SCALE)
                .ok_or_else(|| fail(ctt_segment, format!("CTT02 `{hash}` is not a number")))?;
            if expected != self.quantity_total {
                return Err(fail(
                    ctt_segment,
                    format!("CTT02 hash total {hash} does not equal the sum of QTY quantities"),
                ));
            }
        }
        Ok(())
    }

    fn into_val(self) -> Val {
        object([
            ("sender".to_owned(), text(self.sender)),
            ("receiver".to_owned(), text(self.receiver)),
            (
                "control_number".to_owned(),
                text(self.control_number.unwrap_or_default()),
            ),
            ("document".to_owned(), text(self.document)),
            ("date".to_owned(), text(self.date)),
            (
                "items".to_owned(),
                array(self.items.into_iter().map(Item::into_val).collect()),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "ISA*00*          *00*          *ZZ*NORTHWIND      *ZZ*MALLGATE       *261126*0600*U*00401*000000001*0*P*>~\
GS*IB*NORTHWIND*MALLGATE*20261126*0600*1*X*004010~\
ST*846*0001~\
BIA*00*SI*846-000123*20261126~\
LIN*1*UP*036000291452*VP*NW-1001~\
QTY*33*10*EA~\
QTY*17*12*EA~\
SDQ*EA*92*DC1*4*DC2*6~\
DTM*018*20261201~\
LIN*2*UP*400638133393*VP*NW-1002~\
QTY*33*0*EA~\
CTT*2*22~\
SE*11*0001~\
GE*1*1~\
IEA*1*000000001~";

    #[test]
    fn decodes_an_846() {
        let v = decode(DOC).expect("valid");
        assert_eq!(
            v.to_string(),
            concat!(
                r#"{"sender":"NORTHWIND","receiver":"MALLGATE","control_number":"0001","document":"846-000123","date":"20261126","items":["#,
                r#"{"line":"1","ids":{"UP":"036000291452","VP":"NW-1001"},"quantities":[{"qualifier":"33","quantity":"10","unit":"EA"},{"qualifier":"17","quantity":"12","unit":"EA"}],"#,
                r#""locations":[{"location":"DC1","quantity":"4","unit":"EA"},{"location":"DC2","quantity":"6","unit":"EA"}],"dates":[{"qualifier":"018","date":"20261201"}]},"#,
                r#"{"line":"2","ids":{"UP":"400638133393","VP":"NW-1002"},"quantities":[{"qualifier":"33","quantity":"0","unit":"EA"}],"locations":[],"dates":[]}]}"#
            )
        );
    }

    /// Quantities of 30 digits, enough of them to overflow the sum: an error naming the
    /// segment, never a panic or a wrapped total.
    #[test]
    fn a_quantity_sum_that_overflows_is_refused() {
        let huge = "9".repeat(30);
        let qty = format!("QTY*33*{huge}*EA~").repeat(200);
        let doc = DOC.replace("QTY*33*10*EA~", &qty);
        let err = decode(&doc).expect_err("overflow").to_string();
        assert!(err.contains("overflow their sum"), "{err}");
    }

    #[test]
    fn control_totals_are_checked() {
        let wrong_count = DOC.replace("CTT*2*22", "CTT*3*22");
        assert_eq!(
            decode(&wrong_count).expect_err("count").to_string(),
            "cannot decode x12 payload: segment 12: CTT01 says 3 line items, the document has 2"
        );
        let wrong_hash = DOC.replace("CTT*2*22", "CTT*2*23");
        assert_eq!(
            decode(&wrong_hash).expect_err("hash").to_string(),
            "cannot decode x12 payload: segment 12: CTT02 hash total 23 does not equal the sum of QTY quantities"
        );
        let wrong_se = DOC.replace("SE*11*0001", "SE*10*0001");
        assert_eq!(
            decode(&wrong_se).expect_err("se").to_string(),
            "cannot decode x12 payload: segment 13: SE01 says 10 segments, the transaction set has 11"
        );
        let truncated = &DOC[..DOC.find("CTT").unwrap_or(0)];
        assert_eq!(
            decode(truncated).expect_err("truncated").to_string(),
            "cannot decode x12 payload: no complete ST/SE transaction set (truncated?)"
        );
        // A bare LIN (found by the proptest): an item without ids, not a panic.
        let bare = decode("ST*846*0001~LIN~CTT*1~SE*4*0001~").expect("bare LIN");
        assert_eq!(
            bare.to_string(),
            r#"{"sender":"","receiver":"","control_number":"0001","document":"","date":"","items":[{"line":"","ids":{},"quantities":[],"locations":[],"dates":[]}]}"#
        );
        let orphan = DOC.replace("LIN*1*UP*036000291452*VP*NW-1001~", "");
        assert!(decode(&orphan).is_err());
        assert!(decode("").is_err());
    }

    #[test]
    fn exact_quantity_sums() {
        assert_eq!(scaled("12.5", 6), Some(12_500_000));
        assert_eq!(scaled("-0.000001", 6), Some(-1));
        assert_eq!(scaled("1e3", 6), None);
        assert_eq!(scaled("", 6), None);
        assert_eq!(scaled(".", 6), None);
    }
}
