//! Zero-copy pulls (`registry/src/zerocopy.rs`): plaintext blobs on the local disk sent with
//! `sendfile(2)` on plain HTTP. Byte for byte, whole and in ranges, on keep-alive and
//! pipelined connections mixed with other answers, after clients that leave mid-body, with
//! the file missing or damaged; and `storage.verify_reads` bringing back hashed reads.

use std::path::{Path, PathBuf};

use berth_registry::config::Config;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::*;

/// Larger than two of the zero-copy pieces (8 MiB), not a multiple of anything.
const BIG: usize = 17 * 1024 * 1024 + 12_345;
const MIB: usize = 1024 * 1024;
const PIECE: usize = 8 * MIB;

fn plaintext(dir: &Path, verify_reads: bool) -> Config {
    let mut c = config_in(dir);
    c.encryption.enabled = false;
    c.storage.verify_reads = verify_reads;
    c.scrub.interval = std::time::Duration::ZERO;
    c
}

async fn push(t: &TestServer, repo: &str, blob: &[u8]) -> String {
    let digest = sha256(blob);
    let url = t.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"));
    let r = t.client.post(url).body(blob.to_vec()).send().await.unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    digest
}

fn plain_object(dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    dir.join("blobs").join("blobs").join("sha256").join(&hex[..2]).join(hex)
}

fn addr(t: &TestServer) -> String {
    t.server.url().trim_start_matches("http://").trim_end_matches('/').to_owned()
}

async fn metric(t: &TestServer, line_start: &str) -> u64 {
    let text = t.client.get(t.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with(line_start)).unwrap_or_else(|| panic!("no {line_start} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// One response read off a raw connection: status, headers (lowercase names), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Reads one response framed by Content-Length (every answer here has one: zero-copy bodies
/// are never chunked). `head_only` for the answer to a HEAD.
async fn read_answer(r: &mut BufReader<TcpStream>, head_only: bool) -> Answer {
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    let status = line.split(' ').nth(1).unwrap_or_default().parse().unwrap_or(0);
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    assert!(
        !headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")),
        "a chunked answer: {headers:?}"
    );
    let length: usize = headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; if head_only { 0 } else { length }];
    r.read_exact(&mut body).await.unwrap();
    Answer { status, headers, body }
}

fn get(addr: &str, path: &str, range: Option<&str>) -> String {
    let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{range}\r\n")
}

/// Asserts `got` is `want`, without printing megabytes when it is not.
fn same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {at}");
    }
}

#[tokio::test]
async fn whole_and_ranged_pulls_are_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let config = plaintext(dir.path(), false);
    let t = TestServer::start_with(dir, config).await;
    let blob = data(BIG, 1);
    let digest = push(&t, "zero/copy", &blob).await;
    let url = t.url(&format!("/v2/zero/copy/blobs/{digest}"));

    let r = t.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], BIG.to_string().as_str());
    same(&r.bytes().await.unwrap(), &blob, "whole");

    let last = BIG - 1;
    let ranges: [(String, std::ops::Range<usize>); 9] = [
        ("bytes=0-0".into(), 0..1),
        (format!("bytes={last}-{last}"), last..BIG),
        (format!("bytes={last}-"), last..BIG),
        ("bytes=-1".into(), last..BIG),
        ("bytes=-1000".into(), BIG - 1000..BIG),
        // Inside one 1 MiB piece, and inside one zero-copy piece.
        ("bytes=100-5000".into(), 100..5001),
        // Across 1 MiB pieces, and across the zero-copy pieces (8 MiB).
        (format!("bytes={}-{}", MIB - 10, 3 * MIB + 10), MIB - 10..3 * MIB + 11),
        (format!("bytes={}-{}", PIECE - 3, 2 * PIECE + 3), PIECE - 3..2 * PIECE + 4),
        // The whole blob as a range.
        ("bytes=0-".into(), 0..BIG),
    ];
    for (header, span) in ranges {
        let r = t.client.get(&url).header("Range", &header).send().await.unwrap();
        assert_eq!(r.status(), 206, "{header}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {}-{}/{BIG}", span.start, span.end - 1).as_str(),
            "{header}"
        );
        same(&r.bytes().await.unwrap(), &blob[span], &header);
    }

    // HEAD: the length, no body.
    let r = t.client.head(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], BIG.to_string().as_str());
    assert!(r.bytes().await.unwrap().is_empty());

    // An empty blob and a one-byte blob.
    for small in [Vec::new(), vec![42u8]] {
        let d = push(&t, "zero/copy", &small).await;
        let r = t.client.get(t.url(&format!("/v2/zero/copy/blobs/{d}"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), small.as_slice());
    }
    t.server.stop().await;
}

/// A request on a kept-alive connection: path, Range, the status and body it must get.
type Step<'a> = (String, Option<&'a str>, u16, Option<&'a [u8]>);

#[tokio::test]
async fn one_keep_alive_connection_mixes_zero_copy_blobs_manifests_and_errors_and_pipelines() {
    let dir = tempfile::tempdir().unwrap();
    let config = plaintext(dir.path(), false);
    let t = TestServer::start_with(dir, config).await;
    let blob = data(BIG, 2);
    let small = data(70_000, 3);
    let digest = push(&t, "zero/mix", &blob).await;
    let d_small = push(&t, "zero/mix", &small).await;
    let (manifest, manifest_len) = push_manifest(&t, "zero/mix", "v1", "mix").await;
    let addr = addr(&t);
    let blob_path = format!("/v2/zero/mix/blobs/{digest}");
    let small_path = format!("/v2/zero/mix/blobs/{d_small}");
    let unknown = format!("/v2/zero/mix/blobs/{}", sha256(b"not pushed"));

    // One after the other on one connection.
    let mut conn = BufReader::new(TcpStream::connect(&addr).await.unwrap());
    let steps: [Step; 8] = [
        (blob_path.clone(), None, 200, Some(&blob)),
        ("/v2/zero/mix/manifests/v1".into(), None, 200, None),
        (unknown.clone(), None, 404, None),
        (blob_path.clone(), Some("bytes=5-9000000"), 206, Some(&blob[5..9_000_001])),
        (small_path.clone(), None, 200, Some(&small)),
        (blob_path.clone(), Some("bytes=999999999-"), 416, None),
        (blob_path.clone(), Some("bytes=-10"), 206, Some(&blob[BIG - 10..])),
        (blob_path.clone(), None, 200, Some(&blob)),
    ];
    for (i, (path, range, status, body)) in steps.iter().enumerate() {
        conn.get_mut().write_all(get(&addr, path, *range).as_bytes()).await.unwrap();
        let a = read_answer(&mut conn, false).await;
        assert_eq!(a.status, *status, "step {i}: {path} {range:?}: {:?}", a.headers);
        if let Some(body) = body {
            same(&a.body, body, &format!("step {i}"));
        }
        if path.contains("manifests") {
            assert_eq!(a.body.len(), manifest_len);
            assert_eq!(sha256(&a.body), manifest);
        }
        if *status == 404 {
            assert!(String::from_utf8_lossy(&a.body).contains("BLOB_UNKNOWN"), "{:?}", a.body);
        }
    }
    // A HEAD between two GETs.
    let head = format!("HEAD {blob_path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    conn.get_mut().write_all(head.as_bytes()).await.unwrap();
    let a = read_answer(&mut conn, true).await;
    assert_eq!((a.status, a.header("content-length")), (200, Some(BIG.to_string().as_str())));
    conn.get_mut().write_all(get(&addr, &small_path, Some("bytes=10-19")).as_bytes()).await.unwrap();
    same(&read_answer(&mut conn, false).await.body, &small[10..20], "after the HEAD");

    // Pipelined: every request written before any answer is read.
    let mut conn = BufReader::new(TcpStream::connect(&addr).await.unwrap());
    let mut requests = String::new();
    requests.push_str(&get(&addr, &blob_path, None));
    requests.push_str(&get(&addr, &small_path, None));
    requests.push_str(&get(&addr, &unknown, None));
    requests.push_str(&get(&addr, "/v2/zero/mix/manifests/v1", None));
    requests.push_str(&get(&addr, &blob_path, Some(&format!("bytes={}-{}", PIECE - 1, PIECE))));
    requests.push_str(&format!("HEAD {blob_path} HTTP/1.1\r\nHost: {addr}\r\n\r\n"));
    requests.push_str(&get(&addr, &blob_path, Some("bytes=-3")));
    conn.get_mut().write_all(requests.as_bytes()).await.unwrap();
    let a = read_answer(&mut conn, false).await;
    assert_eq!(a.status, 200);
    same(&a.body, &blob, "pipelined whole");
    same(&read_answer(&mut conn, false).await.body, &small, "pipelined small");
    assert_eq!(read_answer(&mut conn, false).await.status, 404);
    assert_eq!(sha256(&read_answer(&mut conn, false).await.body), manifest);
    same(&read_answer(&mut conn, false).await.body, &blob[PIECE - 1..=PIECE], "pipelined range");
    assert_eq!(read_answer(&mut conn, true).await.status, 200);
    same(&read_answer(&mut conn, false).await.body, &blob[BIG - 3..], "pipelined suffix");
    t.server.stop().await;
}

#[tokio::test]
async fn clients_that_leave_mid_body_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let config = plaintext(dir.path(), false);
    let t = TestServer::start_with(dir, config).await;
    let blob = data(BIG, 4);
    let digest = push(&t, "zero/leave", &blob).await;
    let (manifest, _) = push_manifest(&t, "zero/leave", "v1", "leave").await;
    let addr = addr(&t);
    let blob_path = format!("/v2/zero/leave/blobs/{digest}");
    for round in 0..5 {
        // Whole and ranged pulls, with a manifest request pipelined behind, abandoned after
        // a little of the body (the socket is closed with the rest unread).
        let mut conn = BufReader::new(TcpStream::connect(&addr).await.unwrap());
        let range = (round % 2 == 1).then_some("bytes=1000-");
        let mut requests = get(&addr, &blob_path, range);
        requests.push_str(&get(&addr, "/v2/zero/leave/manifests/v1", None));
        conn.get_mut().write_all(requests.as_bytes()).await.unwrap();
        let mut some = vec![0; 64 * 1024 * (round + 1)];
        conn.read_exact(&mut some).await.unwrap();
        drop(conn);
    }
    // New connections are served in full, on keep-alive too.
    let mut conn = BufReader::new(TcpStream::connect(&addr).await.unwrap());
    for _ in 0..2 {
        conn.get_mut().write_all(get(&addr, &blob_path, None).as_bytes()).await.unwrap();
        let a = read_answer(&mut conn, false).await;
        assert_eq!(a.status, 200);
        same(&a.body, &blob, "after clients left");
        conn.get_mut().write_all(get(&addr, "/v2/zero/leave/manifests/v1", None).as_bytes()).await.unwrap();
        assert_eq!(sha256(&read_answer(&mut conn, false).await.body), manifest);
    }
    let r = t.client.get(t.url(&blob_path)).send().await.unwrap();
    same(&r.bytes().await.unwrap(), &blob, "reqwest after clients left");
    t.server.stop().await;
}

#[tokio::test]
async fn a_missing_or_resized_file_is_an_error_status_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let config = plaintext(&root, false);
    let t = TestServer::start_with(dir, config).await;
    let blob = data(3 * MIB + 5, 5);
    let other = data(10_000, 6);
    let digest = push(&t, "zero/gone", &blob).await;
    let d_other = push(&t, "zero/gone", &other).await;
    let addr = addr(&t);
    let path = format!("/v2/zero/gone/blobs/{digest}");
    let other_path = format!("/v2/zero/gone/blobs/{d_other}");
    let object = plain_object(&root, &digest);

    // Linked in the metadata, missing on disk: 404 BLOB_UNKNOWN, whole or ranged, and the
    // same connection serves the next request.
    std::fs::remove_file(&object).unwrap();
    let mut conn = BufReader::new(TcpStream::connect(&addr).await.unwrap());
    for range in [None, Some("bytes=10-20")] {
        conn.get_mut().write_all(get(&addr, &path, range).as_bytes()).await.unwrap();
        let a = read_answer(&mut conn, false).await;
        assert_eq!(a.status, 404, "{range:?}");
        assert!(String::from_utf8_lossy(&a.body).contains("BLOB_UNKNOWN"));
        conn.get_mut().write_all(get(&addr, &other_path, None).as_bytes()).await.unwrap();
        same(&read_answer(&mut conn, false).await.body, &other, "after the missing blob");
    }

    // A file of another length than recorded: 500 before the answer starts, counted.
    std::fs::write(&object, &blob[..blob.len() - 1]).unwrap();
    assert_eq!(metric(&t, "berth_blob_integrity_failures_total{source=\"read\"}").await, 0);
    conn.get_mut().write_all(get(&addr, &path, Some("bytes=0-99")).as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut conn, false).await.status, 500);
    assert_eq!(metric(&t, "berth_blob_integrity_failures_total{source=\"read\"}").await, 1);
    conn.get_mut().write_all(get(&addr, &other_path, None).as_bytes()).await.unwrap();
    same(&read_answer(&mut conn, false).await.body, &other, "after the resized blob");

    // Restored by an operator: served again.
    std::fs::write(&object, &blob).unwrap();
    conn.get_mut().write_all(get(&addr, &path, None).as_bytes()).await.unwrap();
    same(&read_answer(&mut conn, false).await.body, &blob, "restored");
    t.server.stop().await;
}

/// A flipped byte in the middle of a blob: served as stored by default (the digest was
/// verified at push; clients verify what they pull and the scrub finds it), and never served
/// whole with `storage.verify_reads` on.
#[tokio::test]
async fn verify_reads_brings_back_hashed_whole_reads() {
    for verify_reads in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let config = plaintext(&root, verify_reads);
        let t = TestServer::start_with(dir, config).await;
        let blob = data(3 * MIB + 7, 7);
        let digest = push(&t, "zero/verify", &blob).await;
        let url = t.url(&format!("/v2/zero/verify/blobs/{digest}"));
        let r = t.client.get(&url).send().await.unwrap();
        same(&r.bytes().await.unwrap(), &blob, "undamaged");

        let object = plain_object(&root, &digest);
        let mut damaged = blob.clone();
        damaged[blob.len() / 2] ^= 0x01;
        std::fs::write(&object, &damaged).unwrap();
        let got = match t.client.get(&url).send().await {
            Ok(r) => r.bytes().await.ok(),
            Err(_) => None,
        };
        let failures = metric(&t, "berth_blob_integrity_failures_total{source=\"read\"}").await;
        if verify_reads {
            assert!(got.is_none_or(|b| b.len() < blob.len()), "a damaged blob was served whole");
            assert_eq!(failures, 1);
        } else {
            same(&got.unwrap(), &damaged, "served as stored");
            assert_eq!(failures, 0);
        }
        // A partial range is served as stored either way.
        let r = t.client.get(&url).header("Range", "bytes=0-99").send().await.unwrap();
        same(&r.bytes().await.unwrap(), &blob[..100], "range");
        t.server.stop().await;
    }
}
