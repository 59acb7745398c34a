//! The partner-side checks against the published AWS SigV4 test suite, and the HMAC form
//! refusing every tampering.

use axum::http::HeaderValue;

use super::*;

const NOW: i64 = 1_440_938_160; // 2015-08-30T12:36:00Z, the suite's instant
const SCOPE: &str =
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request";

fn key(session_token: Option<&str>) -> AwsKey<'_> {
    AwsKey {
        access_key_id: "AKIDEXAMPLE",
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        session_token,
        region: "us-east-1",
        service: "service",
        // The suite's raw request lines (`GET /ሴ`) are sent encoded here.
        single_encoded_path: true,
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.append("host", HeaderValue::from_static("example.amazonaws.com"));
    map.append("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
    for (name, value) in pairs {
        map.append(
            axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    map
}

struct Case {
    name: &'static str,
    method: Method,
    uri: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: &'static [u8],
    token: Option<&'static str>,
    /// `SignedHeaders=..., Signature=...` as the suite states it.
    authorization: &'static str,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "get-vanilla",
            method: Method::GET,
            uri: "/",
            headers: vec![],
            body: b"",
            token: None,
            authorization: "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        },
        Case {
            name: "get-vanilla-query-order-key-case",
            method: Method::GET,
            uri: "/?Param2=value2&Param1=value1",
            headers: vec![],
            body: b"",
            token: None,
            authorization: "SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        },
        Case {
            name: "get-utf8",
            method: Method::GET,
            uri: "/%E1%88%B4",
            headers: vec![],
            body: b"",
            token: None,
            authorization: "SignedHeaders=host;x-amz-date, Signature=8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
        },
        Case {
            name: "get-vanilla-utf8-query",
            method: Method::GET,
            uri: "/?%E1%88%B4=bar",
            headers: vec![],
            body: b"",
            token: None,
            authorization: "SignedHeaders=host;x-amz-date, Signature=2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
        },
        Case {
            name: "get-header-value-trim",
            method: Method::GET,
            uri: "/",
            headers: vec![("my-header1", " value1"), ("my-header2", " \"a   b   c\"")],
            body: b"",
            token: None,
            authorization: "SignedHeaders=host;my-header1;my-header2;x-amz-date, Signature=acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
        },
        Case {
            name: "get-header-key-duplicate",
            method: Method::GET,
            uri: "/",
            headers: vec![
                ("my-header1", "value2"),
                ("my-header1", "value2"),
                ("my-header1", "value1"),
            ],
            body: b"",
            token: None,
            authorization: "SignedHeaders=host;my-header1;x-amz-date, Signature=c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
        },
        Case {
            name: "get-vanilla-with-session-token",
            method: Method::GET,
            uri: "/",
            headers: vec![(
                "x-amz-security-token",
                "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267",
            )],
            body: b"",
            token: Some("6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"),
            authorization: "SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8",
        },
        Case {
            name: "post-vanilla-query",
            method: Method::POST,
            uri: "/?Param1=value1",
            headers: vec![],
            body: b"",
            token: None,
            authorization: "SignedHeaders=host;x-amz-date, Signature=28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
        },
        Case {
            name: "post-x-www-form-urlencoded",
            method: Method::POST,
            uri: "/",
            headers: vec![
                ("content-type", "application/x-www-form-urlencoded"),
                ("content-length", "13"),
                (
                    "x-amz-content-sha256",
                    "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
                ),
            ],
            body: b"Param1=value1",
            token: None,
            authorization: "SignedHeaders=content-length;content-type;host;x-amz-content-sha256;x-amz-date, Signature=d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
        },
    ]
}

fn check(case: &Case, authorization: &str, body: &[u8], now: i64) -> Result<(), String> {
    let mut map = headers(&case.headers);
    map.insert(
        "authorization",
        HeaderValue::from_str(&format!("{SCOPE}, {authorization}")).expect("value"),
    );
    let uri: Uri = case.uri.parse().expect("uri");
    verify_sigv4(
        &Received {
            method: &case.method,
            uri: &uri,
            headers: &map,
            body,
        },
        &key(case.token),
        now,
        300,
    )
}

#[test]
fn the_suites_signed_requests_verify_and_tampered_ones_do_not() {
    for case in cases() {
        assert_eq!(
            check(&case, case.authorization, case.body, NOW),
            Ok(()),
            "{}",
            case.name
        );
        // One flipped hex digit of the signature.
        let last = case.authorization.chars().last().unwrap_or('0');
        let flipped = format!(
            "{}{}",
            &case.authorization[..case.authorization.len() - 1],
            if last == '0' { '1' } else { '0' }
        );
        assert!(
            check(&case, &flipped, case.body, NOW).is_err(),
            "{}: tampered signature",
            case.name
        );
        // Too late: replayed ten minutes after.
        let late = check(&case, case.authorization, case.body, NOW + 600).expect_err("stale");
        assert!(late.contains("600s away"), "{}: {late}", case.name);
    }
    // A body other than the one signed.
    let form = cases().pop().expect("a case");
    let err = check(&form, form.authorization, b"Param1=value2", NOW).expect_err("body");
    assert!(err.contains("not the body's hash"), "{err}");
}

#[test]
fn hmac_checks_method_path_query_body_and_time() {
    let check = SignatureCheck::Hmac {
        secret: "s3cr3t".into(),
        algorithm: "sha256".into(),
        encoding: "hex".into(),
        signature_header: "x-signature".into(),
        timestamp_header: "x-timestamp".into(),
        key_id: Some("key-1".into()),
        key_id_header: "x-key-id".into(),
        max_skew_s: 300,
    };
    let canonical = format!(
        "POST\n/v1/rates%20x\na=0&a=1&b=2&q=two%2Bwords\n{}\n1764000000",
        sha256_hex(b"{}")
    );
    let signature = to_hex(&hmac256(b"s3cr3t", canonical.as_bytes()));
    let run = |method: Method, uri: &str, body: &[u8], sig: &str, now: i64| {
        let mut map = HeaderMap::new();
        map.insert("x-signature", HeaderValue::from_str(sig).expect("value"));
        map.insert("x-timestamp", HeaderValue::from_static("1764000000"));
        map.insert("x-key-id", HeaderValue::from_static("key-1"));
        let uri: Uri = uri.parse().expect("uri");
        verify(
            &check,
            &Received {
                method: &method,
                uri: &uri,
                headers: &map,
                body,
            },
            now,
        )
    };
    let uri = "/v1/rates%20x?b=2&a=1&a=0&q=two+words";
    assert_eq!(
        run(Method::POST, uri, b"{}", &signature, 1_764_000_010),
        Ok(())
    );
    assert!(
        run(Method::GET, uri, b"{}", &signature, 1_764_000_010).is_err(),
        "method"
    );
    assert!(
        run(
            Method::POST,
            "/v1/rates?b=2&a=1&a=0&q=two+words",
            b"{}",
            &signature,
            1_764_000_010
        )
        .is_err(),
        "path"
    );
    assert!(
        run(
            Method::POST,
            "/v1/rates%20x?b=3&a=1&a=0&q=two+words",
            b"{}",
            &signature,
            1_764_000_010
        )
        .is_err(),
        "query"
    );
    assert!(
        run(Method::POST, uri, b"{ }", &signature, 1_764_000_010).is_err(),
        "body"
    );
    assert!(
        run(Method::POST, uri, b"{}", &signature, 1_764_000_400).is_err(),
        "time"
    );
}

#[test]
fn paths_are_read_as_aws_reads_them() {
    let path = |text: &str| normalized_path_of(&text.parse::<Uri>().expect("uri"));
    assert_eq!(
        path("/documents%20and%20settings/"),
        "/documents%2520and%2520settings/"
    );
    assert_eq!(path("//example//"), "/example/");
    assert_eq!(path("/./example"), "/example");
    assert_eq!(path("/example/.."), "/");
    assert_eq!(path("/example1/example2/../.."), "/");
    let single = |text: &str| path_of(&text.parse::<Uri>().expect("uri"));
    assert_eq!(
        single("/documents%20and%20settings/"),
        "/documents%20and%20settings/"
    );
    assert_eq!(single("/a%ffb"), "/a%FFb");
    assert_eq!(
        query_of(&"/?b=x+y&a=%20".parse::<Uri>().expect("uri")),
        "a=%20&b=x%2By"
    );
}

#[test]
fn over_http2_the_host_is_the_authority() {
    let vanilla = cases().into_iter().next().expect("get-vanilla");
    let mut map = HeaderMap::new();
    map.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
    map.insert(
        "authorization",
        HeaderValue::from_str(&format!("{SCOPE}, {}", vanilla.authorization)).expect("value"),
    );
    let uri: Uri = "https://example.amazonaws.com/".parse().expect("uri");
    let received = Received {
        method: &Method::GET,
        uri: &uri,
        headers: &map,
        body: b"",
    };
    assert_eq!(verify_sigv4(&received, &key(None), NOW, 300), Ok(()));
    let other: Uri = "https://example.amazonaws.com:8443/".parse().expect("uri");
    let moved = Received {
        uri: &other,
        ..received
    };
    assert!(verify_sigv4(&moved, &key(None), NOW, 300).is_err());
}

#[test]
fn a_check_debug_form_leaves_its_secrets_out() {
    let hmac = SignatureCheck::Hmac {
        secret: "hmac-s3cr3t".into(),
        algorithm: "sha256".into(),
        encoding: "hex".into(),
        signature_header: "x-signature".into(),
        timestamp_header: "x-timestamp".into(),
        key_id: Some("key-1".into()),
        key_id_header: "x-key-id".into(),
        max_skew_s: 300,
    };
    let aws = SignatureCheck::AwsSigv4 {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "aws-s3cr3t".into(),
        session_token: Some("session-s3cr3t".into()),
        region: "us-east-1".into(),
        service: "execute-api".into(),
        max_skew_s: 300,
    };
    let shown = format!("{hmac:?} {aws:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(
        shown.contains("key-1") && shown.contains("AKIDEXAMPLE"),
        "{shown}"
    );
}
