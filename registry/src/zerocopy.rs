//! Zero-copy pulls: a plaintext blob on the local disk goes from its file to a plain-HTTP
//! socket with `sendfile(2)`, never through this process's memory.
//!
//! hyper writes a response through its connection's IO, and it queues each body `Bytes` as
//! it is (no copy) when the IO says it writes vectored, handing the queue to
//! `poll_write_vectored` in order. So:
//! - [`ZeroCopyStream`] wraps a plain connection's `TcpStream` (TLS connections are not
//!   wrapped) and shares a [`Jobs`] queue with the requests of that connection (a request
//!   extension).
//! - A zero-copy body ([`file_body`]) yields *placeholders*: slices of one private static
//!   buffer, never sent. For each it first pushes a job (the file, an offset, a length) to the
//!   queue, so jobs are queued in the order hyper writes their placeholders.
//! - A write that starts in the placeholder buffer sends the front job's bytes from the file
//!   instead, as far as the socket takes them (hyper then advances its placeholder by as
//!   much), and ordinary bytes (heads, other bodies) are written as they are.
//!
//! It fails closed: a placeholder is sent only as its own job's file bytes. Each placeholder
//! starts at its own offset in the buffer (a tag), and the write checks it against the front
//! job; a placeholder without its job, out of step with it, or a file that ends early is an
//! IO error, and hyper closes the connection (the client sees a short body, never zeros).
//! A body dropped before it yielded its last piece (the connection is failing) takes its
//! jobs back, so nothing it queued can be matched by a later response.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use berth_storage::ByteStream;

/// The most one placeholder (one job) covers.
const PIECE: usize = 8 * 1024 * 1024;
/// Distinct start offsets of placeholders in the buffer: consecutive placeholders start at
/// different addresses, so one written out of turn does not match the front job.
const TAGS: usize = 4096;
/// Pieces of one body advised into the page cache (on the blocking pool) while the previous
/// one is sent.
const READ_AHEAD: usize = 2;

/// The placeholder buffer. Zeroed and never read: `.bss`, no memory until touched.
static PLACEHOLDERS: [u8; PIECE + TAGS] = [0; PIECE + TAGS];

/// Where `slice` starts in the placeholder buffer, if it is a placeholder.
fn placeholder_at(slice: &[u8]) -> Option<usize> {
    let base = PLACEHOLDERS.as_ptr() as usize;
    let at = (slice.as_ptr() as usize).checked_sub(base)?;
    (!slice.is_empty() && at < PLACEHOLDERS.len()).then_some(at)
}

/// One placeholder's bytes: `len` bytes of `file` from `offset`.
#[derive(Debug)]
struct Job {
    /// The response that queued it ([`Jobs::abandon`]).
    response: u64,
    file: Arc<File>,
    offset: u64,
    /// Bytes still to send; the placeholder's remaining length.
    len: usize,
    /// Where the placeholder's remaining bytes start in the buffer.
    at: usize,
}

/// The zero-copy jobs of one connection, in the order their placeholders are written. One
/// per plain connection, shared by its [`ZeroCopyStream`] and (as a request extension) by the
/// bodies of its responses.
#[derive(Debug, Clone, Default)]
pub struct Jobs(Arc<JobsInner>);

#[derive(Debug, Default)]
struct JobsInner {
    queue: Mutex<VecDeque<Job>>,
    next_response: AtomicU64,
    next_tag: AtomicU64,
}

impl Jobs {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Job>> {
        self.0.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `len` bytes (at most [`PIECE`]) of `file` at `offset` for `response`, and
    /// returns the placeholder to hand to hyper in their place.
    fn push(&self, response: u64, file: Arc<File>, offset: u64, len: usize) -> Bytes {
        debug_assert!(len > 0 && len <= PIECE);
        let tag = (self.0.next_tag.fetch_add(1, Ordering::Relaxed) % TAGS as u64) as usize;
        self.queue().push_back(Job { response, file, offset, len, at: tag });
        Bytes::from_static(&PLACEHOLDERS[tag..tag + len])
    }

    /// Drops the jobs `response` queued: its body ended before its last piece.
    fn abandon(&self, response: u64) {
        self.queue().retain(|j| j.response != response);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.queue().len()
    }

    /// Sends, with `send(file, offset, len)`, the front job's bytes for `placeholder` (the
    /// remaining bytes of the placeholder hyper is writing) and accounts for what was sent.
    fn send_front(
        &self,
        placeholder: &[u8],
        send: impl FnOnce(&File, u64, usize) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let Some(at) = placeholder_at(placeholder) else {
            return Err(io::Error::other("zero copy: not a placeholder"));
        };
        let mut queue = self.queue();
        let Some(job) = queue.front_mut() else {
            return Err(io::Error::other("zero copy: a placeholder without its file"));
        };
        if job.at != at || job.len != placeholder.len() {
            return Err(io::Error::other("zero copy: a placeholder out of step with its file"));
        }
        let sent = send(&job.file, job.offset, job.len)?;
        if sent == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "zero copy: the blob's file ended early"));
        }
        let sent = sent.min(job.len);
        job.offset += sent as u64;
        job.len -= sent;
        job.at += sent;
        if job.len == 0 {
            queue.pop_front();
        }
        Ok(sent)
    }
}

/// A plain connection's socket, writing placeholders from their files ([`Jobs`]).
#[derive(Debug)]
pub struct ZeroCopyStream {
    inner: TcpStream,
    jobs: Jobs,
}

impl ZeroCopyStream {
    /// Wraps `inner`; the [`Jobs`] returned go into each request's extensions.
    pub fn new(inner: TcpStream) -> (ZeroCopyStream, Jobs) {
        let jobs = Jobs::default();
        (ZeroCopyStream { inner, jobs: jobs.clone() }, jobs)
    }

    /// Sends the front job for `placeholder` with `sendfile(2)`, waiting for the socket to
    /// take bytes.
    fn poll_send(&mut self, cx: &mut Context<'_>, placeholder: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            let sent = self.inner.try_io(Interest::WRITABLE, || {
                self.jobs.send_front(placeholder, |file, offset, len| sendfile(&self.inner, file, offset, len))
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }
}

/// `sendfile(2)`: up to `len` bytes of `file` at `offset` to `socket`, without moving the
/// file's position (the file is shared).
fn sendfile(socket: &TcpStream, file: &File, offset: u64, len: usize) -> io::Result<usize> {
    let mut off = nix::libc::off_t::try_from(offset).map_err(io::Error::other)?;
    loop {
        match nix::sys::sendfile::sendfile(socket, file, Some(&mut off), len) {
            Err(nix::errno::Errno::EINTR) => continue,
            done => return done.map_err(io::Error::from),
        }
    }
}

impl AsyncRead for ZeroCopyStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ZeroCopyStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if placeholder_at(buf).is_some() {
            return self.poll_send(cx, buf);
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Ordinary slices up to the first placeholder go out in one writev; a placeholder
        // at the front goes out alone, from its file.
        let first = bufs.iter().position(|b| placeholder_at(b).is_some());
        match first {
            Some(0) => self.poll_send(cx, &bufs[0]),
            Some(n) => Pin::new(&mut self.inner).poll_write_vectored(cx, &bufs[..n]),
            None => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        // What makes hyper queue body `Bytes` as they are rather than copy them.
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Takes a response's jobs back when its body is dropped before its last piece.
struct Unfinished {
    jobs: Jobs,
    response: u64,
    done: bool,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.done {
            self.jobs.abandon(self.response);
        }
    }
}

/// The body of bytes `range` of `file`, as placeholders for `jobs`' connection. Each piece is
/// advised into the page cache ([`read_ahead`], on the blocking pool) before its placeholder
/// is yielded, [`READ_AHEAD`] pieces ahead, so `sendfile` seldom waits for the disk on an
/// async worker.
pub fn file_body(file: File, range: std::ops::Range<u64>, jobs: &Jobs) -> ByteStream {
    let file = Arc::new(file);
    let response = jobs.0.next_response.fetch_add(1, Ordering::Relaxed);
    let mut guard = Unfinished { jobs: jobs.clone(), response, done: false };
    let end = range.end;
    let pieces = (range.start..range.end).step_by(PIECE).map(move |at| (at, (end - at).min(PIECE as u64) as usize));
    let reading = file.clone();
    futures::stream::iter(pieces)
        .map(move |(at, len)| {
            let file = reading.clone();
            async move {
                tokio::task::spawn_blocking(move || read_ahead(&file, at, len)).await.map_err(io::Error::other)?;
                Ok::<_, io::Error>((at, len))
            }
        })
        .buffered(READ_AHEAD)
        .map_ok(move |(at, len)| {
            let placeholder = guard.jobs.push(guard.response, file.clone(), at, len);
            guard.done = at + len as u64 == end;
            placeholder
        })
        .boxed()
}

/// Asks the kernel to bring `len` bytes of `file` at `offset` into the page cache
/// (`POSIX_FADV_WILLNEED` starts the reads). Advice only: a failure changes nothing but speed.
fn read_ahead(file: &File, offset: u64, len: usize) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    if let (Ok(offset), Ok(len)) = (nix::libc::off_t::try_from(offset), nix::libc::off_t::try_from(len)) {
        let _ = posix_fadvise(file, offset, len, PosixFadviseAdvice::POSIX_FADV_WILLNEED);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn temp_file(content: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content).unwrap();
        f
    }

    /// A connected pair: the wrapped server side and the client side.
    async fn pair() -> (ZeroCopyStream, Jobs, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (stream, jobs) = ZeroCopyStream::new(server);
        (stream, jobs, client)
    }

    /// Writes `bufs` as hyper does: vectored, advancing past what each write took.
    async fn write_all_vectored(stream: &mut ZeroCopyStream, mut bufs: Vec<Bytes>) -> io::Result<()> {
        use bytes::Buf as _;
        while bufs.iter().any(|b| !b.is_empty()) {
            let slices: Vec<_> = bufs.iter().filter(|b| !b.is_empty()).map(|b| io::IoSlice::new(b)).collect();
            let mut n = std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_write_vectored(cx, &slices)).await?;
            for b in bufs.iter_mut() {
                let take = n.min(b.len());
                b.advance(take);
                n -= take;
            }
        }
        Ok(())
    }

    #[tokio::test]
    async fn placeholders_are_sent_as_their_files_between_ordinary_bytes() {
        let content: Vec<u8> = (0..2 * PIECE + 1000).map(|i| (i * 7 + i / 251) as u8).collect();
        let (mut stream, jobs, mut client) = pair().await;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        let body = file_body(temp_file(&content), 100..content.len() as u64 - 50, &jobs);
        let pieces: Vec<Bytes> = body.try_collect().await.unwrap();
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| placeholder_at(p).is_some()));
        assert_eq!(jobs.len(), 3);
        let mut bufs = vec![Bytes::from_static(b"head\r\n")];
        bufs.extend(pieces);
        bufs.push(Bytes::from_static(b"tail"));
        write_all_vectored(&mut stream, bufs).await.unwrap();
        assert_eq!(jobs.len(), 0);
        stream.shutdown().await.unwrap();
        drop(stream);
        let got = reader.await.unwrap();
        let mut want = b"head\r\n".to_vec();
        want.extend_from_slice(&content[100..content.len() - 50]);
        want.extend_from_slice(b"tail");
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the bytes received differ from the file's");
    }

    #[tokio::test]
    async fn a_placeholder_without_its_job_or_out_of_turn_is_an_error_and_sends_nothing() {
        let content = vec![7u8; 5000];
        let (mut stream, jobs, _client) = pair().await;
        // No job at all.
        let stray = Bytes::from_static(&PLACEHOLDERS[..10]);
        let e = write_all_vectored(&mut stream, vec![stray]).await.unwrap_err();
        assert!(e.to_string().contains("without its file"), "{e}");
        // Two jobs, the second placeholder written first.
        let body = file_body(temp_file(&content), 0..10, &jobs);
        let first: Vec<Bytes> = body.try_collect().await.unwrap();
        let body = file_body(temp_file(&content), 0..10, &jobs);
        let second: Vec<Bytes> = body.try_collect().await.unwrap();
        let e = write_all_vectored(&mut stream, second).await.unwrap_err();
        assert!(e.to_string().contains("out of step"), "{e}");
        // The first still goes out, then the second.
        write_all_vectored(&mut stream, first).await.unwrap();
        assert_eq!(jobs.len(), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_last_piece_takes_its_jobs_back() {
        let content = vec![1u8; 2 * PIECE + 1];
        let (_stream, jobs, _client) = pair().await;
        let finished: Vec<Bytes> = file_body(temp_file(b"abc"), 0..3, &jobs).try_collect().await.unwrap();
        assert_eq!(finished.len(), 1);
        let mut body = file_body(temp_file(&content), 0..content.len() as u64, &jobs);
        body.next().await.unwrap().unwrap();
        assert_eq!(jobs.len(), 2);
        drop(body);
        // The finished body's job stays: hyper still holds its placeholder.
        assert_eq!(jobs.len(), 1);
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_job_is_an_error() {
        let (mut stream, jobs, _client) = pair().await;
        let pieces: Vec<Bytes> = file_body(temp_file(b"short"), 0..100, &jobs).try_collect().await.unwrap();
        let e = write_all_vectored(&mut stream, pieces).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    }
}
