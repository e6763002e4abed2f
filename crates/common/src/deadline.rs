//! The server's deadline: a call that runs longer than `--request-timeout` is answered
//! DEADLINE_EXCEEDED and its handler dropped.
//!
//! The timer is armed only when the call first has to wait: a call answered on its first poll
//! (a cached read) never touches tokio's timer wheel, which tonic's own `Server::timeout`
//! registers and removes on every call (and answers CANCELLED rather than DEADLINE_EXCEEDED).
//! A caller's own `grpc-timeout` is not read here: tonic's server enforces it on every call
//! whatever it is configured with (answering CANCELLED, by which time the caller has stopped
//! waiting), and a second timer for the same instant would only lose that race.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use tokio::time::Sleep;
use tonic::{Status, body::Body};
use tower::{Layer, Service};

/// Puts a deadline of `timeout` on every call.
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
        DeadlineFuture {
            inner: self.inner.call(request),
            timeout: self.timeout,
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

    #[tokio::test]
    async fn a_call_past_the_server_limit_is_deadline_exceeded() {
        let service =
            DeadlineLayer::new(Duration::from_millis(50)).layer(slow(Duration::from_secs(30)));
        let started = std::time::Instant::now();
        let response = service.oneshot(Request::new(())).await.expect("answer");
        assert_eq!(code(&response).as_deref(), Some("4"), "DEADLINE_EXCEEDED");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn calls_within_their_deadline_are_answered() {
        let layer = DeadlineLayer::new(Duration::from_secs(5));
        let response = layer
            .layer(slow(Duration::from_millis(20)))
            .oneshot(Request::new(()))
            .await
            .expect("answer");
        assert_eq!(code(&response).as_deref(), Some("0"));
    }
}
