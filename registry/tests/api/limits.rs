//! What an unauthenticated client can make the server hold (`server.*` keys): connections
//! per address, the time and size of request heads, transfer codings, and the memory a
//! flood of unfinished heads leaves behind. Raw sockets throughout: these are wire-level
//! behaviours no HTTP client library would produce.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// How long a test waits for something that should happen at once before failing it.
const PATIENCE: Duration = Duration::from_secs(20);
/// How long the allocator gets to give freed memory back (jemalloc's decay is 10 s).
const RETURN_PATIENCE: Duration = Duration::from_secs(60);

/// A `berth serve` process (the built binary), for what needs a process of its own: its
/// open-file limit, its resident memory.
struct Spawned {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Spawned {
    /// Starts `berth serve` on `127.0.0.1:0` (the port read from its log) with `env`, and
    /// with the open-file limit (soft and hard) set to `open_files` when given.
    fn start(env: &[(&str, &str)], open_files: Option<u32>) -> Spawned {
        let dir = tempfile::tempdir().unwrap();
        let bin = env!("CARGO_BIN_EXE_berth");
        let mut cmd = match open_files {
            // `ulimit -n` sets both limits, so the server cannot raise its soft limit past it.
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(format!("ulimit -n {n} && exec \"$0\" serve")).arg(bin);
                c
            }
            None => {
                let mut c = Command::new(bin);
                c.arg("serve");
                c
            }
        };
        cmd.env("BERTH_LISTEN", "127.0.0.1:0")
            .env("BERTH_DATA_DIR", dir.path())
            .env("BERTH_AUTH__ENABLED", "false")
            .env("BERTH_ENCRYPTION__ENABLED", "false")
            .env("BERTH_EVENTS__ENABLED", "false")
            .env("BERTH_LOG__FORMAT", "json")
            .env("BERTH_LOG__LEVEL", "info")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the log for the listen address, then keeps draining it so the server never
        // blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["message"] == "berth is serving"
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(v["listen"].as_str().unwrap_or_default().to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("berth serve did not start: {:?}", child.wait());
            }
        };
        Spawned { child, addr, _dir: dir }
    }

    /// The process's resident memory (`VmRSS`), in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one request on a new connection from `from` (a loopback address of the test's
/// choosing, so the server sees another client) and returns the response's status line,
/// or the error that stopped it.
fn get_from(from: &str, to: SocketAddr, path: &str) -> Result<String, String> {
    let mut s = connect_from(from, to)?;
    s.set_read_timeout(Some(PATIENCE)).map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).map_err(|e| e.to_string())?;
    Ok(line.trim_end().to_owned())
}

/// A blocking connection from `from` (an address on loopback) to `to`, through tokio's
/// `TcpSocket` (std cannot bind before connecting).
fn connect_from(from: &str, to: SocketAddr) -> Result<TcpStream, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket.bind(format!("{from}:0").parse().map_err(|e| format!("{e}"))?).map_err(|e| e.to_string())?;
        let stream = tokio::time::timeout(PATIENCE, socket.connect(to))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        stream.into_std().map_err(|e| e.to_string())
    })
    .and_then(|s| {
        s.set_nonblocking(false).map_err(|e| e.to_string())?;
        Ok(s)
    })
}

/// Whether the server closes `s` (end of stream or reset) before `PATIENCE` runs out.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an error answer (408 or the like) before the close is fine
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// 300 idle sockets from one address, against a server whose open-file limit is 256: before
/// the per-address cap, they took every descriptor and another client was never answered.
#[test]
fn idle_connections_beyond_the_per_address_cap_do_not_stop_another_client() {
    let server = Spawned::start(&[("BERTH_SERVER__MAX_CONNECTIONS_PER_ADDRESS", "20")], Some(256));
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(server.addr).unwrap());
    }
    // Over the cap, the server closes the oldest of that address's idle connections.
    assert!(closed_by_server(&mut idle[0]), "the first of 300 idle connections from one address stays open");
    // Another client (another loopback address) is served.
    let answer = get_from("127.0.0.2", server.addr, "/healthz");
    assert_eq!(answer.as_deref(), Ok("HTTP/1.1 200 OK"), "a client at another address, with 300 idle sockets open");
    // And so is a client from the flooding address: it displaces an idle one.
    let deadline = Instant::now() + PATIENCE;
    loop {
        match get_from("127.0.0.1", server.addr, "/healthz") {
            Ok(line) if line == "HTTP/1.1 200 OK" => break,
            other if Instant::now() > deadline => panic!("the flooding address is never served: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    drop(idle);
}

async fn server_with(setup: impl FnOnce(&mut berth_registry::config::Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    setup(&mut config);
    TestServer::start_with(dir, config).await
}

/// A slow-loris head, one byte at a time, is closed once `server.header_timeout` passes
/// (hyper's own timer is not reset by each byte, but the old 30 s was the only bound); so is
/// a connection that sends nothing, and a kept-alive one idle after its response.
#[tokio::test]
async fn a_head_that_never_completes_is_closed_after_the_header_timeout() {
    let t = server_with(|c| c.server.header_timeout = Duration::from_secs(1)).await;
    let addr = t.server.addr;
    tokio::task::spawn_blocking(move || {
        // Silent.
        let mut silent = TcpStream::connect(addr).unwrap();
        assert!(closed_by_server(&mut silent), "a silent connection stays open");

        // A byte every 100 ms, never a complete head.
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").unwrap();
        let deadline = Instant::now() + PATIENCE;
        let closed = loop {
            if slow.write_all(b"X").is_err() {
                break true;
            }
            slow.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            match slow.read(&mut [0u8; 1024]) {
                Ok(0) => break true,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Ok(_) | Err(_) => break true,
            }
            if Instant::now() > deadline {
                break false;
            }
        };
        assert!(closed, "a head sent byte by byte is never closed");

        // Served once, then idle on a kept-alive connection.
        let mut kept = TcpStream::connect(addr).unwrap();
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut reader = BufReader::new(kept.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), "HTTP/1.1 200 OK");
        assert!(closed_by_server(&mut kept), "an idle kept-alive connection stays open");
    })
    .await
    .unwrap();
    t.server.stop().await;
}

/// A 100 KiB head (one long header) is answered 431 (`server.max_header_bytes`, 64 KiB).
#[tokio::test]
async fn a_head_over_max_header_bytes_is_431() {
    let t = TestServer::start().await;
    let addr = t.server.addr;
    let status = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let head = format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n", "a".repeat(100 * 1024));
        s.write_all(head.as_bytes()).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    assert_eq!(status.trim_end(), "HTTP/1.1 431 Request Header Fields Too Large");
    t.server.stop().await;
}

/// `Transfer-Encoding: gzip, chunked`: hyper undoes `chunked` and leaves `gzip` to the
/// application, which used to store the still-compressed bytes. Now 501 UNSUPPORTED.
#[tokio::test]
async fn a_transfer_coding_other_than_chunked_is_501() {
    let t = TestServer::start().await;
    let addr = t.server.addr;
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(
            b"POST /v2/limits/te/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\
              Connection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
        .unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 501 Not Implemented\r\n"), "{answer}");
    assert!(answer.contains(r#""code":"UNSUPPORTED""#), "{answer}");
    // Plain chunked still works.
    let r = t
        .client
        .post(t.url("/v2/limits/te/blobs/uploads/"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter([Ok::<_, std::io::Error>(b"abc".to_vec())])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    t.server.stop().await;
}

/// 300 connections each send ~60 KiB of a head that never ends, then close. The server's
/// resident memory must come back near where it was: glibc's malloc kept all of it (35 MiB
/// before, 49 MiB during, 54 MiB after), jemalloc's background thread returns it within its
/// 10 s decay. The bound is generous (8 MiB over the baseline, 20 s): it checks that the
/// memory is returned, not how fast.
#[test]
fn memory_held_by_unfinished_heads_is_returned_after_they_close() {
    let server = Spawned::start(&[], None);
    // Warm up: the first requests allocate what every later one reuses.
    for _ in 0..20 {
        assert_eq!(get_from("127.0.0.1", server.addr, "/v2/").as_deref(), Ok("HTTP/1.1 200 OK"));
    }
    let baseline = server.rss_kib();
    let chunk = format!("X-Flood: {}\r\n", "a".repeat(1000));
    let mut flood = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").unwrap();
        for _ in 0..60 {
            s.write_all(chunk.as_bytes()).unwrap();
        }
        flood.push(s);
    }
    // Wait until the server holds the heads (its memory grew by most of the ~18 MiB sent).
    let deadline = Instant::now() + PATIENCE;
    let mut peak = baseline;
    while peak < baseline + 12 * 1024 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        peak = peak.max(server.rss_kib());
    }
    assert!(peak >= baseline + 12 * 1024, "the flood was not held: {baseline} KiB -> {peak} KiB");
    drop(flood);
    // The server notices the closes, frees the buffers, and the allocator gives them back.
    let bound = baseline + 8 * 1024;
    let deadline = Instant::now() + RETURN_PATIENCE;
    let mut now = server.rss_kib();
    while now > bound && Instant::now() < deadline {
        // Requests keep the allocator busy, as real traffic would (some purge on activity).
        let _ = get_from("127.0.0.1", server.addr, "/v2/");
        std::thread::sleep(Duration::from_millis(200));
        now = server.rss_kib();
    }
    eprintln!("resident memory: {baseline} KiB before, {peak} KiB during, {now} KiB after the flood closed");
    assert!(
        now <= bound,
        "resident memory: {baseline} KiB before, {peak} KiB during, {now} KiB after the flood closed"
    );
}
