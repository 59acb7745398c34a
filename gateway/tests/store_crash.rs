//! A process killed (SIGKILL) in the middle of store writes leaves a store that opens with
//! its last good version: the test binary runs itself as the writer child, kills it at
//! varying moments, and reopens the state directory each time.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use mallgate::store::Store;

const CHILD_ENV: &str = "MALLGATE_STORE_CRASH_CHILD";

/// The child: writes and activates versions as fast as it can until killed (bounded: it
/// stops by itself after 100,000 versions).
#[test]
fn store_writer_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // Only meaningful as the child of `a_killed_writer_leaves_the_last_good_version`.
    };
    let store = Store::open(&PathBuf::from(dir)).expect("open");
    for i in 0..100_000u32 {
        let text = format!("id: crash\n# version body {i}\n{}", "x".repeat(4096));
        let meta = store
            .add_version("crash", "crash", &text, "operator")
            .expect("add");
        store
            .set_active("crash", Some(meta.version))
            .expect("activate");
        store
            .audit(&mallgate::store::AuditEntry {
                at: String::new(),
                actor: "operator".into(),
                action: "connector.put".into(),
                target: "crash".into(),
                version: Some(meta.version),
                result: "ok".into(),
                detail: None,
            })
            .expect("audit");
    }
}

#[test]
fn a_killed_writer_leaves_the_last_good_version() {
    let dir = std::env::temp_dir().join(format!(
        "mallgate-store-crash-{}-{:x}",
        std::process::id(),
        mallgate::cursor::random_u64()
    ));
    let exe = std::env::current_exe().expect("test binary");
    let mut last_active = 0;
    for round in 0..5u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "store_writer_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the writer starts");
        // Let it get some writes done, at a different moment each round.
        std::thread::sleep(Duration::from_millis(150 + 37 * round));
        child.kill().expect("SIGKILL");
        let _ = child.wait();

        let store = Store::open(&dir).expect("the store reopens");
        let active = store.active("crash").expect("active readable");
        let versions = store.versions("crash").expect("versions");
        if let Some(v) = active {
            let text = store
                .document("crash", v)
                .expect("the active document is whole");
            assert!(
                text.starts_with("id: crash\n"),
                "round {round}: torn document"
            );
            assert!(
                text.ends_with(&"x".repeat(4096)),
                "round {round}: torn document"
            );
            assert!(
                versions.iter().any(|m| m.version == v),
                "round {round}: active has metadata"
            );
            assert!(
                v >= last_active,
                "round {round}: the pointer never goes back"
            );
            last_active = v;
        }
        for m in &versions {
            let text = store
                .document("crash", m.version)
                .expect("listed versions are whole");
            assert!(text.ends_with(&"x".repeat(4096)));
        }
        for line in store.audit_log().expect("audit").lines() {
            // A torn last line is possible in an append-only log only if the kill lands in
            // the middle of one write; every complete line parses.
            if line.ends_with('}') {
                serde_json::from_str::<serde_json::Value>(line).expect("audit lines parse");
            }
        }
        let leftovers = std::fs::read_dir(dir.join("connectors/crash"))
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .count();
        assert_eq!(
            leftovers, 0,
            "round {round}: opening cleans interrupted temp files"
        );
    }
    assert!(
        last_active > 0,
        "the writer got writes done before being killed"
    );
    let _ = std::fs::remove_dir_all(dir);
}
