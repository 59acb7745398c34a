//! Partner bytes -> jq values, numbers kept exact.
//!
//! | format | shape |
//! |---|---|
//! | `json` | the document; numbers keep their decimal text (`849.99` is never an f64) |
//! | `xml`  | `{"Root": ...}`; an element with neither attributes nor child elements is its text (`""` when empty); otherwise an object with attributes as `"@name"`, child elements by name (a name seen twice becomes an array, in document order) and any text as `"#text"`. Namespace prefixes are kept as written. Values are text |
//! | `csv`  | an array of objects keyed by the header row; values are text |
//! | `x12`  | an EDI 846 document: see [`x12`] |
//!
//! Every decoder caps input size and nesting depth, requires UTF-8, and reports where it
//! stopped (byte offset, line or segment) and why; none panics on any input.

use jaq_json::{Map, Val};

use crate::error::ConnectorError;
use crate::spec::Decode;

pub mod x12;

/// Caps applied to every partner payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 16 * 1024 * 1024,
            max_depth: 128,
        }
    }
}

pub(crate) fn error(format: Decode, reason: impl Into<String>) -> ConnectorError {
    ConnectorError::Decode {
        format: format.name(),
        reason: reason.into(),
    }
}

pub(crate) fn text(s: impl Into<String>) -> Val {
    Val::utf8_str(s.into().into_bytes())
}

pub(crate) fn object(members: impl IntoIterator<Item = (String, Val)>) -> Val {
    let mut map = Map::default();
    for (k, v) in members {
        map.insert(text(k), v);
    }
    Val::obj(map)
}

pub(crate) fn array(items: Vec<Val>) -> Val {
    Val::Arr(items.into())
}

/// Decodes a partner reply.
pub fn decode(format: Decode, bytes: &[u8], limits: &Limits) -> Result<Val, ConnectorError> {
    if bytes.len() > limits.max_bytes {
        return Err(error(
            format,
            format!(
                "payload is {} bytes; the limit is {}",
                bytes.len(),
                limits.max_bytes
            ),
        ));
    }
    let body = std::str::from_utf8(bytes).map_err(|e| {
        error(
            format,
            format!(
                "payload is not UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })?;
    let body = body.strip_prefix('\u{feff}').unwrap_or(body);
    match format {
        Decode::Json => json(body, limits),
        Decode::Xml => xml(body, limits),
        Decode::Csv => csv(body),
        Decode::X12 => x12::decode(body),
    }
}

fn json(body: &str, limits: &Limits) -> Result<Val, ConnectorError> {
    // jaq's reader recurses per nesting level: measure depth first, without recursion.
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (offset, byte) in body.bytes().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limits.max_depth {
                    return Err(error(
                        Decode::Json,
                        format!(
                            "byte offset {offset}: nesting deeper than {} levels",
                            limits.max_depth
                        ),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    jaq_json::read::parse_single(body.as_bytes()).map_err(|e| error(Decode::Json, e.to_string()))
}

/// One element under construction.
struct Element {
    name: String,
    attributes: Vec<(String, Val)>,
    children: Vec<(String, Val)>,
    text: String,
}

impl Element {
    fn into_val(self) -> Val {
        if self.attributes.is_empty() && self.children.is_empty() {
            return text(self.text);
        }
        let mut map = Map::default();
        for (name, value) in self.attributes {
            map.insert(text(format!("@{name}")), value);
        }
        for (name, value) in self.children {
            let key = text(name);
            // A child is text or an object, never an array: an array under its name can
            // only be the list of its repetitions.
            match map.get_mut(&key) {
                Some(Val::Arr(items)) => jaq_json::Rc::make_mut(items).push(value),
                Some(existing) => {
                    let first = std::mem::take(existing);
                    *existing = array(vec![first, value]);
                }
                None => {
                    map.insert(key, value);
                }
            }
        }
        let trimmed = self.text.trim();
        if !trimmed.is_empty() {
            map.insert(text("#text"), text(trimmed));
        }
        Val::obj(map)
    }
}

fn xml(body: &str, limits: &Limits) -> Result<Val, ConnectorError> {
    use quick_xml::events::Event;

    let mut reader = quick_xml::Reader::from_str(body);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Val> = None;
    let fail = |reader: &quick_xml::Reader<&[u8]>, reason: String| {
        error(
            Decode::Xml,
            format!("byte offset {}: {reason}", reader.buffer_position()),
        )
    };
    loop {
        let event = reader
            .read_event()
            .map_err(|e| fail(&reader, e.to_string()))?;
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(fail(&reader, "content after the root element".into()));
            }
            Event::Start(start) => {
                let element = open_element(&reader, &start, stack.len(), limits)?;
                stack.push(element);
            }
            Event::Empty(start) => {
                let element = open_element(&reader, &start, stack.len(), limits)?;
                close(element, &mut stack, &mut root);
            }
            Event::End(_) => match stack.pop() {
                Some(element) => close(element, &mut stack, &mut root),
                None => return Err(fail(&reader, "closing tag without an opening tag".into())),
            },
            Event::Text(t) => {
                let decoded = t.decode().map_err(|e| fail(&reader, e.to_string()))?;
                match stack.last_mut() {
                    Some(element) => element.text.push_str(&decoded),
                    None if decoded.trim().is_empty() => {}
                    None => return Err(fail(&reader, "text outside the root element".into())),
                }
            }
            Event::GeneralRef(r) => {
                let name = String::from_utf8_lossy(&r).into_owned();
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => quick_xml::escape::resolve_xml_entity(&name)
                        .map(str::to_owned)
                        .ok_or_else(|| fail(&reader, format!("unknown entity `&{name};`")))?,
                };
                if let Some(element) = stack.last_mut() {
                    element.text.push_str(&resolved);
                }
            }
            Event::CData(c) => {
                if let Some(element) = stack.last_mut() {
                    element.text.push_str(&String::from_utf8_lossy(&c));
                }
            }
            Event::Eof => break,
            // Declarations, comments, processing instructions and DOCTYPE carry no data; a
            // DOCTYPE's entities are never expanded.
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(error(
            Decode::Xml,
            format!(
                "document ends inside <{}> (truncated?)",
                stack.last().map_or("", |e| e.name.as_str())
            ),
        ));
    }
    root.ok_or_else(|| error(Decode::Xml, "no root element"))
}

fn open_element(
    reader: &quick_xml::Reader<&[u8]>,
    start: &quick_xml::events::BytesStart<'_>,
    depth: usize,
    limits: &Limits,
) -> Result<Element, ConnectorError> {
    let fail = |reason: String| {
        error(
            Decode::Xml,
            format!("byte offset {}: {reason}", reader.buffer_position()),
        )
    };
    if depth >= limits.max_depth {
        return Err(fail(format!(
            "nesting deeper than {} levels",
            limits.max_depth
        )));
    }
    let mut attributes = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| fail(e.to_string()))?;
        let value = attribute
            .unescape_value()
            .map_err(|e| fail(e.to_string()))?;
        attributes.push((
            String::from_utf8_lossy(attribute.key.as_ref()).into_owned(),
            text(value.into_owned()),
        ));
    }
    Ok(Element {
        name: String::from_utf8_lossy(start.name().as_ref()).into_owned(),
        attributes,
        children: Vec::new(),
        text: String::new(),
    })
}

fn close(element: Element, stack: &mut [Element], root: &mut Option<Val>) {
    let name = element.name.clone();
    let value = element.into_val();
    match stack.last_mut() {
        Some(parent) => parent.children.push((name, value)),
        None => *root = Some(object([(name, value)])),
    }
}

fn csv(body: &str) -> Result<Val, ConnectorError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(body.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| error(Decode::Csv, e.to_string()))?
        .iter()
        .map(str::to_owned)
        .collect();
    if headers.iter().all(String::is_empty) {
        return Err(error(Decode::Csv, "no header row"));
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| error(Decode::Csv, e.to_string()))?;
        rows.push(object(headers.iter().cloned().zip(record.iter().map(text))));
    }
    Ok(array(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(v: &Val) -> String {
        v.to_string()
    }

    fn dec(format: Decode, text: &str) -> Result<Val, String> {
        decode(format, text.as_bytes(), &Limits::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn json_numbers_stay_exact() {
        let v = dec(
            Decode::Json,
            r#"{"regularPrice": 849.99, "big": 12345678901234567890123, "x": 0.1}"#,
        )
        .expect("valid");
        assert_eq!(
            show(&v),
            r#"{"regularPrice":849.99,"big":12345678901234567890123,"x":0.1}"#
        );
    }

    #[test]
    fn json_errors_are_precise() {
        let truncated = dec(Decode::Json, r#"{"a": [1, 2"#).expect_err("truncated");
        assert!(
            truncated.starts_with("cannot decode json payload: byte offset 11: "),
            "{truncated}"
        );
        let deep = "[".repeat(200);
        assert_eq!(
            dec(Decode::Json, &deep).expect_err("deep"),
            "cannot decode json payload: byte offset 128: nesting deeper than 128 levels"
        );
        assert_eq!(
            decode(Decode::Json, b"{\"a\": \"\xff\"}", &Limits::default())
                .expect_err("not utf-8")
                .to_string(),
            "cannot decode json payload: payload is not UTF-8 (invalid byte at offset 7)"
        );
        let small = Limits {
            max_bytes: 4,
            max_depth: 8,
        };
        assert_eq!(
            decode(Decode::Json, b"[1,2,3]", &small)
                .expect_err("big")
                .to_string(),
            "cannot decode json payload: payload is 7 bytes; the limit is 4"
        );
    }

    #[test]
    fn xml_shape() {
        let v = dec(
            Decode::Xml,
            r#"<?xml version="1.0"?>
            <RateV4Response>
              <Package ID="0">
                <Postage CLASSID="1"><MailService>Priority Mail&amp;lt;sup&amp;gt;</MailService><Rate>10.30</Rate></Postage>
                <Postage CLASSID="3"><MailService>Express</MailService><Rate>0.00</Rate><Error><Number>-1</Number></Error></Postage>
              </Package>
              <Empty/>
              <Note lang="en">hi <![CDATA[<b>]]></Note>
            </RateV4Response>"#,
        )
        .expect("valid");
        assert_eq!(
            show(&v),
            concat!(
                r#"{"RateV4Response":{"Package":{"@ID":"0","Postage":["#,
                r#"{"@CLASSID":"1","MailService":"Priority Mail&lt;sup&gt;","Rate":"10.30"},"#,
                r#"{"@CLASSID":"3","MailService":"Express","Rate":"0.00","Error":{"Number":"-1"}}]},"#,
                r##""Empty":"","Note":{"@lang":"en","#text":"hi <b>"}}}"##
            )
        );
    }

    #[test]
    fn xml_errors_are_precise() {
        let truncated = dec(Decode::Xml, "<a><b>1</b>").expect_err("truncated");
        assert_eq!(
            truncated,
            "cannot decode xml payload: document ends inside <a> (truncated?)"
        );
        let mismatched = dec(Decode::Xml, "<a><b>1</c></a>").expect_err("mismatch");
        assert!(
            mismatched.starts_with("cannot decode xml payload: byte offset "),
            "{mismatched}"
        );
        let entity = dec(Decode::Xml, "<a>&xxe;</a>").expect_err("entity");
        assert!(entity.ends_with("unknown entity `&xxe;`"), "{entity}");
        assert!(dec(Decode::Xml, "").is_err());
        assert!(dec(Decode::Xml, "<a/><b/>").is_err());
    }

    #[test]
    fn csv_rows_by_header() {
        let v = dec(Decode::Csv, "\u{feff}sku,price\nA-1,12.99\n\"B,2\",0.125\n").expect("valid");
        assert_eq!(
            show(&v),
            r#"[{"sku":"A-1","price":"12.99"},{"sku":"B,2","price":"0.125"}]"#
        );
        let ragged = dec(Decode::Csv, "a,b\n1\n").expect_err("ragged");
        assert!(ragged.contains("line: 2"), "{ragged}");
    }
}
