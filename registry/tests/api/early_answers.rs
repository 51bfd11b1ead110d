//! A request refused before its body is read (an out-of-order chunk, an unknown upload):
//! a client that writes the whole body before reading still gets the answer, and the
//! connection stays usable for the next request.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::support::*;

/// Reads one response's status and skips its body (Content-Length framed).
async fn read_response(r: &mut BufReader<tokio::net::TcpStream>) -> u16 {
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    let status = line.split(' ').nth(1).unwrap_or_default().parse().unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).await.unwrap();
    status
}

#[tokio::test]
async fn refused_uploads_answer_a_client_still_sending() {
    let t = TestServer::start().await;
    let location = t.start_upload("early/answers").await;
    let path = location.trim_start_matches(&t.server.url()).to_owned();
    let addr = t.server.url().trim_start_matches("http://").trim_end_matches('/').to_owned();
    let body = data(6 << 20, 3);
    for (what, target, range) in [
        ("out-of-order chunk", path.clone(), "100-6291555"),
        ("unknown upload", "/v2/early/answers/blobs/uploads/no-such-upload".to_owned(), "0-6291455"),
    ] {
        let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut conn = BufReader::new(stream);
        let head = format!(
            "PATCH {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
             Content-Range: {range}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        // Everything is written before anything is read, as simple clients do.
        conn.get_mut().write_all(head.as_bytes()).await.unwrap();
        conn.get_mut().write_all(&body).await.unwrap();
        let status = read_response(&mut conn).await;
        assert_eq!(status, if what == "unknown upload" { 404 } else { 416 }, "{what}");
        // The same connection serves the next request.
        let next = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        conn.get_mut().write_all(next.as_bytes()).await.unwrap();
        assert_eq!(read_response(&mut conn).await, 204, "after the {what}");
    }
    t.server.stop().await;
}
