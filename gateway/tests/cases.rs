//! `mallgate connector test`: every example connector's cases pass (and every example
//! connector has cases), and a broken case fails with a readable table and exit 1.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

/// `mallgate connector test FILE --cases DIR`: (exit code, output).
fn test(file: &Path, cases: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mallgate"))
        .args(["connector", "test"])
        .arg(file)
        .arg("--cases")
        .arg(cases)
        .output()
        .expect("the CLI runs");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn every_example_connector_passes_its_cases() {
    let partners = root().join("connectors/partners");
    let mut tested = 0;
    for entry in std::fs::read_dir(&partners).expect("connectors").flatten() {
        let file = entry.path();
        let Some(stem) = file.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        let cases = root().join("connectors/cases").join(&stem);
        assert!(
            cases.is_dir(),
            "example connector {stem} has no cases directory at {}",
            cases.display()
        );
        let (code, out) = test(&file, &cases);
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("PASS") && !out.contains("FAIL"), "{out}");
        tested += 1;
    }
    assert_eq!(tested, 6, "the six example connectors");
}

#[test]
fn a_broken_case_fails_with_a_readable_table() {
    let dir = std::env::temp_dir().join(format!(
        "mallgate-cases-{}-{:x}",
        std::process::id(),
        mallgate::cursor::random_u64()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let cases = root().join("connectors/cases/voltmart");
    let good = std::fs::read_to_string(cases.join("get-by-sku.json")).expect("case");
    let mut case: serde_json::Value = serde_json::from_str(&good).expect("json");
    let title = case["expect"]["records"][0]["title"].clone();
    assert!(title.is_string(), "{case}");
    // Three ways to fail: a changed record, a pointer assertion, an unknown field.
    case["expect"]["records"][0]["title"] = "Not the title".into();
    std::fs::write(dir.join("changed.json"), case.to_string()).expect("write");
    let mut asserted: serde_json::Value = serde_json::from_str(&good).expect("json");
    asserted["expect"] = serde_json::json!({
        "count": 1,
        "assert": [{"pointer": "/0/title", "equals": "Another title"},
                   {"pointer": "/0/variants/0/offers/0/price", "exists": true}]
    });
    std::fs::write(dir.join("asserted.json"), asserted.to_string()).expect("write");
    let mut typo: serde_json::Value = serde_json::from_str(&good).expect("json");
    typo["expcet"] = serde_json::json!({});
    std::fs::write(dir.join("typo.json"), typo.to_string()).expect("write");
    std::fs::write(dir.join("good.json"), &good).expect("write");

    let (code, out) = test(&root().join("connectors/partners/voltmart.yaml"), &dir);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("PASS  catalog.get     a product by its Voltmart sku"),
        "{out}"
    );
    assert!(out.contains("records differ at /0/title"), "{out}");
    assert!(
        out.contains(&format!(
            "/0/title: expected \"Another title\", got {title}"
        )),
        "{out}"
    );
    assert!(out.contains("unknown field `expcet`"), "{out}");
    assert!(out.contains("1 of 4 cases passed"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}
