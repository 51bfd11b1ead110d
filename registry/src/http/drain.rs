//! [`DrainOnDrop`]: a request body that, when a handler answers without reading it to the
//! end (an upload refused with 416 or 404 before its bytes were looked at), goes on reading
//! and discarding the rest in the background, up to [`DRAIN_LIMIT`] bytes or
//! [`DRAIN_TIME`]. The client, which may write its whole body before reading the answer,
//! then sees the answer rather than a broken pipe, and the connection stays usable. Past
//! the limits the body is dropped and hyper closes the connection.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

/// The most a refused request's body is read for.
pub const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;
/// The longest a refused request's body is read for.
pub const DRAIN_TIME: Duration = Duration::from_secs(30);

pub struct DrainOnDrop {
    inner: Option<Body>,
    done: bool,
}

impl DrainOnDrop {
    pub fn wrap(body: Body) -> Body {
        Body::new(DrainOnDrop { inner: Some(body), done: false })
    }
}

impl http_body::Body for DrainOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.done = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(http_body::Body::size_hint).unwrap_or_default()
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        let Some(mut body) = self.inner.take() else { return };
        if self.done || http_body::Body::is_end_stream(&body) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let mut seen = 0u64;
            let _ = tokio::time::timeout(DRAIN_TIME, async {
                while let Some(Ok(frame)) = body.frame().await {
                    seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if seen > DRAIN_LIMIT {
                        break;
                    }
                }
            })
            .await;
        });
    }
}
