//! Loading connector documents from files: the six partner connectors load and round-trip;
//! every document under `tests/bad/` is rejected with exactly the problems it expects
//! (`# expect: LINE:COL POINTER | REASON` lines at its end, or `FILE.expect` for JSON).

use std::fs;
use std::path::{Path, PathBuf};

use mallgate_connectors::source::SourceMap;
use mallgate_connectors::{ConnectorError, ConnectorSpec, Format, Owner, Problem};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn files(dir: &Path, ext: &[&str]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| ext.contains(&e))
        })
        .collect();
    out.sort();
    out
}

fn format_of(path: &Path) -> Format {
    if path.extension().is_some_and(|e| e == "json") {
        Format::Json
    } else {
        Format::Yaml
    }
}

fn parse_expectation(line: &str) -> Problem {
    let rest = line.trim_start_matches("# expect: ");
    let (position, rest) = rest.split_once(' ').expect("position");
    let (pointer, reason) = rest.split_once(" | ").expect("pointer | reason");
    let (line, column) = match position.split_once(':') {
        Some((l, c)) => (
            Some(l.parse().expect("line")),
            Some(c.parse().expect("column")),
        ),
        None => (None, None),
    };
    Problem {
        pointer: if pointer == "(document)" {
            String::new()
        } else {
            pointer.to_owned()
        },
        line,
        column,
        reason: reason.to_owned(),
    }
}

#[test]
fn every_bad_document_gives_exactly_its_problems() {
    let bad = files(&dir("tests/bad"), &["yaml", "json"]);
    assert!(bad.len() >= 12, "only {} bad documents", bad.len());
    for path in bad {
        let text = fs::read_to_string(&path).expect("readable");
        let expect_text = if format_of(&path) == Format::Json {
            fs::read_to_string(path.with_extension("json.expect"))
                .expect("JSON fixtures have a .expect file")
        } else {
            text.clone()
        };
        let expected: Vec<Problem> = expect_text
            .lines()
            .filter(|l| l.starts_with("# expect: "))
            .map(parse_expectation)
            .collect();
        assert!(!expected.is_empty(), "{}: no expectations", path.display());
        let owner = text
            .lines()
            .find_map(|l| l.strip_prefix("# owner: partner:"))
            .map_or(Owner::Operator, |id| Owner::Partner(id.to_owned()));

        match ConnectorSpec::load(&text, format_of(&path), &owner) {
            Ok(spec) => panic!("{}: accepted as `{}`", path.display(), spec.id),
            Err(ConnectorError::InvalidSpec { problems }) => {
                assert_eq!(problems, expected, "{}", path.display());
            }
            Err(other) => panic!("{}: unexpected error {other}", path.display()),
        }
    }
}

#[test]
fn partner_connectors_load_for_operator_and_their_own_partner() {
    let partners = files(&dir("partners"), &["yaml"]);
    assert_eq!(partners.len(), 6);
    for path in partners {
        let text = fs::read_to_string(&path).expect("readable");
        let spec = ConnectorSpec::load(&text, Format::Yaml, &Owner::Operator)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let as_partner =
            ConnectorSpec::load(&text, Format::Yaml, &Owner::Partner(spec.partner.clone()))
                .unwrap_or_else(|e| panic!("{} as its partner: {e}", path.display()));
        assert_eq!(spec, as_partner);

        // Types and schema agree: what the types write back is a valid document that loads
        // to the same spec (defaults made explicit).
        let value = serde_json::to_value(&spec).expect("serializable");
        assert_eq!(
            mallgate_schemas::connector_violations(&value),
            vec![],
            "{}",
            path.display()
        );
        let again = ConnectorSpec::load_value(value, &SourceMap::default(), &Owner::Operator)
            .unwrap_or_else(|e| panic!("{} reloaded: {e}", path.display()));
        assert_eq!(spec, again, "{}", path.display());

        // The same document as JSON loads to the same spec.
        let json = serde_json::to_string_pretty(&spec).expect("serializable");
        let from_json = ConnectorSpec::load(&json, Format::Json, &Owner::Operator)
            .unwrap_or_else(|e| panic!("{} as JSON: {e}", path.display()));
        assert_eq!(spec, from_json);
    }
}

#[test]
fn another_partner_cannot_submit_a_partner_connector() {
    let text = fs::read_to_string(dir("partners/voltmart.yaml")).expect("readable");
    let err = ConnectorSpec::load(&text, Format::Yaml, &Owner::Partner("threadline".into()))
        .expect_err("foreign partner");
    let ConnectorError::InvalidSpec { problems } = err else {
        panic!("unexpected error {err}");
    };
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].pointer, "/partner");
    assert_eq!(problems[0].line, Some(10));
}

#[test]
fn a_rejected_literal_secret_is_not_echoed() {
    let text = fs::read_to_string(dir("tests/bad/literal_secret.yaml")).expect("readable");
    let err = ConnectorSpec::load(&text, Format::Yaml, &Owner::Operator).expect_err("literal");
    assert!(!err.to_string().contains("8f2c1e9a77"), "{err}");
    assert!(!format!("{err:?}").contains("8f2c1e9a77"), "{err:?}");
}

#[test]
fn defaults_are_applied() {
    let text = "id: demo\npartner: demo\nkind: supplier\nendpoints:\n  - url: http://127.0.0.1:1\ncapabilities:\n  catalog.get:\n    request: {path: '/items/{id}'}\n    map: .\n";
    let spec = ConnectorSpec::load(text, Format::Yaml, &Owner::Operator).expect("valid");
    assert_eq!(spec.effective_priority(), 10);
    assert_eq!(spec.endpoints[0].weight, 1);
    assert_eq!(spec.policies.timeout_ms, 800);
    assert_eq!(spec.policies.cache.stale_if_error_s, 3600);
    let get = &spec.capabilities[&mallgate_connectors::Capability::CatalogGet];
    assert_eq!(get.records, ".");
    assert!(get.is_idempotent());
}
