//! A TLS ClientHello on the plain-HTTP port is answered at once, not left hanging.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

#[tokio::test]
async fn tls_client_hello_gets_an_immediate_answer() {
    let t = TestServer::start().await;
    let mut s = tokio::net::TcpStream::connect(t.server.addr).await.unwrap();
    // The start of a TLS 1.2/1.3 ClientHello record.
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut answer))
        .await
        .expect("the server must answer and close within 2 s")
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&answer));
    // Plain HTTP still works on the same port.
    let ok = t.client.get(t.url("/v2/")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    t.server.stop().await;
}
