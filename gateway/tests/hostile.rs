//! The hostile-connector suite: Voltmart's own admin token registers, one after another,
//! connectors whose search mapping is hostile — stack depth, memory and CPU blow-ups,
//! programs the compile-time checks refuse — as the active version and as a canary, while
//! a bounded load of searches checks that every other partner keeps answering live. Each
//! program is either refused at registration (compile checks, or its trial run on the
//! partner's recorded reply) or quarantined at run time, after which the last good version
//! serves; a gateway restarted on the same state directory serves without crashing.
//!
//! Run-time programs fire only for the query `camera`, so they pass the trial run on the
//! recorded sample (a search for something else) and reach the sandbox pool: the suite
//! tests both lines of defence.

use mallgate_testkit as support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Mall;
use support::admin::{admin_mall, admin_send, audit_log, connector_text, live, serving};

const OPERATOR: &str = "operator-token-for-hostile-01";
const VOLTMART: &str = "voltmart-token-for-hostile-01";

/// Programs the sandbox pool must contain at run time (each an expression giving a title).
const RUN_TIME: &[(&str, &str)] = &[
    (
        "fromjson of 1e6 nested arrays",
        r#"("[" * 1000000) + ("]" * 1000000) | fromjson | tostring"#,
    ),
    (
        "fromjson of 1e6 nested objects",
        r#"("{\"a\":" * 1000000) + "1" + ("}" * 1000000) | fromjson | tostring"#,
    ),
    (
        "fromjson of 2e6 open brackets",
        r#"("[" * 2000000) | fromjson | tostring"#,
    ),
    ("a 10 GB string", r#""x" * 10000000000 | length | tostring"#),
    (
        "a string of strings",
        r#""x" * 100000 | . * 100000 | length | tostring"#,
    ),
    (
        "string doubling",
        r#"reduce range(40) as $i ("x"; . + .) | length | tostring"#,
    ),
    (
        "array doubling",
        "reduce range(40) as $i ([1]; . + .) | length | tostring",
    ),
    (
        "object doubling",
        r#"reduce range(30) as $i ({}; . as $o | {a: $o, b: $o}) | tojson | length | tostring"#,
    ),
    (
        "a triple product array",
        "[range(1000)] as $a | [$a[] as $x | $a[] as $y | $a[] | 1] | length | tostring",
    ),
    (
        "a triple product reduce",
        "[range(1000)] as $a | reduce ($a[] as $x | $a[] as $y | $a[]) as $i (0; . + 1) | tostring",
    ),
    (
        "a quadruple product",
        "[range(300)] as $a | [limit(1; $a[] as $w | $a[] as $x | $a[] as $y | $a[] | select(. < 0))] | length | tostring",
    ),
    (
        "a long reduce of ranges",
        "[range(100000)] as $a | reduce $a[] as $i (0; . + ($a | length)) as $n | reduce ($a[] as $x | $a[]) as $j ($n; . + 1) | tostring",
    ),
    (
        "deep nesting, then tojson",
        r#"reduce ("x" * 3000000 | explode)[] as $c (null; [.]) | tojson | length | tostring"#,
    ),
    (
        "deep nesting through recurse",
        r#"reduce ("x" * 3000000 | explode)[] as $c (null; [.]) | [recurse] | length | tostring"#,
    ),
    (
        "deep nesting through `..`",
        r#"reduce ("x" * 3000000 | explode)[] as $c (null; {a: .}) | [..] | length | tostring"#,
    ),
    (
        "deep setpath",
        r#"null | setpath("x" * 3000000 | explode | map("a"); 1) | tojson | length | tostring"#,
    ),
    (
        "deep nesting through flatten",
        r#"reduce ("x" * 3000000 | explode)[] as $c (0; [.]) | flatten | tojson | length | tostring"#,
    ),
    (
        "a billion splits",
        r#""x" * 200000000 | [splits("")] | length | tostring"#,
    ),
    (
        "exponential paths",
        "reduce range(26) as $i (1; [., .]) | [paths] | length | tostring",
    ),
    (
        "combinations",
        "[range(50)] as $a | [$a, $a, $a, $a, $a, $a] | [combinations] | length | tostring",
    ),
    (
        "a huge join",
        r#"[range(100000) | tostring] as $a | [$a[] as $x | $a[] | $x] | join(",") | length | tostring"#,
    ),
    (
        "exponential string via reduce and tojson",
        r#"reduce range(40) as $i ("x"; tojson) | length | tostring"#,
    ),
];

/// Programs refused at registration by the compile-time checks: (name, program).
const COMPILE_TIME: &[(&str, &str)] = &[
    ("$ENV", "$ENV.PATH"),
    ("env", "env.PATH"),
    ("input", "input"),
    ("inputs", "[inputs] | length | tostring"),
    ("halt", "halt"),
    ("halt_error", r#""x" | halt_error"#),
    ("debug", ".name | debug"),
    ("stderr", ".name | stderr"),
    ("now", "now | tostring"),
    ("localtime", "now | localtime | tostring"),
    ("mktime", "[2026,1,1,0,0,0,0,0] | mktime | tostring"),
    ("repeat", "[limit(10; repeat(.name))] | length | tostring"),
    ("while", "[.name | while(true; .)] | length | tostring"),
    ("until", ".name | until(false; .)"),
    ("recurse(f)", "[.name | recurse(. + .)] | length | tostring"),
    (
        "recurse(f; cond)",
        "[1 | recurse(. + 1; true)] | length | tostring",
    ),
    ("a recursive definition", "def f: f; f"),
    ("a mutually recursive definition", "def f: def g: f; g; f"),
    ("an import", r#"import "evil" as e; e::x"#),
    ("an include", r#"include "evil"; x"#),
    (
        "nesting past the cap",
        "(((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((.name)))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))",
    ),
    ("input_filename", "input_filename"),
];

/// Programs that fire on every record, so the trial run on the recorded sample refuses them.
const AT_TRIAL: &[(&str, &str)] = &[
    (
        "unconditional stack bomb",
        r#"("[" * 1000000) + ("]" * 1000000) | fromjson | tostring"#,
    ),
    (
        "unconditional memory bomb",
        r#""x" * 10000000000 | length | tostring"#,
    ),
    (
        "unconditional CPU bomb",
        "[range(1000)] as $a | reduce ($a[] as $x | $a[] as $y | $a[]) as $i (0; . + 1) | tostring",
    ),
    (
        "unconditional doubling",
        r#"reduce range(40) as $i ("x"; . + .) | length | tostring"#,
    ),
];

async fn mall() -> Mall {
    admin_mall(
        &[("operator", OPERATOR), ("partner:voltmart", VOLTMART)],
        |config| {
            // A runaway is killed after 1 s, whatever the call's deadline; the warm-up's
            // recorded reply stays the sample (a later `camera` reply would trip the trial).
            config.sandbox.run_timeout_ms = 1000;
            config.sandbox.sample_refresh_s = 86_400;
        },
    )
    .await
}

/// The query that sets off a triggered program (Voltmart has cameras to map).
const TRIGGER: &str = "camera";

/// Voltmart's connector with `title` computed by `program`: only for the query [`TRIGGER`] when
/// `triggered`, else for every record. `tag` makes each document distinct.
fn hostile(mall: &Mall, program: &str, triggered: bool, tag: &str) -> String {
    let text = connector_text(mall, "voltmart.yaml");
    let title = if triggered {
        format!(
            "(if ($query.q // \"\") == \"{TRIGGER}\" then ({program}) else (.name | clean_text) end)"
        )
    } else {
        format!("({program})")
    };
    let patched = text.replacen(
        "title: (.name | clean_text),",
        &format!("title: {title},"),
        1,
    );
    assert_ne!(patched, text, "the search map has the title line");
    format!("# hostile: {tag}\n{patched}")
}

async fn put(mall: &Mall, document: String, canary: bool) -> (u16, Value) {
    let served = serving(mall, "voltmart").unwrap_or(0);
    let query = if canary { "?canary_percent=50" } else { "" };
    admin_send(
        mall,
        reqwest::Method::PUT,
        &format!("/admin/v1/connectors/voltmart{query}"),
        VOLTMART,
        &[("if-match", format!("\"voltmart-v{served}\""))],
        Some(document),
    )
    .await
}

/// Whether `version` of Voltmart serves, as the active version or as a canary.
fn serves(mall: &Mall, version: u32) -> bool {
    let snapshot = mall.gateway.api.registry.load();
    snapshot
        .connectors
        .iter()
        .chain(snapshot.canaries.iter().map(|k| &k.live))
        .any(|c| c.id() == "voltmart" && c.version() == version)
}

/// Where the serving Voltmart version came from (a file name, or `admin:...`).
fn source(mall: &Mall) -> Option<String> {
    live(mall, "voltmart").map(|c| c.source.clone())
}

fn quarantined(mall: &Mall, version: u32) -> bool {
    let store = mall.gateway.admin.as_ref().expect("admin").store();
    store
        .quarantined("voltmart", version)
        .expect("store")
        .is_some()
}

/// The bounded background load: searches for ordinary things, every other partner `live`
/// or `cached` and every answer a 200. Returns (searches, violations).
fn load(mall: Arc<Mall>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let mut violations = Vec::new();
        let started = Instant::now();
        let mut n = 0usize;
        // Bounded in count and time; the suite stops it sooner.
        while !stop.load(Ordering::Acquire)
            && n < 20_000
            && started.elapsed() < Duration::from_secs(900)
        {
            n += 1;
            // Twenty queries, cached once asked: the partners' own call limits (Threadline's
            // leaky bucket) are never the reason a source fails here.
            let answer = mall
                .get(&format!("/v1/products?q=speaker{}&limit=5", n % 20))
                .await;
            if answer.status != 200 {
                violations.push(format!("search {n}: HTTP {}", answer.status));
                continue;
            }
            for s in answer.body["sources"].as_array().into_iter().flatten() {
                let outcome = s["outcome"].as_str().unwrap_or_default();
                if s["partner"] != "voltmart" && !matches!(outcome, "live" | "cached") {
                    violations.push(format!(
                        "search {n}: {} was {outcome}: {}",
                        s["partner"], s["error"]
                    ));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (n, violations)
    })
}

/// Searches the trigger until version `version` is quarantined (at most `max` searches); the
/// number of searches it took.
async fn boom_until_quarantined(mall: &Mall, version: u32, max: usize) -> Option<usize> {
    for n in 1..=max {
        // A new search each time (a price cap no product reaches): a first page of the
        // same search would come from its result window without asking any partner.
        let answer = mall
            .get(&format!(
                "/v1/products?q={TRIGGER}&currency=USD&max_price={}",
                1_000_000_000 + n
            ))
            .await;
        assert!(
            matches!(answer.status, 200 | 503),
            "a hostile version costs its own source only: HTTP {}",
            answer.status
        );
        for s in answer.body["sources"].as_array().into_iter().flatten() {
            if s["partner"] != "voltmart" {
                assert!(
                    matches!(s["outcome"].as_str(), Some("live" | "cached")),
                    "{s}"
                );
            }
        }
        // The guardian looks every 200 ms.
        for _ in 0..10 {
            if quarantined(mall, version) {
                return Some(n);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stdout)] // the per-program report (`--nocapture` shows it)
async fn no_hostile_connector_takes_the_mall_down() {
    let mall = Arc::new(mall().await);
    // Warm up: Voltmart's search reply is recorded as the sample trial runs use.
    for q in ["headphones", "speaker"] {
        assert_eq!(mall.get(&format!("/v1/products?q={q}")).await.status, 200);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let background = load(Arc::clone(&mall), Arc::clone(&stop));
    let refused = AtomicUsize::new(0);
    let mut report = Vec::new();

    for (name, program) in COMPILE_TIME {
        let (status, body) = put(&mall, hostile(&mall, program, true, name), false).await;
        assert_eq!(status, 422, "{name}: {body}");
        let pointer = body["problems"][0]["pointer"].as_str().unwrap_or_default();
        assert_eq!(
            pointer, "/capabilities/catalog.search/map",
            "{name}: {body}"
        );
        refused.fetch_add(1, Ordering::Relaxed);
        report.push(format!(
            "| {name} | refused at registration (compile checks) | | |"
        ));
    }
    for (name, program) in AT_TRIAL {
        let (status, body) = put(&mall, hostile(&mall, program, false, name), false).await;
        assert_eq!(status, 422, "{name}: {body}");
        assert_eq!(
            body["problems"][0]["pointer"], "/capabilities/catalog.search",
            "{name}: {body}"
        );
        report.push(format!(
            "| {name} | refused at registration (trial run on the recorded reply) | | |"
        ));
    }
    for (name, program) in RUN_TIME {
        for canary in [false, true] {
            let tag = format!("{name}{}", if canary { " (canary)" } else { "" });
            let started = Instant::now();
            let (status, body) = put(&mall, hostile(&mall, program, true, &tag), canary).await;
            assert_eq!(status, if canary { 202 } else { 200 }, "{tag}: {body}");
            let version = if canary {
                body["canary"]["version"].as_u64()
            } else {
                body["version"].as_u64()
            }
            .and_then(|v| u32::try_from(v).ok())
            .expect("version");
            // A canary takes half the calls and is quarantined on its first overrun: 40
            // searches miss it with a chance of 2^-40.
            let searches = boom_until_quarantined(&mall, version, 40)
                .await
                .unwrap_or_else(|| panic!("{tag}: v{version} was not quarantined"));
            // The rollback follows the decision (already on disk) within a reload.
            for _ in 0..50 {
                if !serves(&mall, version) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let after = started.elapsed();
            assert!(!serves(&mall, version), "{tag}: v{version} still serves");
            // The last good version serves again: the directory's document.
            assert_eq!(source(&mall).as_deref(), Some("voltmart.yaml"), "{tag}");
            let answer = mall.get(&format!("/v1/products?q={TRIGGER}")).await;
            assert!(
                matches!(answer.outcome("voltmart"), Some("live" | "cached")),
                "{tag}: {}",
                answer.body
            );
            report.push(format!(
                "| {tag} | quarantined | {searches} | {} ms |",
                after.as_millis()
            ));
        }
    }
    stop.store(true, Ordering::Release);
    let (searches, violations) = background.await.expect("load");
    assert!(searches > 0);
    assert!(
        violations.is_empty(),
        "{} violations, the first: {:?}",
        violations.len(),
        violations.first()
    );

    let audit = audit_log(&mall);
    assert_eq!(
        audit.matches("\"connector.quarantined\"").count(),
        RUN_TIME.len() * 2,
        "every run-time program was quarantined once as active and once as a canary"
    );
    let total = COMPILE_TIME.len() + AT_TRIAL.len() + RUN_TIME.len();
    assert!(total >= 40, "{total} programs");
    println!(
        "\n{total} hostile programs; {searches} background searches, none failed for another partner\n\
         | program | outcome | searches to quarantine | time to quarantine |\n|---|---|---|---|\n{}",
        report.join("\n")
    );

    // A gateway started on the same state directory (a restart) serves the last good
    // version and never re-activates a quarantined one.
    let config = mall.gateway.api.config().clone();
    let restarted = mallgate::Gateway::build(config, mallgate::demo::demo_secrets())
        .expect("builds on the same state directory")
        .start()
        .expect("listens");
    let snapshot = restarted.api.registry.load();
    let voltmart = snapshot
        .connectors
        .iter()
        .find(|c| c.id() == "voltmart")
        .expect("voltmart serves");
    assert_eq!(voltmart.source, "voltmart.yaml", "the last good version");
    assert!(!quarantined(&mall, voltmart.version()));
    assert!(snapshot.canaries.is_empty());
    let answer: Value = mall
        .http
        .get(format!("{}/v1/products?q={TRIGGER}", restarted.url()))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("json");
    let outcome = answer["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["partner"] == "voltmart"))
        .and_then(|s| s["outcome"].as_str());
    assert!(matches!(outcome, Some("live" | "cached")), "{answer}");
    restarted.stop();
}
