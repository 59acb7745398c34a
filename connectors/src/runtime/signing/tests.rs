//! SigV4 against the published AWS Signature Version 4 test suite (credentials
//! `AKIDEXAMPLE`, region `us-east-1`, service `service`, 2015-08-30T12:36:00Z): the
//! `-normalized` cases in the style of every service but S3, the `-unnormalized` ones in
//! S3's (single encoding, no normalization); and the generic HMAC form.

use super::*;

const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const DATE: &str = "20150830T123600Z";

struct Vector {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    query: &'static [(&'static str, &'static str)],
    headers: &'static [(&'static str, &'static str)],
    session_token: Option<&'static str>,
    payload_hash: &'static str,
    /// The hash of the canonical request (the last line of the string to sign).
    creq_hash: &'static str,
    signature: &'static str,
}

const fn v(
    name: &'static str,
    method: &'static str,
    path: &'static str,
    query: &'static [(&'static str, &'static str)],
    headers: &'static [(&'static str, &'static str)],
    creq_hash: &'static str,
    signature: &'static str,
) -> Vector {
    Vector {
        name,
        method,
        path,
        query,
        headers,
        session_token: None,
        payload_hash: EMPTY,
        creq_hash,
        signature,
    }
}

const UNRESERVED_TEXT: &str = "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn vectors() -> Vec<Vector> {
    vec![
        v(
            "get-vanilla",
            "GET",
            "/",
            &[],
            &[],
            "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        v(
            "post-vanilla",
            "POST",
            "/",
            &[],
            &[],
            "553f88c9e4d10fc9e109e2aeb65f030801b70c2f6468faca261d401ae622fc87",
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        ),
        v(
            "get-unreserved",
            "GET",
            "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            &[],
            &[],
            "6a968768eefaa713e2a6b16b589a8ea192661f098f37349f4e2c0082757446f9",
            "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
        ),
        v(
            "get-utf8",
            "GET",
            "/\u{1234}",
            &[],
            &[],
            "2a0a97d02205e45ce2e994789806b19270cfbbb0921b278ccf58f5249ac42102",
            "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
        ),
        v(
            "get-space-unnormalized",
            "GET",
            "/example space/",
            &[],
            &[],
            "63ee75631ed7234ae61b5f736dfc7754cdccfedbff4b5128a915706ee9390d86",
            "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
        ),
        v(
            "get-slashes-unnormalized",
            "GET",
            "//example//",
            &[],
            &[],
            "528ec3105ee1f34ab014bb0a1a45da0ed2742a4fea3555149e5b4d5d201eb240",
            "87cca117541a147f6df867677d98a7d80dff226d2bfca9e4ffa899665623c7e5",
        ),
        v(
            "get-relative-unnormalized",
            "GET",
            "/example/..",
            &[],
            &[],
            "0511f456aa502b456d135fcb9d749374a55228f9dbeedda1eacf659e05b0615b",
            "eca7ead57bb5aa5c8e28007acd4ff04e1ff9a0ff3b237ec1554a184887ff9282",
        ),
        v(
            "get-relative-normalized",
            "GET",
            "/example/..",
            &[],
            &[],
            "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        v(
            "get-relative-relative-normalized",
            "GET",
            "/example1/example2/../..",
            &[],
            &[],
            "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        v(
            "get-relative-relative-unnormalized",
            "GET",
            "/example1/example2/../..",
            &[],
            &[],
            "76115030c0f3ff06c20fdff5ceb6d5e0b835a1743e00b94fea7c7f381269437b",
            "dc33e0856fd4baca4d7aa2146c38958283844764f38c74252a333df5e613003b",
        ),
        v(
            "get-slash-dot-slash-normalized",
            "GET",
            "/./",
            &[],
            &[],
            "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        v(
            "get-slash-dot-slash-unnormalized",
            "GET",
            "/./",
            &[],
            &[],
            "d67825e2268bd77a97c7688b8d72c31a3c1855b309808505ba0a9747d2465aa7",
            "68714168e6557f8f2de0ef956fc24dc2593a4bd2961f8df51898d8a134695145",
        ),
        v(
            "get-slash-normalized",
            "GET",
            "//",
            &[],
            &[],
            "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        v(
            "get-slash-unnormalized",
            "GET",
            "//",
            &[],
            &[],
            "80cb39203d058af815de2b79250ff56e1b73eb9b4718c86556cdc6f150c5d209",
            "c88bcd3d312d75078c0cd961d6deae3f4c754924b01669efcfcb439fd5e5b76e",
        ),
        v(
            "get-slash-pointless-dot-normalized",
            "GET",
            "/./example",
            &[],
            &[],
            "214d50c111a8edc4819da6a636336472c916b5240f51e9a51b5c3305180cf702",
            "ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5",
        ),
        v(
            "get-slash-pointless-dot-unnormalized",
            "GET",
            "/./example",
            &[],
            &[],
            "73895e0e829507e28e39fd24669aedc2434a8e179e547e3c075b42921f952cdb",
            "beb03f223f7deae4146464f06e29eebbee9c8afbe15c290cf07aa8b119e14cff",
        ),
        v(
            "get-slashes-normalized",
            "GET",
            "//example//",
            &[],
            &[],
            "cb96b4ac96d501f7c5c15bc6d67b3035061cfced4af6585ad927f7e6c985c015",
            "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84",
        ),
        v(
            "get-space-normalized",
            "GET",
            "/example space/",
            &[],
            &[],
            "63ee75631ed7234ae61b5f736dfc7754cdccfedbff4b5128a915706ee9390d86",
            "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
        ),
        v(
            "get-vanilla-query-order-key-case",
            "GET",
            "/",
            &[("Param2", "value2"), ("Param1", "value1")],
            &[],
            "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
        v(
            "get-vanilla-query-order-encoded",
            "GET",
            "/",
            &[
                ("Param-3", "Value3"),
                ("Param", "Value2"),
                ("\u{1234}", "Value1"),
            ],
            &[],
            "868294f5c38bd141c4972a373a76654f1418a8e4fc18b2e7903ae45e8ae0ec71",
            "371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac",
        ),
        v(
            "get-vanilla-query-unreserved",
            "GET",
            "/",
            &[(UNRESERVED_TEXT, UNRESERVED_TEXT)],
            &[],
            "c30d4703d9f799439be92736156d47ccfb2d879ddf56f5befa6d1d6aab979177",
            "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
        ),
        v(
            "get-vanilla-utf8-query",
            "GET",
            "/",
            &[("\u{1234}", "bar")],
            &[],
            "eb30c5bed55734080471a834cc727ae56beb50e5f39d1bff6d0d38cb192a7073",
            "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
        ),
        Vector {
            session_token: Some("6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"),
            ..v(
                "get-vanilla-with-session-token",
                "GET",
                "/",
                &[],
                &[],
                "067b36aa60031588cea4a4cde1f21215227a047690c72247f1d70b32fbbfad2b",
                "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8",
            )
        },
        v(
            "get-header-key-duplicate",
            "GET",
            "/",
            &[],
            &[
                ("My-Header1", "value2"),
                ("My-Header1", "value2"),
                ("My-Header1", "value1"),
            ],
            "dc7f04a3abfde8d472b0ab1a418b741b7c67174dad1551b4117b15527fbe966c",
            "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
        ),
        v(
            "get-header-value-order",
            "GET",
            "/",
            &[],
            &[
                ("My-Header1", "value4"),
                ("My-Header1", "value1"),
                ("My-Header1", "value3"),
                ("My-Header1", "value2"),
            ],
            "31ce73cd3f3d9f66977ad3dd957dc47af14df92fcd8509f59b349e9137c58b86",
            "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01",
        ),
        v(
            "get-header-value-trim",
            "GET",
            "/",
            &[],
            &[("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")],
            "a726db9b0df21c14f559d0a978e563112acb1b9e05476f0a6a1c7d68f28605c7",
            "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
        ),
        v(
            "post-vanilla-query",
            "POST",
            "/",
            &[("Param1", "value1")],
            &[],
            "9d659678c1756bb3113e2ce898845a0a79dbbc57b740555917687f1b3340fbbd",
            "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
        ),
        v(
            "post-header-value-case",
            "POST",
            "/",
            &[],
            &[("My-Header1", "VALUE1")],
            "d51ced243e649e3de6ef63afbbdcbca03131a21a7103a1583706a64618606a93",
            "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d",
        ),
        Vector {
            payload_hash: "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
            ..v(
                "post-x-www-form-urlencoded",
                "POST",
                "/",
                &[],
                &[
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("Content-Length", "13"),
                    (
                        "x-amz-content-sha256",
                        "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
                    ),
                ],
                "b1edd1d03544c25390e32085d55b57acc9a3961bb59415ff86c45c3d89d16cfb",
                "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
            )
        },
    ]
}

fn suite_credentials(session_token: Option<&str>) -> AwsCredentials {
    AwsCredentials {
        access_key_id: Secret::new("AKIDEXAMPLE"),
        secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        session_token: session_token.map(Secret::new),
        region: "us-east-1".into(),
        service: "service".into(),
        path_style: PathStyle::Normalized,
    }
}

#[test]
fn sigv4_signs_every_case_of_the_aws_test_suite() {
    let cases = vectors();
    assert_eq!(cases.len(), 29);
    for case in cases {
        let name = case.name;
        let query: Vec<(Vec<u8>, Vec<u8>)> = case
            .query
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        let headers: Vec<(String, String)> = case
            .headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let signed = sigv4(
            &AwsRequest {
                method: case.method,
                host: "example.amazonaws.com",
                path: case.path,
                path_style: if name.ends_with("-unnormalized") {
                    PathStyle::S3
                } else {
                    PathStyle::Normalized
                },
                query: &query,
                headers: &headers,
                payload_hash: case.payload_hash,
                amz_date: DATE,
            },
            &suite_credentials(case.session_token),
        );
        assert_eq!(
            signed.string_to_sign,
            format!(
                "AWS4-HMAC-SHA256\n{DATE}\n20150830/us-east-1/service/aws4_request\n{}",
                case.creq_hash
            ),
            "{name}: string to sign (canonical request:\n{})",
            signed.canonical_request
        );
        assert_eq!(signed.signature, case.signature, "{name}");
        let signed_headers = signed
            .canonical_request
            .lines()
            .nth_back(1)
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            signed.authorization,
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders={signed_headers}, Signature={}",
                case.signature
            ),
            "{name}"
        );
    }
}

#[test]
fn the_suites_canonical_requests_are_built_exactly() {
    let query = vec![
        (b"Param2".to_vec(), b"value2".to_vec()),
        (b"Param1".to_vec(), b"value1".to_vec()),
    ];
    let signed = sigv4(
        &AwsRequest {
            method: "GET",
            host: "example.amazonaws.com",
            path: "/",
            path_style: PathStyle::Normalized,
            query: &query,
            headers: &[],
            payload_hash: EMPTY,
            amz_date: DATE,
        },
        &suite_credentials(None),
    );
    assert_eq!(
        signed.canonical_request,
        format!(
            "GET\n/\nParam1=value1&Param2=value2\nhost:example.amazonaws.com\nx-amz-date:{DATE}\n\nhost;x-amz-date\n{EMPTY}"
        )
    );
}

#[test]
fn the_runtime_signer_signs_the_url_it_sends() {
    let signer = Signer::Aws(suite_credentials(None));
    let url =
        Url::parse("https://example.amazonaws.com/?Param2=value2&Param1=value1").expect("url");
    let at: jiff::Timestamp = "2015-08-30T12:36:00Z".parse().expect("time");
    let headers = signer.headers("GET", &url, None, &[], at);
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.expose().to_owned())
    };
    assert_eq!(find("x-amz-date").as_deref(), Some(DATE));
    assert_eq!(find("x-amz-content-sha256").as_deref(), Some(EMPTY));
    let authorization = find("authorization").expect("authorization");
    assert!(
        authorization.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature="
        ),
        "{authorization}"
    );
    // A port that is not the scheme's default is part of the signed host.
    let other = signer.headers(
        "GET",
        &Url::parse("https://example.amazonaws.com:8443/?Param2=value2&Param1=value1")
            .expect("url"),
        None,
        &[],
        at,
    );
    assert_ne!(other, headers_of(&headers), "the port is signed");
}

fn headers_of(h: &[(String, Secret)]) -> Vec<(String, Secret)> {
    h.to_vec()
}

#[test]
fn hmac_canonical_form_and_signature() {
    let url = Url::parse("http://127.0.0.1:9/v1/rates%20x?b=2&a=1&a=0&q=two+words").expect("url");
    let canonical = hmac_canonical("POST", &url, b"{}", HmacAlgorithm::Sha256, 1_764_000_000);
    assert_eq!(
        canonical,
        "POST\n/v1/rates%20x\na=0&a=1&b=2&q=two%2Bwords\n44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a\n1764000000"
    );
    let signer = Signer::Hmac {
        key_id: Some(Secret::new("key-1")),
        secret: Secret::new("s3cr3t"),
        algorithm: HmacAlgorithm::Sha256,
        encoding: SignatureEncoding::Hex,
        signature_header: "X-Signature".into(),
        timestamp_header: "X-Timestamp".into(),
        key_id_header: "X-Key-Id".into(),
    };
    let at = jiff::Timestamp::from_second(1_764_000_000).expect("time");
    let headers = signer.headers("POST", &url, Some((b"{}", "application/json")), &[], at);
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["X-Signature", "X-Timestamp", "X-Key-Id"]);
    let expected = hex(&hmac_sha256(b"s3cr3t", canonical.as_bytes()));
    assert_eq!(headers[0].1.expose(), expected);
    assert_eq!(expected.len(), 64);
    assert_eq!(headers[1].1.expose(), "1764000000");
    // RFC 4231 test case 2, so the HMAC itself is the standard one.
    assert_eq!(
        hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn paths_are_encoded_as_aws_documents_them() {
    // AWS's own example: every service but S3 encodes the (already encoded) path again.
    let sent = "/documents%20and%20settings/";
    assert_eq!(
        canonical_path(sent, PathStyle::Normalized),
        "/documents%2520and%2520settings/"
    );
    assert_eq!(
        canonical_path(sent, PathStyle::S3),
        "/documents%20and%20settings/"
    );
    // Bytes that are not UTF-8 keep their value (no replacement character).
    assert_eq!(canonical_path("/a%FFb", PathStyle::S3), "/a%FFb");
    assert_eq!(canonical_path("/a%ffb", PathStyle::S3), "/a%FFb");
    assert_eq!(
        canonical_path("/a/./b/../c//", PathStyle::Normalized),
        "/a/c/"
    );
    assert_eq!(canonical_path("/../..", PathStyle::Normalized), "/");
    assert_eq!(PathStyle::of_service("s3"), PathStyle::S3);
    assert_eq!(PathStyle::of_service("execute-api"), PathStyle::Normalized);
}

#[test]
fn a_query_is_read_as_rfc_3986_reads_it() {
    let pairs = query_pairs("b=two+words&a=%20x&flag&c=%FF");
    assert_eq!(
        pairs,
        vec![
            (b"b".to_vec(), b"two+words".to_vec()),
            (b"a".to_vec(), b" x".to_vec()),
            (b"flag".to_vec(), Vec::new()),
            (b"c".to_vec(), vec![0xFF]),
        ]
    );
    assert_eq!(canonical_query(pairs), "a=%20x&b=two%2Bwords&c=%FF&flag=");
}

#[test]
fn sigv4_signs_the_capabilitys_own_headers() {
    let signer = Signer::Aws(suite_credentials(Some("token-1")));
    let url = Url::parse("https://example.amazonaws.com/v1/rates").expect("url");
    let at: jiff::Timestamp = "2015-08-30T12:36:00Z".parse().expect("time");
    let own = vec![("transId".to_owned(), "r-1".to_owned())];
    let headers = signer.headers("POST", &url, Some((b"{}", "application/json")), &own, at);
    let authorization = headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .map(|(_, v)| v.expose().to_owned())
        .expect("authorization");
    assert!(
        authorization.contains(
            "SignedHeaders=content-type;host;transid;x-amz-content-sha256;x-amz-date;x-amz-security-token,"
        ),
        "{authorization}"
    );
    let token = headers
        .iter()
        .find(|(n, _)| n == "x-amz-security-token")
        .map(|(_, v)| v.expose().to_owned());
    assert_eq!(token.as_deref(), Some("token-1"));
    let shown = format!(
        "{:?}",
        sigv4(
            &AwsRequest {
                method: "GET",
                host: "example.amazonaws.com",
                path: "/",
                path_style: PathStyle::Normalized,
                query: &[],
                headers: &[],
                payload_hash: EMPTY,
                amz_date: DATE,
            },
            &suite_credentials(Some("token-1")),
        )
    );
    assert!(!shown.contains("token-1"), "{shown}");
}
