//! Reading a connector document (YAML or JSON) into a JSON value while remembering where
//! every value and key stood, so a problem found later by JSON pointer can name its line
//! and column.
//!
//! The YAML reader is deliberately small and strict: YAML 1.2 core-schema scalars, one
//! document, no aliases (no "billion laughs"), no tags, no duplicate or non-string keys,
//! and caps on size and depth. A partner's document never costs more than it weighs.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

pub(crate) use mallgate_schemas::escape_token;

use crate::error::Problem;

/// Largest connector document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Deepest nesting of mappings and sequences accepted.
pub const MAX_DEPTH: usize = 64;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl From<Marker> for Position {
    fn from(mark: Marker) -> Self {
        Self {
            line: mark.line(),
            column: mark.col() + 1,
        }
    }
}

/// The language a connector document is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// JSON when the document starts with `{`, else YAML (of which JSON is nearly a subset,
    /// but JSON gets serde_json's own syntax errors).
    pub fn sniff(text: &str) -> Self {
        if text.trim_start().starts_with('{') {
            Self::Json
        } else {
            Self::Yaml
        }
    }
}

/// A parsed document: its value, and the positions of its values and object keys by JSON
/// pointer.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    values: HashMap<String, Position>,
    keys: HashMap<String, Position>,
}

impl SourceMap {
    /// Where the problem at `pointer` should be shown: the key of an object member (the
    /// line a reader looks for), else the value, else the nearest ancestor that has one.
    pub fn locate(&self, pointer: &str) -> Option<Position> {
        let mut at = pointer;
        loop {
            if let Some(pos) = self.keys.get(at).or_else(|| self.values.get(at)) {
                return Some(*pos);
            }
            at = at.rsplit_once('/')?.0;
        }
    }
}

/// Parses `text` in `format`, or says exactly where and why it cannot.
pub fn parse(text: &str, format: Format) -> Result<(Value, SourceMap), Problem> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(Problem::document(format!(
            "document is {} bytes; the limit is {MAX_DOCUMENT_BYTES}",
            text.len()
        )));
    }
    match format {
        Format::Yaml => parse_yaml(text),
        Format::Json => {
            let value: Value = serde_json::from_str(text).map_err(|e| Problem {
                pointer: String::new(),
                line: Some(e.line()),
                column: Some(e.column()),
                reason: format!("malformed JSON: {}", strip_position(&e.to_string())),
            })?;
            if depth(&value) > MAX_DEPTH {
                return Err(Problem::document(format!(
                    "document nests deeper than {MAX_DEPTH} levels"
                )));
            }
            // JSON is YAML 1.2 flow syntax: the YAML reader finds positions and duplicate
            // keys (which serde_json silently collapses).
            match parse_yaml(text) {
                Ok((_, map)) => Ok((value, map)),
                Err(problem) if problem.reason.starts_with("duplicate field") => Err(problem),
                Err(_) => Ok((value, SourceMap::default())),
            }
        }
    }
}

fn strip_position(message: &str) -> &str {
    message
        .rsplit_once(" at line ")
        .map_or(message, |(head, _)| head)
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn parse_yaml(text: &str) -> Result<(Value, SourceMap), Problem> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    let scanned = parser.load(&mut builder, true);
    if let Some(problem) = builder.problem {
        return Err(problem);
    }
    if let Err(e) = scanned {
        let pos = Position::from(*e.marker());
        return Err(Problem {
            pointer: String::new(),
            line: Some(pos.line),
            column: Some(pos.column),
            reason: format!("malformed YAML: {}", e.info()),
        });
    }
    match builder.root {
        Some(root) => Ok((root, builder.map)),
        None => Err(Problem::document("document is empty")),
    }
}

enum Frame {
    Sequence {
        pointer: String,
        items: Vec<Value>,
    },
    Mapping {
        pointer: String,
        members: Map<String, Value>,
        key: Option<String>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Value>,
    documents: usize,
    map: SourceMap,
    problem: Option<Problem>,
}

impl Builder {
    fn fail(&mut self, mark: Marker, reason: impl Into<String>) {
        if self.problem.is_none() {
            let pos = Position::from(mark);
            self.problem = Some(Problem {
                pointer: self.next_pointer().unwrap_or_default(),
                line: Some(pos.line),
                column: Some(pos.column),
                reason: reason.into(),
            });
        }
    }

    /// The pointer the next value will have.
    fn next_pointer(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Sequence { pointer, items }) => Some(format!("{pointer}/{}", items.len())),
            Some(Frame::Mapping {
                pointer,
                key: Some(key),
                ..
            }) => Some(format!("{pointer}/{}", escape_token(key))),
            Some(Frame::Mapping { key: None, .. }) => None,
        }
    }

    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Mapping { key: None, .. }))
    }

    fn push_value(&mut self, value: Value) {
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Frame::Sequence { items, .. }) => items.push(value),
            Some(Frame::Mapping { members, key, .. }) => {
                if let Some(key) = key.take() {
                    members.insert(key, value);
                }
            }
        }
    }

    fn on_key(&mut self, key: String, mark: Marker) {
        let Some(Frame::Mapping {
            pointer,
            members,
            key: slot,
        }) = self.stack.last_mut()
        else {
            return;
        };
        let key_pos = Position::from(mark);
        if members.is_empty() {
            // A block mapping's start is marked at its first key's `:`; the key itself is
            // where a reader looks for the mapping.
            if let Some(start) = self.map.values.get_mut(pointer.as_str())
                && (key_pos.line, key_pos.column) < (start.line, start.column)
            {
                *start = key_pos;
            }
        }
        if members.contains_key(&key) {
            let pointer = format!("{pointer}/{}", escape_token(&key));
            let pos = Position::from(mark);
            self.problem.get_or_insert(Problem {
                pointer,
                line: Some(pos.line),
                column: Some(pos.column),
                reason: format!("duplicate field `{key}`"),
            });
            return;
        }
        self.map
            .keys
            .insert(format!("{pointer}/{}", escape_token(&key)), key_pos);
        *slot = Some(key);
    }

    fn open(&mut self, mark: Marker, mapping: bool) {
        if self.expecting_key() {
            return self.fail(mark, "a field name must be a plain string");
        }
        if self.stack.len() >= MAX_DEPTH {
            return self.fail(
                mark,
                format!("document nests deeper than {MAX_DEPTH} levels"),
            );
        }
        let pointer = self.next_pointer().unwrap_or_default();
        self.map.values.insert(pointer.clone(), mark.into());
        self.stack.push(if mapping {
            Frame::Mapping {
                pointer,
                members: Map::new(),
                key: None,
            }
        } else {
            Frame::Sequence {
                pointer,
                items: Vec::new(),
            }
        });
    }

    fn close(&mut self) {
        let value = match self.stack.pop() {
            Some(Frame::Sequence { items, .. }) => Value::Array(items),
            Some(Frame::Mapping { members, .. }) => Value::Object(members),
            None => return,
        };
        self.push_value(value);
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.problem.is_some() {
            return;
        }
        match event {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.fail(
                        mark,
                        "a connector is one YAML document; found a second `---`",
                    );
                }
            }
            Event::Alias(_) => self.fail(mark, "YAML aliases (*name) are not supported"),
            Event::Scalar(text, style, _anchor, tag) => {
                if let Some(tag) = &tag
                    && !(tag.handle == "tag:yaml.org,2002:" && tag.suffix == "str")
                {
                    return self.fail(
                        mark,
                        format!(
                            "YAML tags are not supported (found `{}{}`)",
                            tag.handle, tag.suffix
                        ),
                    );
                }
                if self.expecting_key() {
                    return self.on_key(text, mark);
                }
                let value = if tag.is_some() || style != TScalarStyle::Plain {
                    Value::String(text)
                } else {
                    match resolve_plain(&text) {
                        Ok(value) => value,
                        Err(reason) => return self.fail(mark, reason),
                    }
                };
                if let Some(pointer) = self.next_pointer() {
                    self.map.values.insert(pointer, mark.into());
                }
                self.push_value(value);
            }
            Event::SequenceStart(_, tag) | Event::MappingStart(_, tag) if tag.is_some() => {
                self.fail(mark, "YAML tags are not supported");
            }
            Event::SequenceStart(..) => self.open(mark, false),
            Event::MappingStart(..) => self.open(mark, true),
            Event::SequenceEnd | Event::MappingEnd => self.close(),
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(text: &str) -> Result<Value, String> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "true" | "True" | "TRUE" => return Ok(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Value::Bool(false)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => {
            return Err(format!("`{text}` is not a number JSON can carry"));
        }
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let parsed = text.parse::<i64>().map(Number::from).ok().or_else(|| {
            text.trim_start_matches('+')
                .parse::<u64>()
                .ok()
                .map(Number::from)
        });
        return parsed
            .map(Value::Number)
            .ok_or_else(|| format!("integer `{text}` is too large"));
    }
    for (prefix, radix) in [("0o", 8), ("0x", 16)] {
        if let Some(rest) = text.strip_prefix(prefix)
            && !rest.is_empty()
            && let Ok(n) = i64::from_str_radix(rest, radix)
        {
            return Ok(Value::Number(n.into()));
        }
    }
    if looks_like_float(text)
        && let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64)
    {
        return Ok(Value::Number(n));
    }
    Ok(Value::String(text.to_owned()))
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn looks_like_float(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match body.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (body, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (!int.is_empty() || !frac.is_empty())
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn core_schema_scalars() {
        let (value, _) = parse(
            "a: 1\nb: -2.5\nc: true\nd: ~\ne: '1'\nf: yes\ng: 0x1F\nh: 1e3\ni: 12:30\n",
            Format::Yaml,
        )
        .expect("parses");
        assert_eq!(
            value,
            json!({"a": 1, "b": -2.5, "c": true, "d": null, "e": "1", "f": "yes", "g": 31, "h": 1000.0, "i": "12:30"})
        );
    }

    #[test]
    fn positions_of_keys_and_values() {
        let text = "id: x\nauth:\n  kind: api_key\nlist:\n  - a\n  - {b: 1}\n";
        let (_, map) = parse(text, Format::Yaml).expect("parses");
        assert_eq!(map.locate("/id"), Some(Position { line: 1, column: 1 }));
        assert_eq!(map.locate(""), Some(Position { line: 1, column: 1 }));
        assert_eq!(
            map.locate("/auth/kind"),
            Some(Position { line: 3, column: 3 })
        );
        assert_eq!(map.locate("/list/1"), Some(Position { line: 6, column: 5 }));
        assert_eq!(
            map.locate("/list/1/b"),
            Some(Position { line: 6, column: 6 })
        );
        // An absent member is shown at its nearest present ancestor.
        assert_eq!(
            map.locate("/auth/value"),
            Some(Position { line: 2, column: 1 })
        );
    }

    #[test]
    fn refuses_aliases_duplicates_tags_and_second_documents() {
        for (text, reason) in [
            ("a: &x 1\nb: *x\n", "YAML aliases (*name) are not supported"),
            ("a: 1\na: 2\n", "duplicate field `a`"),
            (
                "a: !!binary aGk=\n",
                "YAML tags are not supported (found `tag:yaml.org,2002:binary`)",
            ),
            (
                "a: 1\n---\nb: 2\n",
                "a connector is one YAML document; found a second `---`",
            ),
            ("? [a]\n: 1\n", "a field name must be a plain string"),
            ("a: .nan\n", "`.nan` is not a number JSON can carry"),
        ] {
            let problem = parse(text, Format::Yaml).expect_err(text);
            assert_eq!(problem.reason, reason, "{text}");
            assert!(problem.line.is_some(), "{text}");
        }
    }

    #[test]
    fn depth_and_size_are_capped() {
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep, Format::Yaml).is_err());
        assert!(parse(&deep, Format::Json).is_err());
        let big = format!("a: \"{}\"\n", "x".repeat(MAX_DOCUMENT_BYTES));
        let problem = parse(&big, Format::Yaml).expect_err("too big");
        assert!(
            problem.reason.starts_with("document is "),
            "{}",
            problem.reason
        );
    }

    #[test]
    fn json_positions_and_duplicates() {
        let text = "{\n  \"id\": \"x\",\n  \"auth\": {\"kind\": \"none\"}\n}";
        let (value, map) = parse(text, Format::Json).expect("parses");
        assert_eq!(value["auth"]["kind"], "none");
        assert_eq!(
            map.locate("/auth/kind"),
            Some(Position {
                line: 3,
                column: 12
            })
        );
        let dup = parse("{\"a\": 1, \"a\": 2}", Format::Json).expect_err("duplicate");
        assert_eq!(dup.reason, "duplicate field `a`");
        let bad = parse("{\"a\": 1,}", Format::Json).expect_err("trailing comma");
        assert_eq!((bad.line, bad.column), (Some(1), Some(9)));
        assert!(
            bad.reason.starts_with("malformed JSON: trailing comma"),
            "{}",
            bad.reason
        );
    }
}
