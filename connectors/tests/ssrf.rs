//! The SSRF guard against a real partner on loopback that tries to send the gateway
//! elsewhere: a redirect and a next-page link to non-public addresses are refused, and the
//! guard's allow-list is exact (the operator allow-listed one loopback address, not the
//! range). Literal forms (decimal, hex, mapped IPv6, metadata) are covered by the guard's
//! unit tests; names resolving to loopback by the resolver's.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use mallgate_connectors::mapping::MappingPool;
use mallgate_connectors::runtime::guard::{AddressGuard, Cidr, PublicOnly};
use mallgate_connectors::runtime::secrets::MemorySecretStore;
use mallgate_connectors::runtime::{PartnerResources, RuntimeConfig, connector_from_spec};
use mallgate_connectors::{Capability, ConnectorError, Owner};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A partner that answers every request with `head` (status line and headers) and an empty
/// JSON page; counts the requests it got.
async fn partner(head: &'static str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        // Bounded: a test partner serves at most 50 connections.
        for _ in 0..50 {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let body = r#"{"items": []}"#;
            let reply = format!(
                "{head}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
        }
    });
    (format!("http://{addr}"), hits)
}

fn connector(base: &str, path: &str) -> mallgate_connectors::runtime::Connector {
    let text = format!(
        "id: probe\npartner: probe\nkind: retailer\nendpoints:\n  - url: {base}\n\
         capabilities:\n  catalog.search:\n    request:\n      path: {path}\n\
         \x20   pagination:\n      style: link_header\n    records: .items[]\n    map: .\n"
    );
    // The operator allow-listed exactly the partner's address.
    let guard: Arc<dyn AddressGuard> = Arc::new(PublicOnly::with_allow_list(vec![
        Cidr::parse("127.0.0.1").expect("cidr"),
    ]));
    let resources =
        PartnerResources::new("probe", guard, RuntimeConfig::default()).expect("resources");
    connector_from_spec(
        &text,
        1,
        Owner::Operator,
        resources,
        Arc::new(MemorySecretStore::new()),
        Arc::new(MappingPool::new(1, 16).expect("pool")),
    )
    .expect("the probe connector loads")
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

#[tokio::test]
async fn a_redirect_to_a_private_address_is_refused() {
    for target in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://127.0.0.2:1/",
        "http://[::ffff:127.0.0.2]:1/",
    ] {
        let head: &'static str =
            Box::leak(format!("HTTP/1.1 302 Found\r\nlocation: {target}").into_boxed_str());
        let (base, hits) = partner(head).await;
        let err = connector(&base, "/redirect")
            .call(Capability::CatalogSearch, &json!({}), "ssrf-1", deadline())
            .await
            .expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("refused"), "{target}: {text}");
        assert_eq!(
            hits.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the partner itself was called once"
        );
    }
}

#[tokio::test]
async fn a_next_page_link_to_a_private_address_is_refused() {
    let (base, _) = partner(
        "HTTP/1.1 200 OK\r\nlink: <http://169.254.169.254/latest/meta-data/>; rel=\"next\"",
    )
    .await;
    let err = connector(&base, "/products")
        .call(Capability::CatalogSearch, &json!({}), "ssrf-2", deadline())
        .await
        .expect_err("refused");
    assert!(matches!(err, ConnectorError::AddressDenied { .. }), "{err}");
}

#[tokio::test]
async fn the_allow_list_is_exact() {
    let (base, hits) = partner("HTTP/1.1 200 OK").await;
    let out = connector(&base, "/products")
        .call(Capability::CatalogSearch, &json!({}), "ssrf-3", deadline())
        .await
        .expect("the allow-listed partner answers");
    assert!(out.records.is_empty());
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    let other = base.replace("127.0.0.1", "127.0.0.2");
    let err = connector(&other, "/products")
        .call(Capability::CatalogSearch, &json!({}), "ssrf-4", deadline())
        .await
        .expect_err("127.0.0.2 is not allow-listed");
    assert!(matches!(err, ConnectorError::AddressDenied { .. }), "{err}");
}

#[tokio::test]
async fn a_redirect_to_another_origin_is_refused() {
    // Both partners are on the allow-listed address; only the port differs. A header key
    // must not follow the request to another origin.
    let (elsewhere, elsewhere_hits) = partner("HTTP/1.1 200 OK").await;
    let head: &'static str = Box::leak(
        format!("HTTP/1.1 307 Temporary Redirect\r\nlocation: {elsewhere}/products")
            .into_boxed_str(),
    );
    let (base, hits) = partner(head).await;
    let err = connector(&base, "/products")
        .call(Capability::CatalogSearch, &json!({}), "ssrf-5", deadline())
        .await
        .expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("another origin"), "{text}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        elsewhere_hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the other origin was never called"
    );
}
