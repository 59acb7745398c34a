//! Sandbox and prelude-native tests: hostile programs are refused or contained, and the
//! test process survives all of them.

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

fn globals() -> [Val; 3] {
    [
        to_val(
            &json!({"partner_id": "voltmart", "connector_id": "voltmart", "connector_version": 1, "fetched_at": "2026-11-27T14:03:00Z"}),
        ),
        to_val(&json!({"q": "tv"})),
        to_val(&json!({})),
    ]
}

fn budget() -> Budget {
    Budget::until(Instant::now() + Duration::from_secs(30))
}

fn run(code: &str, input: serde_json::Value) -> Result<Vec<serde_json::Value>, String> {
    let program = Program::compile(code).map_err(|e| e.to_string())?;
    let (outputs, _) = program
        .run(to_val(&input), globals(), &budget())
        .map_err(|e| format!("{e:?}"))?;
    let mut cap = 1 << 20;
    Ok(outputs
        .iter()
        .map(|v| to_json(v, &mut cap).expect("json"))
        .collect())
}

fn refused(code: &str) -> String {
    match Program::compile(code) {
        Ok(_) => panic!("accepted: {}", &code[..code.len().min(60)]),
        Err(e) => e.to_string(),
    }
}

#[test]
fn ordinary_programs_run_with_globals() {
    assert_eq!(
        run(
            "{t: .name, q: $query.q, p: $provenance.partner_id, n: ([range(3)] | length)}",
            json!({"name": "TV"})
        ),
        Ok(vec![json!({"t": "TV", "q": "tv", "p": "voltmart", "n": 3})])
    );
    assert_eq!(
        run(".[] | each", json!([[1, 2], 3])),
        Ok(vec![json!(1), json!(2), json!(3)])
    );
    assert_eq!(
        run("[.. | numbers]", json!({"a": [1, {"b": 2}]})),
        Ok(vec![json!([1, 2])])
    );
}

#[test]
fn hostile_programs_are_refused_at_compile_time() {
    assert_eq!(
        refused("def f: f; f"),
        "invalid jq program: recursive definition `f` is not allowed"
    );
    assert_eq!(
        refused("def f: 1 + f; f"),
        "invalid jq program: recursive definition `f` is not allowed"
    );
    // jq resolves a name among the definitions before it: a forward call is undefined,
    // so mutual recursion needs nesting, and nesting is caught.
    let forward = refused("def f: g; def g: f; f");
    assert!(forward.contains("undefined filter `g`"), "{forward}");
    let mutual = refused("def f: def g: f; g; f");
    assert!(
        mutual.starts_with("invalid jq program: recursive definition `"),
        "{mutual}"
    );
    for (code, undefined) in [
        ("last(repeat(1))", "repeat"),
        ("env", "env"),
        ("$ENV", "$ENV"),
        ("halt", "halt"),
        ("halt_error", "halt_error"),
        ("input", "input"),
        ("[inputs]", "inputs"),
        ("debug", "debug"),
        ("stderr", "stderr"),
        ("now", "now"),
        ("[limit(5; 1 | while(true; .))]", "while"),
        ("[.[] | until(false; .)]", "until"),
        ("recurse(. + 1)", "recurse"),
    ] {
        let reason = refused(code);
        assert!(
            reason.contains("undefined") && reason.contains(&format!("`{undefined}`")),
            "{code}: {reason}"
        );
    }
    let long = format!(". as $x | {}", "1 + ".repeat(25_000));
    assert_eq!(
        refused(&long),
        "invalid jq program: program is 100010 bytes; the limit is 32768"
    );
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    assert_eq!(
        refused(&deep),
        "invalid jq program: program nests deeper than 64 brackets"
    );
    let deep_ifs = format!(
        "{}1{}",
        "if true then ".repeat(2500),
        " else 0 end".repeat(2500)
    );
    // Deep keyword nesting within the size cap parses on the big-stack thread: accepted or
    // refused, never a crash.
    let _ = Program::compile(&deep_ifs[..deep_ifs.len().min(MAX_PROGRAM_BYTES)]);
    assert!(refused("import \"evil\" as e; 1").contains("imports are not allowed"));
    assert!(refused(".a |").starts_with("invalid jq program: jq does not parse: line 1, column"));
}

#[test]
fn range_is_capped_per_run() {
    let err = run("[range(1e9)] | length", json!(null)).expect_err("capped");
    assert!(err.contains("exceeds the sandbox budget"), "{err}");
    let err = run("[range(60000), range(60000)] | length", json!(null)).expect_err("capped");
    assert!(err.contains("exceeds the sandbox budget"), "{err}");
    assert_eq!(
        run("[range(2; 5)]", json!(null)),
        Ok(vec![json!([2, 3, 4])])
    );
    assert_eq!(
        run("[[1, [2]], [3]] | flatten", json!(null)),
        Ok(vec![json!([1, 2, 3])])
    );
    assert_eq!(
        run("[[1, 2], [3, 4]] | transpose", json!(null)),
        Ok(vec![json!([[1, 3], [2, 4]])])
    );
    assert_eq!(
        run("error(\"bad record\")", json!(null)),
        Err("Failed(\"bad record\")".into())
    );
}

#[test]
fn output_count_is_capped() {
    let program = Program::compile(".[]").expect("compiles");
    let input = to_val(&json!((0..50).collect::<Vec<_>>()));
    let tight = Budget {
        max_outputs: 10,
        ..budget()
    };
    assert!(matches!(
        program.run(input, globals(), &tight),
        Err(RunError::Overrun(_))
    ));
}

#[test]
fn deadline_is_checked_between_outputs() {
    let program = Program::compile(".[]").expect("compiles");
    let past = Budget::until(Instant::now() - Duration::from_millis(1));
    let input = to_val(&json!([1, 2]));
    assert_eq!(
        program.run(input, globals(), &past),
        Err(RunError::Overrun("mapping deadline exceeded".into()))
    );
}

#[test]
fn prelude_natives() {
    assert_eq!(
        run(
            "[.[] | money(\"USD\") | .amount_minor]",
            json!(["12.99", 849.99, "$12.99", "USD 12.99", 12.990])
        ),
        Ok(vec![json!([1299, 84999, 1299, 1299, 1299])])
    );
    assert_eq!(
        run("money(\"JPY\")", json!("1500")),
        Ok(vec![json!({"amount_minor": 1500, "currency": "JPY"})])
    );
    let program = Program::compile("money(\"USD\")").expect("compiles");
    let (out, warnings) = program
        .run(to_val(&json!("0.125")), globals(), &budget())
        .expect("runs");
    let mut cap = 1 << 20;
    assert_eq!(
        to_json(&out[0], &mut cap).expect("json"),
        json!({"amount_minor": 13, "currency": "USD", "exact": "0.125"})
    );
    assert_eq!(warnings[0].code, "sub_unit_amount");
    assert_eq!(
        run(
            "[.[] | gtin14 | .value]",
            json!(["042100005264", "04252614", 42100005264i64, "042100005265"])
        ),
        Ok(vec![json!([
            "00042100005264",
            "00042100005264",
            "00042100005264",
            null
        ])])
    );
    let err = run("money(\"XXY\")", json!("1")).expect_err("currency");
    assert!(err.contains("not an ISO 4217 currency code"), "{err}");
}

#[test]
fn the_compiled_program_is_shared_across_threads() {
    let program =
        std::sync::Arc::new(Program::compile("money(\"USD\") | .amount_minor").expect("compiles"));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let program = program.clone();
            std::thread::spawn(move || {
                let (out, _) = program
                    .run(to_val(&json!(format!("{i}.50"))), globals(), &budget())
                    .expect("runs");
                out[0].to_string()
            })
        })
        .collect();
    let results: Vec<String> = handles
        .into_iter()
        .map(|h| h.join().expect("joined"))
        .collect();
    assert_eq!(results, ["50", "150", "250", "350"]);
}

#[test]
fn dropped_standard_definitions_are_the_unbounded_ones() {
    let kept: HashSet<(&str, usize)> = allowed_std_defs()
        .iter()
        .map(|d| (d.name, d.args.len()))
        .collect();
    let all: Vec<(&str, usize)> = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs())
        .map(|d| (d.name, d.args.len()))
        .collect();
    let mut dropped: Vec<String> = all
        .iter()
        .filter(|d| !kept.contains(d))
        .map(|(n, a)| format!("{n}/{a}"))
        .collect();
    dropped.sort();
    dropped.dedup();
    eprintln!("dropped: {}", dropped.join(" "));
    for must in [
        "map/1",
        "select/1",
        "to_entries/0",
        "with_entries/1",
        "add/0",
        "join/1",
        "first/0",
        "tostring/0",
    ] {
        assert!(
            kept.iter().any(|(n, a)| format!("{n}/{a}") == must),
            "{must} dropped"
        );
    }
    for gone in [
        "repeat/1",
        "while/2",
        "until/2",
        "halt/0",
        "debug/0",
        "recurse/1",
    ] {
        assert!(dropped.contains(&gone.to_owned()), "{gone} kept");
    }
}

#[test]
fn string_repetition_is_bounded_by_the_dry_run_not_here() {
    // `"x" * n` allocates n bytes in one output: no in-process check sees it, which is why
    // candidates run in the dry-run child first (tests/sandbox.rs kills such a child).
    assert_eq!(run(r#""ab" * 3"#, json!(null)), Ok(vec![json!("ababab")]));
}

#[test]
fn shared_definitions_are_callable_and_faults_are_located_in_their_part() {
    let defs = "def sku_id: \"voltmart:\\(.sku)\";\ndef ref: $provenance + {source_ref: (.sku | tostring)};";
    Program::check_definitions(defs).expect("definitions check");
    let program =
        Program::compile_with(Some(defs), "{id: sku_id, r: ref.source_ref}").expect("compiles");
    let (outputs, _) = program
        .run(to_val(&json!({"sku": 7})), globals(), &budget())
        .expect("runs");
    let mut cap = 1 << 20;
    assert_eq!(
        to_json(&outputs[0], &mut cap).expect("json"),
        json!({"id": "voltmart:7", "r": "7"})
    );
    // A program without the definitions does not see them.
    assert!(refused("sku_id").contains("undefined filter `sku_id`"));

    // A fault in the definitions names the definitions' own line and column.
    let err = Program::check_definitions("def a: 1;\ndef b: nope;")
        .expect_err("undefined")
        .to_string();
    assert!(
        err.contains("definitions line 2, column 8: undefined filter `nope`"),
        "{err}"
    );
    // A fault in the program is located in the program, not shifted by the definitions.
    let err = Program::compile_with(Some("def a: 1;\ndef b: 2;"), "a |\n nope")
        .expect_err("undefined")
        .to_string();
    assert!(
        err.contains("line 2, column 2: undefined filter `nope`"),
        "{err}"
    );
    assert!(!err.contains("definitions line"), "{err}");
}

#[test]
fn shared_definitions_are_only_bounded_non_recursive_defs() {
    let only = Program::check_definitions("def a: 1; a").expect_err("expression");
    assert!(
        only.to_string().contains("only `def name: body;` items"),
        "{only}"
    );
    let rec = Program::check_definitions("def a: def b: a; b;").expect_err("recursive");
    assert!(rec.to_string().contains("recursive definition"), "{rec}");
    let forward = Program::check_definitions("def a: b; def b: a;").expect_err("forward");
    assert!(
        forward
            .to_string()
            .contains("definitions line 1, column 8: undefined filter `b`"),
        "{forward}"
    );
    // A program's own recursion is refused beside definitions too.
    let err = Program::compile_with(Some("def a: 1;"), "def a: a; a").expect_err("recursive");
    assert!(
        err.to_string().contains("recursive definition `a`"),
        "{err}"
    );
    // Calls resolve by scope as jq resolves them: the program's `a` calls the shared `b`,
    // which calls the shared `a` (the only one it can see). Nothing recurses.
    Program::compile_with(Some("def a: 1; def b: a;"), "def a: b + 1; a")
        .expect("a name defined again is another definition");
    // A comment that ends in a backslash (continued, in jq 1.7) cannot swallow the
    // program's first line: the program still calls `a`, so `a` must stay defined.
    let err = Program::compile_with(Some("def a: 1; # note \\"), "a | b")
        .expect_err("`b` is undefined in the program");
    assert!(err.to_string().contains("line 1, column 5"), "{err}");
    assert!(!err.to_string().contains("definitions line"), "{err}");
    for code in ["def f(f): f; f(1)", "def f: 1; def f(g): g + f; f(2)"] {
        Program::compile(code).unwrap_or_else(|e| panic!("{code}: {e}"));
    }
    for code in [
        "def f: def g: f; g; f",
        "def f(g): g; def h: f(h); h",
        "def a: 1; def b: def a: b; a; b",
        // A definition sees itself, not the one it shadows.
        "def a: 1; def a: a + 1; a",
    ] {
        let err = Program::compile(code).expect_err(code);
        assert!(
            err.to_string().contains("recursive definition"),
            "{code}: {err}"
        );
    }
    let big = format!("def a: \"{}\";", "x".repeat(MAX_PROGRAM_BYTES));
    let err = Program::check_definitions(&big).expect_err("too big");
    assert!(err.to_string().contains("definitions is"), "{err}");
    let deep = format!("def a: {}1{};", "(".repeat(40), ")".repeat(40));
    Program::check_definitions(&deep).expect("40 deep is fine alone");
    // Refused by its depth before the (recursive) parser sees it, even unbalanced.
    let abyss = format!("def a: {}", "(".repeat(30_000));
    let err = Program::check_definitions(&abyss).expect_err("too deep");
    assert!(err.to_string().contains("nests deeper"), "{err}");
    let err = Program::compile_with(
        Some(&format!("def a: {}1{};", "(".repeat(40), "")),
        &format!("{}.{}", "(".repeat(30), ")".repeat(30)),
    )
    .expect_err("unbalanced definitions cannot lend the program their depth");
    assert!(err.to_string().contains("nests deeper"), "{err}");
    // Imports are no more allowed in definitions than in programs.
    let err = Program::check_definitions("include \"evil\"; def a: 1;").expect_err("include");
    assert_eq!(
        err.to_string(),
        "invalid jq program: jq does not parse: definitions line 1, column 1: imports are not allowed"
    );
}

#[test]
fn a_syntax_fault_in_definitions_is_located_in_them() {
    let fault = |defs: &str| {
        Program::check_definitions(defs)
            .expect_err(defs)
            .to_string()
            .replace("invalid jq program: jq does not parse: ", "")
    };
    // Joined to a program, these used to be located in the program or not at all.
    assert_eq!(
        fault("def a: 1"),
        "definitions line 1, column 9: expected ; before the end"
    );
    assert_eq!(
        fault("def a: 1;\ndef b: \"x;"),
        "definitions line 2, column 11: expected closing quote"
    );
    assert_eq!(
        fault("def a: 1; 2"),
        "definitions line 1, column 11: expected `def`: definitions must be only `def name: body;` items, with no expression after them"
    );
    assert_eq!(
        fault("def: 1;"),
        "definitions line 1, column 4: expected identifier"
    );
    for import in ["include \"evil\";", "import \"evil\" as e;"] {
        assert_eq!(
            fault(&format!("def a: 1;\n{import}")),
            "definitions line 2, column 1: imports are not allowed"
        );
    }
}
