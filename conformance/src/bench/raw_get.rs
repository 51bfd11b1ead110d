//! A blob `GET` over plain HTTP with as little client work as there can be: a connection of
//! its own, the request written by hand, and the body read into one reused buffer on a
//! blocking thread, counted and dropped (what `curl -o /dev/null` does).
//!
//! reqwest hands a body over in pieces of at most a few hundred KiB, each a fresh buffer
//! through several layers; on one 2-core machine that client work (0.39 CPU-s/GiB) bounded
//! the pull figures of a server that spends less than that. Both registries are pulled with
//! this same client, so the ratio between them is the servers'.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::bench::BenchError;

/// The body is read this much at a time.
const BUFFER: usize = 1 << 20;
/// The most a response head may take.
const MAX_HEAD: usize = 64 << 10;

/// What a raw GET received.
#[derive(Debug, PartialEq, Eq)]
pub struct RawAnswer {
    pub status: u16,
    /// Bytes of body read (all of them, as `Content-Length` said).
    pub body_len: u64,
}

/// `GET path` from `host:port` with `headers` (name, value); reads the whole body.
/// Refuses an answer without `Content-Length` (a chunked one), which these pulls never get.
pub fn get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<RawAnswer, BenchError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| BenchError::new(format!("raw GET {path}: {what}: {e}"));
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| fail("no address", &e))?
        .next()
        .ok_or_else(|| BenchError::new(format!("raw GET {path}: {host} has no address")))?;
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| fail("connect", &e))?;
    conn.set_read_timeout(Some(timeout)).map_err(|e| fail("timeout", &e))?;
    conn.set_nodelay(true).map_err(|e| fail("nodelay", &e))?;
    let mut head =
        format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\nUser-Agent: berth-bench\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).map_err(|e| fail("send", &e))?;

    let mut buf = vec![0u8; BUFFER];
    let mut filled = 0;
    let head_end = loop {
        let n = conn.read(&mut buf[filled..]).map_err(|e| fail("read", &e))?;
        if n == 0 {
            return Err(BenchError::new(format!(
                "raw GET {path}: the connection closed before the answer's head ended"
            )));
        }
        filled += n;
        if let Some(at) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if filled >= MAX_HEAD {
            return Err(BenchError::new(format!("raw GET {path}: an answer head over {MAX_HEAD} bytes")));
        }
    };
    let (status, length) = parse_head(&buf[..head_end]).map_err(|e| fail("answer", &e))?;
    let mut body_len = (filled - head_end) as u64;
    while body_len < length {
        let n = conn.read(&mut buf).map_err(|e| fail("read body", &e))?;
        if n == 0 {
            break;
        }
        body_len += n as u64;
    }
    Ok(RawAnswer { status, body_len })
}

/// The status and `Content-Length` of a response head.
fn parse_head(head: &[u8]) -> Result<(u16, u64), String> {
    let text = std::str::from_utf8(head).map_err(|_| "a head that is not text".to_owned())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP/1 status line: {status_line:?}"))?;
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse::<u64>().map_err(|_| format!("Content-Length {v:?}")))
        .transpose()?
        .ok_or_else(|| "no Content-Length".to_owned())?;
    Ok((status, length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_give_status_and_length_or_say_why_not() {
        let ok = b"HTTP/1.1 206 Partial Content\r\ncontent-length: 42\r\nX: y\r\n\r\n";
        assert_eq!(parse_head(ok), Ok((206, 42)));
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .unwrap_err()
                .contains("Content-Length")
        );
        assert!(parse_head(b"HTTP/2 200\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    }

    #[test]
    fn a_body_is_read_whole_from_a_real_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = [0u8; 4096];
            let n = s.read(&mut req).unwrap();
            let req = String::from_utf8_lossy(&req[..n]).into_owned();
            let body = vec![7u8; 3 << 20];
            s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes()).unwrap();
            s.write_all(&body).unwrap();
            req
        });
        let headers = vec![("Authorization".to_owned(), "Bearer t".to_owned())];
        let got = get("127.0.0.1", port, "/v2/a/blobs/sha256:00", &headers, Duration::from_secs(10)).unwrap();
        assert_eq!(got, RawAnswer { status: 200, body_len: 3 << 20 });
        let req = server.join().unwrap();
        assert!(req.starts_with("GET /v2/a/blobs/sha256:00 HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("\r\nAuthorization: Bearer t\r\n"), "{req}");
    }
}
