//! Call deadlines: a call that runs longer than the server's `--request-timeout`, or than the
//! caller's own `grpc-timeout` when that is shorter, is answered DEADLINE_EXCEEDED and its
//! handler dropped.
//!
//! The timer is armed only when the call first has to wait: a call answered on its first poll
//! (a cached read) never touches tokio's timer wheel, which tonic's own `Server::timeout`
//! registers and removes on every call (and answers CANCELLED rather than DEADLINE_EXCEEDED).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderName, Request, Response};
use tokio::time::Sleep;
use tonic::{Status, body::Body};
use tower::{Layer, Service};

/// The header a gRPC client states its deadline in.
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Puts a deadline on every call: `timeout`, or the caller's shorter `grpc-timeout`.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    timeout: Duration,
}

impl DeadlineLayer {
    /// Calls may run for `timeout` at most.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service made by [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S, B> Service<Request<B>> for Deadline<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // A malformed grpc-timeout is ignored, as tonic does: the server's own limit holds.
        let asked = request
            .headers()
            .get(GRPC_TIMEOUT)
            .and_then(|value| value.to_str().ok())
            .and_then(crate::client::parse_grpc_timeout);
        DeadlineFuture {
            inner: self.inner.call(request),
            timeout: asked.map_or(self.timeout, |asked| asked.min(self.timeout)),
            timer: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// A call with a deadline; see [`DeadlineLayer`].
    #[derive(Debug)]
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        timeout: Duration,
        // Armed when the call first waits.
        #[pin]
        timer: Option<Sleep>,
    }
}

impl<F, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(answer) = this.inner.poll(cx) {
            return Poll::Ready(answer);
        }
        if this.timer.is_none() {
            this.timer.set(Some(tokio::time::sleep(*this.timeout)));
        }
        match this.timer.as_pin_mut().map(|timer| timer.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Ok(Status::deadline_exceeded(format!(
                "the call did not finish within its deadline of {}",
                humantime::format_duration(*this.timeout)
            ))
            .into_http())),
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::ServiceExt as _;

    use super::*;

    /// A handler that answers OK after `delay`.
    fn slow(
        delay: Duration,
    ) -> impl Service<
        Request<()>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
    > + Clone {
        tower::service_fn(move |_request: Request<()>| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, Infallible>(Status::ok("").into_http())
        })
    }

    fn code(response: &Response<Body>) -> Option<String> {
        let value = response.headers().get("grpc-status")?.to_str().ok()?;
        Some(value.to_owned())
    }

    fn request(grpc_timeout: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(value) = grpc_timeout {
            request
                .headers_mut()
                .insert("grpc-timeout", value.parse().expect("header value"));
        }
        request
    }

    #[tokio::test]
    async fn a_call_past_the_server_limit_is_deadline_exceeded() {
        let service =
            DeadlineLayer::new(Duration::from_millis(50)).layer(slow(Duration::from_secs(30)));
        let started = std::time::Instant::now();
        let response = service.oneshot(request(None)).await.expect("answer");
        assert_eq!(code(&response).as_deref(), Some("4"), "DEADLINE_EXCEEDED");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_shorter_client_deadline_wins_and_a_longer_one_does_not() {
        let layer = DeadlineLayer::new(Duration::from_secs(30));
        let started = std::time::Instant::now();
        let response = layer
            .layer(slow(Duration::from_secs(30)))
            .oneshot(request(Some("40m")))
            .await
            .expect("answer");
        assert_eq!(code(&response).as_deref(), Some("4"));
        assert!(started.elapsed() < Duration::from_secs(5));

        let capped = DeadlineLayer::new(Duration::from_millis(50));
        let response = capped
            .layer(slow(Duration::from_secs(30)))
            .oneshot(request(Some("1H")))
            .await
            .expect("answer");
        assert_eq!(
            code(&response).as_deref(),
            Some("4"),
            "the server's limit holds"
        );
    }

    #[tokio::test]
    async fn calls_within_their_deadline_are_answered_and_malformed_deadlines_ignored() {
        let layer = DeadlineLayer::new(Duration::from_secs(5));
        for header in [None, Some("2S"), Some("soon"), Some("123456789S")] {
            let response = layer
                .layer(slow(Duration::from_millis(20)))
                .oneshot(request(header))
                .await
                .expect("answer");
            assert_eq!(code(&response).as_deref(), Some("0"), "{header:?}");
        }
    }
}
