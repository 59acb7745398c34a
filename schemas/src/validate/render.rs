//! Rendering: jsonschema's errors -> a JSON pointer and a plain reason (the schema's own
//! `x-message` where it gives one, a "did you mean" for a misspelt field).

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use super::{Compiled, Violation};

/// RFC 6901 escaping of one JSON pointer reference token (`~` -> `~0`, `/` -> `~1`).
pub fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

pub(super) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The subschema that holds the failing keyword, found through the error's absolute
/// keyword location.
fn keyword_parent<'a>(compiled: &'a Compiled, error: &ValidationError<'_>) -> Option<&'a Value> {
    let location = error.absolute_keyword_location()?.as_str();
    let (base, fragment) = location.split_once('#')?;
    let document = compiled.documents.get(base)?;
    let pointer = percent_decode(fragment);
    let parent = pointer.rsplit_once('/').map_or("", |(parent, _)| parent);
    document.pointer(parent)
}

fn x_message(parent: Option<&Value>) -> Option<String> {
    parent?
        .get("x-message")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Property names the subschema declares (directly and in `allOf[*].then`).
fn declared_properties(parent: Option<&Value>) -> Vec<String> {
    let Some(parent) = parent else {
        return Vec::new();
    };
    let mut names: Vec<String> = Vec::new();
    let mut add = |schema: &Value| {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            names.extend(props.keys().cloned());
        }
    };
    add(parent);
    if let Some(all) = parent.get("allOf").and_then(Value::as_array) {
        for branch in all {
            if let Some(then) = branch.get("then") {
                add(then);
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

pub(super) fn did_you_mean(name: &str, candidates: &[String]) -> String {
    let best = candidates
        .iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min();
    match best {
        Some((_, candidate)) => format!("; did you mean `{candidate}`?"),
        None => String::new(),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn short(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

fn list(values: &[Value]) -> String {
    values
        .iter()
        .map(|v| format!("`{}`", short(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn render(
    compiled: &Compiled,
    validator: &Validator,
    instance: &Value,
) -> Vec<Violation> {
    // Most values are valid: a yes/no pass is several times cheaper than collecting errors.
    if validator.is_valid(instance) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for error in validator.iter_errors(instance) {
        render_one(compiled, &error, &mut out);
    }
    // A wrong discriminator (`kind`, `style`) makes every sibling field "unknown"; the
    // discriminator's own error is the one worth reading.
    let wrong_tags: Vec<String> = out
        .iter()
        .filter(|v| v.reason.starts_with("unknown value"))
        .filter_map(|v| {
            v.pointer
                .strip_suffix("/kind")
                .or_else(|| v.pointer.strip_suffix("/style"))
                .map(str::to_owned)
        })
        .collect();
    out.retain(|v| {
        !(v.reason.starts_with("unknown field")
            && wrong_tags
                .iter()
                .any(|parent| v.pointer.rsplit_once('/').is_some_and(|(p, _)| p == parent)))
    });
    out.sort_by(|a, b| a.pointer.cmp(&b.pointer).then(a.reason.cmp(&b.reason)));
    out.dedup();
    out
}

fn render_one(compiled: &Compiled, error: &ValidationError<'_>, out: &mut Vec<Violation>) {
    let pointer = error.instance_path().as_str().to_owned();
    let instance = error.instance();
    let parent = keyword_parent(compiled, error);
    let reason = match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            let candidates = declared_properties(parent);
            for name in unexpected {
                // A declared field reported as unevaluated only means another rule of its
                // branch failed; that failure is reported on its own.
                if candidates.contains(name) {
                    continue;
                }
                let hint = if name == "version" && pointer.is_empty() {
                    "; versions are assigned by the server".to_owned()
                } else {
                    did_you_mean(name, &candidates)
                };
                out.push(Violation::new(
                    format!("{pointer}/{}", escape_token(name)),
                    format!("unknown field `{name}`{hint}"),
                ));
            }
            return;
        }
        ValidationErrorKind::Required { property } => {
            format!("missing required field `{}`", short(property))
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => t.to_string(),
                TypeKind::Multiple(set) => set
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            format!("expected {expected}, found {}", type_name(instance))
        }
        ValidationErrorKind::Enum { options } => {
            let options = options.as_array().map(Vec::as_slice).unwrap_or_default();
            let hint = match instance.as_str() {
                Some(text) => did_you_mean(
                    text,
                    &options
                        .iter()
                        .filter_map(|o| o.as_str().map(str::to_owned))
                        .collect::<Vec<_>>(),
                ),
                None => String::new(),
            };
            format!(
                "unknown value `{}`; expected one of {}{hint}",
                short(instance),
                list(options)
            )
        }
        ValidationErrorKind::Constant { expected_value } => {
            format!("expected `{}`", short(expected_value))
        }
        ValidationErrorKind::Pattern { pattern } => x_message(parent).unwrap_or_else(|| {
            format!(
                "`{}` does not match the pattern `{pattern}`",
                short(instance)
            )
        }),
        ValidationErrorKind::Format { format } => x_message(parent)
            .unwrap_or_else(|| format!("`{}` is not a valid {format}", short(instance))),
        ValidationErrorKind::FalseSchema => {
            x_message(parent).unwrap_or_else(|| "this field is not allowed here".to_owned())
        }
        ValidationErrorKind::MinLength { limit } => {
            if *limit == 1 {
                "must not be empty".to_owned()
            } else {
                format!("must be at least {limit} characters long")
            }
        }
        ValidationErrorKind::MaxLength { limit } => format!(
            "must be at most {limit} characters long (found {})",
            instance.as_str().map_or(0, |s| s.chars().count())
        ),
        ValidationErrorKind::Minimum { limit } => format!("must be at least {limit}"),
        ValidationErrorKind::Maximum { limit } => format!("must be at most {limit}"),
        ValidationErrorKind::ExclusiveMinimum { limit } => format!("must be greater than {limit}"),
        ValidationErrorKind::ExclusiveMaximum { limit } => format!("must be less than {limit}"),
        ValidationErrorKind::MinItems { limit } => {
            if *limit == 1 {
                "must not be empty".to_owned()
            } else {
                format!("must have at least {limit} items")
            }
        }
        ValidationErrorKind::MaxItems { limit } => format!("must have at most {limit} items"),
        ValidationErrorKind::MinProperties { limit } => {
            if *limit == 1 {
                "must not be empty".to_owned()
            } else {
                format!("must have at least {limit} fields")
            }
        }
        ValidationErrorKind::MaxProperties { limit } => format!("must have at most {limit} fields"),
        ValidationErrorKind::UniqueItems => "items must be unique".to_owned(),
        ValidationErrorKind::PropertyNames { error } => {
            let name = short(error.instance());
            let reason = x_message(keyword_parent(compiled, error))
                .unwrap_or_else(|| "is not an allowed name".to_owned());
            out.push(Violation::new(
                format!("{pointer}/{}", escape_token(&name)),
                format!("`{name}` {reason}"),
            ));
            return;
        }
        ValidationErrorKind::Not { .. } => x_message(parent)
            .unwrap_or_else(|| format!("`{}` is not allowed here", short(instance))),
        _ => error.to_string(),
    };
    out.push(Violation::new(pointer, reason));
}
