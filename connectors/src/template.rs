//! Request templates: text with `{field}` placeholders filled from a capability's query
//! fields (`{q}`, `{to.postal_code}`, `{request_id}`); `{{` and `}}` stand for braces.
//! Parsed when a connector is loaded, so a typo is a load error, not a bad request later.

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// A dotted path into the query: `q`, `to.postal_code`, `parcels.0.weight_g`.
    Field(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub segments: Vec<Segment>,
}

impl Template {
    /// Parses a template, or says what is wrong with it (lower case, no position: the
    /// caller knows the field's pointer).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => {
                    return Err(format!(
                        "stray `}}` at character {}; write `}}}}` for a literal brace",
                        at + 1
                    ));
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, c) in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(format!(
                            "unclosed `{{` at character {}; write `{{{{` for a literal brace",
                            at + 1
                        ));
                    }
                    if !is_field_path(&name) {
                        return Err(format!(
                            "`{{{name}}}` is not a field placeholder; use lower-case names like `{{q}}` or `{{to.postal_code}}`"
                        ));
                    }
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(Segment::Field(name));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Self { segments })
    }

    /// The text with every placeholder replaced by `lookup(path)` passed through `encode`;
    /// `None` when a placeholder has no value (the caller leaves the parameter out).
    pub fn render(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
        encode: impl Fn(&str) -> String,
    ) -> Option<String> {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Field(path) => out.push_str(&encode(&lookup(path)?)),
            }
        }
        Some(out)
    }

    /// The placeholders' paths, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Field(path) => Some(path.as_str()),
            Segment::Literal(_) => None,
        })
    }
}

fn is_field_path(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        && name.as_bytes()[0].is_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_literals_and_escapes() {
        let t = Template::parse("/v1/{id}/x?{{raw}}-{to.postal_code}").expect("parses");
        assert_eq!(
            t.segments,
            vec![
                Segment::Literal("/v1/".into()),
                Segment::Field("id".into()),
                Segment::Literal("/x?{raw}-".into()),
                Segment::Field("to.postal_code".into()),
            ]
        );
        assert_eq!(t.fields().collect::<Vec<_>>(), ["id", "to.postal_code"]);
    }

    #[test]
    fn rendering_fills_encodes_and_leaves_out() {
        let t = Template::parse("/t/{n}?x={{{q}}}").expect("parses");
        let filled = t.render(
            |p| (p != "q").then(|| "a b".to_owned()),
            |v| v.replace(' ', "%20"),
        );
        assert_eq!(filled, None, "a missing field leaves the whole value out");
        let filled = t.render(|_| Some("a b".to_owned()), |v| v.replace(' ', "%20"));
        assert_eq!(filled.as_deref(), Some("/t/a%20b?x={a%20b}"));
    }

    #[test]
    fn precise_errors() {
        assert_eq!(
            Template::parse("a{q").expect_err("unclosed"),
            "unclosed `{` at character 2; write `{{` for a literal brace"
        );
        assert_eq!(
            Template::parse("a}b").expect_err("stray"),
            "stray `}` at character 2; write `}}` for a literal brace"
        );
        assert_eq!(
            Template::parse("{Q}").expect_err("upper case"),
            "`{Q}` is not a field placeholder; use lower-case names like `{q}` or `{to.postal_code}`"
        );
        assert!(Template::parse("{}").is_err());
        assert!(Template::parse("{a..b}").is_err());
    }
}
