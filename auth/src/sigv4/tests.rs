//! AWS's published Signature Version 4 test suite (credentials AKIDEXAMPLE, 2015-08-30
//! 12:36:00 UTC, us-east-1, service `service`), and requests to ECR signed by botocore's own
//! signer (`botocore.auth.SigV4Auth`, botocore 1.44.8): expected values computed by
//! implementations independent of this one.

use super::*;

const SUITE_KEY: &str = "AKIDEXAMPLE";
const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SUITE_DATE: &str = "20150830T123600Z";

struct Vector {
    name: &'static str,
    method: &'static str,
    /// Path and query as on the request line.
    target: &'static str,
    /// Headers other than Host and X-Amz-Date, as the raw request has them.
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
    signed_headers: &'static str,
    signature: &'static str,
}

const SUITE: &[Vector] = &[
    Vector {
        name: "get-vanilla",
        method: "GET",
        target: "/",
        headers: &[],
        body: "",
        signed_headers: "host;x-amz-date",
        signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    },
    Vector {
        name: "get-header-key-duplicate",
        method: "GET",
        target: "/",
        headers: &[("My-Header1", "value2"), ("My-Header1", "value2"), ("My-Header1", "value1")],
        body: "",
        signed_headers: "host;my-header1;x-amz-date",
        signature: "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
    },
    Vector {
        name: "get-header-value-order",
        method: "GET",
        target: "/",
        headers: &[
            ("My-Header1", "value4"),
            ("My-Header1", "value1"),
            ("My-Header1", "value3"),
            ("My-Header1", "value2"),
        ],
        body: "",
        signed_headers: "host;my-header1;x-amz-date",
        signature: "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01",
    },
    Vector {
        name: "get-header-value-trim",
        method: "GET",
        target: "/",
        headers: &[("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")],
        body: "",
        signed_headers: "host;my-header1;my-header2;x-amz-date",
        signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
    },
    Vector {
        name: "get-unreserved",
        method: "GET",
        target: "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        headers: &[],
        body: "",
        signed_headers: "host;x-amz-date",
        signature: "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
    },
    Vector {
        name: "get-utf8",
        method: "GET",
        target: "/ሴ",
        headers: &[],
        body: "",
        signed_headers: "host;x-amz-date",
        signature: "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
    },
    Vector {
        name: "get-vanilla-query-order-key-case",
        method: "GET",
        target: "/?Param2=value2&Param1=value1",
        headers: &[],
        body: "",
        signed_headers: "host;x-amz-date",
        signature: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
    },
    Vector {
        name: "get-vanilla-query-unreserved",
        method: "GET",
        target: "/?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        headers: &[],
        body: "",
        signed_headers: "host;x-amz-date",
        signature: "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
    },
    Vector {
        name: "get-vanilla-utf8-query",
        method: "GET",
        target: "/?ሴ=bar",
        headers: &[],
        body: "",
        signed_headers: "host;x-amz-date",
        signature: "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
    },
    Vector {
        name: "post-vanilla",
        method: "POST",
        target: "/",
        headers: &[],
        body: "",
        signed_headers: "host;x-amz-date",
        signature: "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
    },
    Vector {
        name: "post-header-key-sort",
        method: "POST",
        target: "/",
        headers: &[("My-Header1", "value1")],
        body: "",
        signed_headers: "host;my-header1;x-amz-date",
        signature: "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c",
    },
    Vector {
        name: "post-header-value-case",
        method: "POST",
        target: "/",
        headers: &[("My-Header1", "VALUE1")],
        body: "",
        signed_headers: "host;my-header1;x-amz-date",
        signature: "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d",
    },
    Vector {
        name: "post-vanilla-query",
        method: "POST",
        target: "/?Param1=value1",
        headers: &[],
        body: "",
        signed_headers: "host;x-amz-date",
        signature: "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
    },
    Vector {
        name: "post-x-www-form-urlencoded",
        method: "POST",
        target: "/",
        headers: &[("Content-Type", "application/x-www-form-urlencoded")],
        body: "Param1=value1",
        signed_headers: "content-type;host;x-amz-date",
        signature: "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
    },
    Vector {
        name: "post-x-www-form-urlencoded-parameters",
        method: "POST",
        target: "/",
        headers: &[("Content-Type", "application/x-www-form-urlencoded; charset=utf8")],
        body: "Param1=value1",
        signed_headers: "content-type;host;x-amz-date",
        signature: "1a72ec8f64bd914b0e42e42607c7fbce7fb2c7465f63e3092b3b0d39fa77a6fe",
    },
];

fn split(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    }
}

fn at(amz: &str) -> SystemTime {
    parse_amz_date(amz).unwrap()
}

#[test]
fn aws_test_suite_signs_as_published() {
    for v in SUITE {
        let (path, query) = split(v.target);
        let mut headers: Vec<(&str, &str)> = vec![("Host", "example.amazonaws.com")];
        headers.extend_from_slice(v.headers);
        let req = Request { method: v.method, path, query, headers: &headers, body: v.body.as_bytes() };
        let signed = sign(&req, SUITE_KEY, SUITE_SECRET, "us-east-1", "service", at(SUITE_DATE));
        let expected = format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders={}, \
             Signature={}",
            v.signed_headers, v.signature
        );
        assert_eq!(signed.authorization, expected, "{}", v.name);
        assert_eq!(signed.amz_date, SUITE_DATE);
    }
}

#[test]
fn aws_test_suite_verifies_and_tampering_does_not() {
    for v in SUITE {
        let (path, query) = split(v.target);
        let mut headers: Vec<(&str, &str)> = vec![("Host", "example.amazonaws.com"), ("X-Amz-Date", SUITE_DATE)];
        headers.extend_from_slice(v.headers);
        let value = format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders={}, \
             Signature={}",
            v.signed_headers, v.signature
        );
        let auth = Authorization::parse(&value).unwrap();
        let amz = auth.check_headers(&headers, "us-east-1", "service", at(SUITE_DATE)).unwrap();
        let req = Request { method: v.method, path, query, headers: &headers, body: v.body.as_bytes() };
        auth.verify(&req, &amz, SUITE_SECRET).unwrap_or_else(|e| panic!("{}: {e}", v.name));

        let wrong_secret = auth.verify(&req, &amz, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEZ");
        assert!(matches!(wrong_secret, Err(SigV4Error::Mismatch { .. })), "{}", v.name);
        let other_body = Request { body: b"Param1=value2", ..req };
        assert!(matches!(auth.verify(&other_body, &amz, SUITE_SECRET), Err(SigV4Error::Mismatch { .. })));
        let other_method = Request { method: if v.method == "GET" { "POST" } else { "GET" }, ..req };
        assert!(auth.verify(&other_method, &amz, SUITE_SECRET).is_err());
        let mut changed = headers.clone();
        changed[0].1 = "example2.amazonaws.com";
        let other_host = Request { headers: &changed, ..req };
        assert!(auth.verify(&other_host, &amz, SUITE_SECRET).is_err(), "{}", v.name);
    }
}

/// botocore 1.44.8 signing an ECR call (`/work/ecrvenv/bin/python`, `SigV4Auth(creds, "ecr",
/// "local").add_auth(AWSRequest(...))` with its clock fixed at 2026-12-04 19:30:00 UTC).
const BOTO_KEY: &str = "BKIAEXAMPLEKEY234567";
const BOTO_SECRET: &str = "dGhpcyBpcyBub3QgYSByZWFsIHNlY3JldCBrZXkx";
const BOTO_DATE: &str = "20261204T193000Z";
const TARGET: &str = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";

#[test]
fn botocore_signed_ecr_requests_verify() {
    // (headers, body, signed headers, botocore's signature)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str, &'a str);
    let cases: [Case; 2] = [
        (
            &[
                ("Host", "127.0.0.1:5000"),
                ("X-Amz-Target", TARGET),
                ("Content-Type", "application/x-amz-json-1.1"),
                // Not signed (botocore leaves it out): changing it changes nothing.
                ("User-Agent", "Boto3/1.44.8 md/Botocore#1.44.8"),
                ("X-Amz-Date", BOTO_DATE),
            ],
            r#"{"registryIds":["000000000000"]}"#,
            "content-type;host;x-amz-date;x-amz-target",
            "1b87bf187cb6868fd00eb9a96bcea3a26e193bf57354b5742d740846ae96afeb",
        ),
        (
            &[
                ("Host", "127.0.0.1:5000"),
                ("X-Amz-Target", TARGET),
                ("Content-Type", "application/x-amz-json-1.1"),
                ("X-Amz-Content-Sha256", "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"),
                ("X-Custom", "  a   b  "),
                ("X-Amz-Date", BOTO_DATE),
            ],
            "{}",
            "content-type;host;x-amz-content-sha256;x-amz-date;x-amz-target;x-custom",
            "01b8a31fe8756760401eb4954863afa295f720569b4ddad8a9400e3c5a14f706",
        ),
    ];
    for (headers, body, signed, sig) in cases {
        let value = format!(
            "AWS4-HMAC-SHA256 Credential={BOTO_KEY}/20261204/local/ecr/aws4_request, SignedHeaders={signed}, Signature={sig}"
        );
        let auth = Authorization::parse(&value).unwrap();
        assert_eq!(auth.access_key_id, BOTO_KEY);
        // Within the skew either way.
        for now in ["20261204T191600Z", BOTO_DATE, "20261204T194400Z"] {
            let amz = auth.check_headers(headers, "local", "ecr", at(now)).unwrap();
            assert_eq!(amz, BOTO_DATE);
        }
        let req = Request { method: "POST", path: "/", query: None, headers, body: body.as_bytes() };
        auth.verify(&req, BOTO_DATE, BOTO_SECRET).unwrap();
        // Our own signer agrees with botocore's over the same signed headers.
        let signed_only: Vec<(&str, &str)> = headers
            .iter()
            .copied()
            .filter(|(n, _)| {
                signed.split(';').any(|s| s.eq_ignore_ascii_case(n)) && !n.eq_ignore_ascii_case("x-amz-date")
            })
            .collect();
        let ours =
            sign(&Request { headers: &signed_only, ..req }, BOTO_KEY, BOTO_SECRET, "local", "ecr", at(BOTO_DATE));
        assert_eq!(ours.authorization, value);
    }
}

#[test]
fn content_sha256_must_be_the_bodys() {
    let headers = [
        ("Host", "127.0.0.1:5000"),
        ("X-Amz-Content-Sha256", "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"),
        ("X-Amz-Date", BOTO_DATE),
    ];
    let signed = sign(
        &Request { method: "POST", path: "/", query: None, headers: &headers[..2], body: b"{}" },
        BOTO_KEY,
        BOTO_SECRET,
        "local",
        "ecr",
        at(BOTO_DATE),
    );
    let auth = Authorization::parse(&signed.authorization).unwrap();
    let req = Request { method: "POST", path: "/", query: None, headers: &headers, body: b"{}" };
    auth.verify(&req, BOTO_DATE, BOTO_SECRET).unwrap();
    let other = Request { body: b"{ }", ..req };
    assert_eq!(auth.verify(&other, BOTO_DATE, BOTO_SECRET), Err(SigV4Error::ContentSha256));
}

fn ecr_auth(date: &str, region: &str, service: &str, signed: &str) -> Authorization {
    Authorization::parse(&format!(
        "AWS4-HMAC-SHA256 Credential={BOTO_KEY}/{date}/{region}/{service}/aws4_request, SignedHeaders={signed}, \
         Signature={}",
        "0".repeat(64)
    ))
    .unwrap()
}

#[test]
fn header_checks_refuse_scope_date_and_skew() {
    let headers = [("Host", "h"), ("X-Amz-Date", BOTO_DATE)];
    let now = at(BOTO_DATE);
    let ok = ecr_auth("20261204", "local", "ecr", "host;x-amz-date");
    assert!(ok.check_headers(&headers, "local", "ecr", now).is_ok());
    let e = ecr_auth("20261204", "us-east-1", "ecr", "host;x-amz-date").check_headers(&headers, "local", "ecr", now);
    assert_eq!(e, Err(SigV4Error::Region { given: "us-east-1".into(), expected: "local".into() }));
    assert!(e.unwrap_err().to_string().starts_with("Credential should be scoped to a valid region, not 'us-east-1'."));
    let e = ecr_auth("20261204", "local", "s3", "host;x-amz-date").check_headers(&headers, "local", "ecr", now);
    assert_eq!(e.unwrap_err().to_string(), "Credential should be scoped to correct service: 'ecr'. ");
    let e = ecr_auth("20261203", "local", "ecr", "host;x-amz-date").check_headers(&headers, "local", "ecr", now);
    assert!(matches!(e, Err(SigV4Error::ScopeDate { .. })));
    // host and the date header must be signed.
    for signed in ["x-amz-date", "host", "host;x-amz-target"] {
        let e = ecr_auth("20261204", "local", "ecr", signed).check_headers(&headers, "local", "ecr", now);
        assert!(matches!(e, Err(SigV4Error::Incomplete(_))), "{signed}: {e:?}");
    }
    // 15 minutes and a second either way.
    let e = ok.check_headers(&headers, "local", "ecr", at("20261204T194501Z")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Signature expired: 20261204T193000Z is now earlier than 20261204T193001Z (20261204T194501Z - 15 min.)"
    );
    let e = ok.check_headers(&headers, "local", "ecr", at("20261204T191459Z")).unwrap_err();
    assert!(matches!(e, SigV4Error::NotYetCurrent { .. }), "{e}");
    assert!(e.to_string().starts_with("Signature not yet current: 20261204T193000Z is still later than"));
    // No date at all; a `Date` header instead of X-Amz-Date.
    assert!(matches!(ok.check_headers(&[("Host", "h")], "local", "ecr", now), Err(SigV4Error::Incomplete(_))));
    let dated = ecr_auth("20261204", "local", "ecr", "date;host");
    let amz = dated.check_headers(&[("Host", "h"), ("Date", "Fri, 04 Dec 2026 19:30:00 GMT")], "local", "ecr", now);
    assert_eq!(amz.unwrap(), BOTO_DATE);
    let bad = [("Host", "h"), ("X-Amz-Date", "2026-12-04T19:30:00Z")];
    assert!(matches!(ok.check_headers(&bad, "local", "ecr", now), Err(SigV4Error::Incomplete(_))));
}

#[test]
fn malformed_authorization_values_are_incomplete() {
    let good = format!(
        "AWS4-HMAC-SHA256 Credential={BOTO_KEY}/20261204/local/ecr/aws4_request, SignedHeaders=host;x-amz-date, Signature={}",
        "ab".repeat(32)
    );
    assert!(Authorization::parse(&good).is_ok());
    let too_many = (0..=MAX_SIGNED_HEADERS).map(|i| format!("h{i}")).collect::<Vec<_>>().join(";");
    let bad = [
        String::new(),
        "Basic dXNlcjpwYXNz".into(),
        "AWS4-HMAC-SHA256".into(),
        "AWS4-HMAC-SHA256X Credential=a/20261204/local/ecr/aws4_request".into(),
        good.replace("Credential=", "Credentials="),
        good.replace(", Signature", ", Signature=1, Signature"),
        good.replace("/aws4_request", "/aws5_request"),
        good.replace("/20261204/", "/2026124/"),
        good.replace("/local/", "//"),
        good.replace("/ecr/aws4_request", "/aws4_request"),
        good.replace("host;x-amz-date", "Host;x-amz-date"),
        good.replace("host;x-amz-date", "host;;x-amz-date"),
        good.replace("host;x-amz-date", &too_many),
        good.replace(&"ab".repeat(32), &"ab".repeat(31)),
        good.replace(&"ab".repeat(32), &"zz".repeat(32)),
        format!("{good}{}", " ".repeat(MAX_AUTHORIZATION)),
        good.replace(", SignedHeaders=host;x-amz-date", ""),
    ];
    for b in bad {
        assert!(matches!(Authorization::parse(&b), Err(SigV4Error::Incomplete(_))), "{b:?}");
    }
}

#[test]
fn canonical_forms() {
    assert_eq!(canonical_value("  a   b \t c  "), "a b c");
    assert_eq!(uri_encode("/ሴ", true), "/%E1%88%B4");
    assert_eq!(uri_encode("/%E1%88%B4", true), "/%E1%88%B4");
    assert_eq!(canonical_query(Some("b=2&a=1&a=0&c")), "a=0&a=1&b=2&c=");
    assert_eq!(format_amz_date(at("20150830T123600Z")), "20150830T123600Z");
    assert!(parse_amz_date("20151330T123600Z").is_none());
}
