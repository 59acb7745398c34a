//! Partner grants (DESIGN §5): a connector's `kind`, its merge `priority` and its carrier
//! `codes` decide whose titles win a merge and which tracking numbers reach it, so they
//! are the operator's to give, not a partner's to declare. A partner-owned connector may
//! declare only the kinds its grant lists, no priority better (lower) than its grant's
//! floor, and only the carrier codes its grant lists; anything else is refused at its
//! JSON pointer. Operator-owned connectors are not limited.

use serde::{Deserialize, Serialize};

use crate::error::Problem;
use crate::source::{Format, parse};
use crate::spec::{ConnectorSpec, PartnerKind};

/// What the operator grants one partner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The kinds of connector the partner may register (default: retailer only).
    #[serde(default = "retailer")]
    pub kinds: Vec<PartnerKind>,
    /// The best (lowest) merge priority its connectors may declare; absent: the kind's
    /// default, so a partner can rank itself lower but never higher.
    #[serde(default)]
    pub priority: Option<u32>,
    /// The carrier codes its carrier connectors may answer for.
    #[serde(default)]
    pub codes: Vec<String>,
}

fn retailer() -> Vec<PartnerKind> {
    vec![PartnerKind::Retailer]
}

impl Default for Grant {
    /// A partner nobody granted anything: a retailer at the retailers' default priority.
    fn default() -> Self {
        Self {
            kinds: retailer(),
            priority: None,
            codes: Vec::new(),
        }
    }
}

impl Grant {
    /// What `spec` (submitted as `text`) declares beyond this grant, each at its pointer
    /// with its line.
    pub fn problems(&self, spec: &ConnectorSpec, text: &str) -> Vec<Problem> {
        let map = parse(text, Format::sniff(text)).ok().map(|(_, map)| map);
        let at = |pointer: String, reason: String| {
            let pos = map.as_ref().and_then(|m| m.locate(&pointer));
            Problem {
                pointer,
                line: pos.map(|p| p.line),
                column: pos.map(|p| p.column),
                reason,
            }
        };
        let mut out = Vec::new();
        if !self.kinds.contains(&spec.kind) {
            out.push(at(
                "/kind".into(),
                format!(
                    "partner `{}` is not granted kind `{}` (granted: {}); kinds are the operator's grant",
                    spec.partner,
                    kind_name(spec.kind),
                    self.kinds
                        .iter()
                        .map(|k| kind_name(*k))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        // The priority the merge will use: a declared one, else the kind's default (a
        // grant's floor above that default binds a connector that declares none, too).
        let floor = self
            .priority
            .unwrap_or_else(|| spec.kind.default_priority());
        let priority = spec.effective_priority();
        if priority < floor {
            let pointer = if spec.priority.is_some() {
                "/priority"
            } else {
                "/kind"
            };
            out.push(at(
                pointer.into(),
                format!(
                    "priority {priority} would rank partner `{}` above its grant ({floor} at best); merge priority is the operator's grant",
                    spec.partner
                ),
            ));
        }
        for (i, code) in spec.codes.iter().enumerate() {
            if !self.codes.iter().any(|c| c.eq_ignore_ascii_case(code)) {
                out.push(at(
                    format!("/codes/{i}"),
                    format!(
                        "carrier code `{code}` is not granted to partner `{}`; carrier codes are the operator's grant",
                        spec.partner
                    ),
                ));
            }
        }
        out
    }
}

fn kind_name(kind: PartnerKind) -> &'static str {
    match kind {
        PartnerKind::Retailer => "retailer",
        PartnerKind::Supplier => "supplier",
        PartnerKind::Carrier => "carrier",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Owner;

    fn spec(head: &str) -> (ConnectorSpec, String) {
        let capability = if head.contains("carrier") {
            "tracking.get"
        } else {
            "catalog.search"
        };
        let text = format!(
            "id: t\npartner: threadline\n{head}endpoints:\n  - url: http://127.0.0.1:1\ncapabilities:\n  {capability}:\n    request:\n      path: /t\n    records: .\n    map: .\n"
        );
        let spec = ConnectorSpec::load(&text, Format::Yaml, &Owner::Partner("threadline".into()))
            .expect("loads");
        (spec, text)
    }

    #[test]
    fn ungranted_kind_priority_and_codes_are_refused_with_pointer_and_line() {
        let (carrier, text) = spec("kind: carrier\npriority: 0\ncodes: [ups, fedex]\n");
        let problems = Grant::default().problems(&carrier, &text);
        let pointers: Vec<_> = problems
            .iter()
            .map(|p| (p.pointer.as_str(), p.line))
            .collect();
        assert_eq!(
            pointers,
            [
                ("/kind", Some(3)),
                ("/priority", Some(4)),
                ("/codes/0", Some(5)),
                ("/codes/1", Some(5))
            ]
        );
        assert!(problems[0].reason.contains("not granted kind `carrier`"));
        let granted = Grant {
            kinds: vec![PartnerKind::Carrier],
            priority: Some(0),
            codes: vec!["UPS".into(), "fedex".into()],
        };
        assert_eq!(granted.problems(&carrier, &text), Vec::new());
    }

    #[test]
    fn a_partner_may_rank_itself_lower_but_not_higher() {
        let (lower, text) = spec("kind: retailer\npriority: 90\n");
        assert!(Grant::default().problems(&lower, &text).is_empty());
        let (higher, text) = spec("kind: retailer\npriority: 19\n");
        assert_eq!(
            Grant::default().problems(&higher, &text)[0].pointer,
            "/priority"
        );
        // Leaving the priority out does not escape a floor above the kind's default.
        let (silent, text) = spec("kind: retailer\n");
        let floor = Grant {
            priority: Some(50),
            ..Grant::default()
        };
        assert_eq!(floor.problems(&silent, &text)[0].pointer, "/kind");
    }
}
