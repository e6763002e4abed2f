//! One limit on the calls a process serves at once, shared by all its connections.
//!
//! tower's `GlobalConcurrencyLimitLayer` does the same with a tokio semaphore, but tonic copies
//! the whole layer stack for every call, and with it that layer's two reference counts, its
//! permit future and, when the permit goes back, the semaphore's waiter lock: about 1% of a
//! trivial call's CPU on two cores (perf). Here a call that finds a free slot costs one
//! compare-and-swap and one subtraction on a counter, plus one read of the number of callers
//! waiting; only a call that finds the limit reached registers with a [`Notify`] and waits.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use tokio::sync::{Notify, futures::OwnedNotified};
use tower::{Layer, Service};

/// At most `max` calls are served at once; the others wait, in no particular order, for one
/// of them to end (its response future completes or is dropped).
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitLayer {
    limit: Arc<Limit>,
}

impl ConcurrencyLimitLayer {
    /// A limit of `max` calls at once (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            limit: Arc::new(Limit {
                max: max.max(1),
                in_flight: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
                freed: Arc::new(Notify::new()),
            }),
        }
    }

    /// Calls being served now.
    pub fn in_flight(&self) -> usize {
        self.limit.in_flight.load(Ordering::Relaxed)
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit {
            inner,
            limit: self.limit.clone(),
            permit: None,
            waiting: None,
        }
    }
}

#[derive(Debug)]
struct Limit {
    max: usize,
    in_flight: AtomicUsize,
    /// Callers registered with `freed`: a call that ends wakes one only when there are some.
    waiting: AtomicUsize,
    freed: Arc<Notify>,
}

impl Limit {
    fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let mut taken = self.in_flight.load(Ordering::Relaxed);
        loop {
            if taken >= self.max {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                taken,
                taken + 1,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Permit(self.clone())),
                Err(now) => taken = now,
            }
        }
    }
}

/// A slot, given back when dropped.
#[derive(Debug)]
struct Permit(Arc<Limit>);

impl Drop for Permit {
    fn drop(&mut self) {
        let limit = &self.0;
        limit.in_flight.fetch_sub(1, Ordering::SeqCst);
        // Sequentially consistent with the waiter, which counts itself and registers before
        // trying again: either it sees this slot free, or this sees it waiting and wakes it
        // (a wake-up of a waiter that is gone passes to the next one).
        if limit.waiting.load(Ordering::SeqCst) > 0 {
            limit.freed.notify_one();
        }
    }
}

/// A caller registered for the next freed slot; counted in [`Limit::waiting`] while it lives.
struct Waiting {
    notified: Pin<Box<OwnedNotified>>,
    limit: Arc<Limit>,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting").finish_non_exhaustive()
    }
}

impl Waiting {
    fn register(limit: &Arc<Limit>) -> Self {
        limit.waiting.fetch_add(1, Ordering::SeqCst);
        let mut notified = Box::pin(limit.freed.clone().notified_owned());
        notified.as_mut().enable();
        Self {
            notified,
            limit: limit.clone(),
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.limit.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The service made by [`ConcurrencyLimitLayer`]: ready once it holds a slot, which its next
/// call takes with it. Copies start without one.
#[derive(Debug)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    limit: Arc<Limit>,
    permit: Option<Permit>,
    waiting: Option<Waiting>,
}

impl<S: Clone> Clone for ConcurrencyLimit<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limit: self.limit.clone(),
            permit: None,
            waiting: None,
        }
    }
}

impl<S, R> Service<R> for ConcurrencyLimit<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Limited<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        while self.permit.is_none() {
            if let Some(waiting) = &mut self.waiting {
                std::task::ready!(waiting.notified.as_mut().poll(cx));
                self.waiting = None;
            }
            self.permit = self.limit.try_acquire();
            if self.permit.is_none() {
                // Registered before trying again, so a slot freed in between is not missed.
                let waiting = Waiting::register(&self.limit);
                self.permit = self.limit.try_acquire();
                if self.permit.is_none() {
                    self.waiting = Some(waiting);
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        // tower's contract: `call` follows a `poll_ready` that answered ready, which took a
        // slot. Without one the call is served anyway, counted, rather than panicking.
        let permit = self.permit.take().or_else(|| {
            self.limit.in_flight.fetch_add(1, Ordering::SeqCst);
            Some(Permit(self.limit.clone()))
        });
        Limited {
            inner: self.inner.call(request),
            permit,
        }
    }
}

pin_project_lite::pin_project! {
    /// A call holding a slot until it completes (or is dropped).
    #[derive(Debug)]
    pub struct Limited<F> {
        #[pin]
        inner: F,
        permit: Option<Permit>,
    }
}

impl<F: Future> Future for Limited<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        this.permit.take();
        Poll::Ready(output)
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, time::Duration};

    use tokio::sync::oneshot;
    use tower::ServiceExt as _;

    use super::*;

    /// A service whose calls end when the test says so.
    fn held() -> impl Service<
        oneshot::Receiver<()>,
        Response = (),
        Error = Infallible,
        Future = impl Future<Output = Result<(), Infallible>> + Send,
    > + Clone
    + Send {
        tower::service_fn(|release: oneshot::Receiver<()>| async move {
            let _ = release.await;
            Ok::<_, Infallible>(())
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_beyond_the_limit_wait_for_a_slot_and_every_slot_comes_back() {
        let layer = ConcurrencyLimitLayer::new(2);
        let service = layer.layer(held());
        let mut releases = Vec::new();
        let mut calls = Vec::new();
        for _ in 0..5 {
            let (release, wait) = oneshot::channel();
            releases.push(release);
            calls.push(tokio::spawn(service.clone().oneshot(wait)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(layer.in_flight(), 2, "two calls served, three waiting");
        assert_eq!(calls.iter().filter(|c| c.is_finished()).count(), 0);

        // Ending calls one at a time lets the waiting ones in, never more than two at once.
        for release in releases {
            let _ = release.send(());
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(layer.in_flight() <= 2);
        }
        for call in calls {
            call.await.expect("joined").expect("served");
        }
        assert_eq!(layer.in_flight(), 0);
        assert_eq!(layer.limit.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_waiting_leaves_no_slot_or_wake_up_behind() {
        let layer = ConcurrencyLimitLayer::new(1);
        let service = layer.layer(held());
        let (release, wait) = oneshot::channel();
        let first = tokio::spawn(service.clone().oneshot(wait));
        tokio::time::sleep(Duration::from_millis(20)).await;

        // A second caller waits, then is dropped (its client went away).
        let (_never, second_wait) = oneshot::channel();
        let second = tokio::time::timeout(
            Duration::from_millis(50),
            service.clone().oneshot(second_wait),
        )
        .await;
        assert!(
            second.is_err(),
            "the limit of one holds the second call back"
        );
        assert_eq!(layer.limit.waiting.load(Ordering::SeqCst), 0);

        let _ = release.send(());
        first.await.expect("joined").expect("served");
        assert_eq!(layer.in_flight(), 0);

        // The slot is free for the next caller straight away.
        let (release, wait) = oneshot::channel();
        let _ = release.send(());
        tokio::time::timeout(Duration::from_secs(1), service.clone().oneshot(wait))
            .await
            .expect("not held back")
            .expect("served");
    }

    #[tokio::test]
    async fn a_dropped_call_gives_its_slot_back() {
        let layer = ConcurrencyLimitLayer::new(1);
        let mut service = layer.layer(held());
        let (_release, wait) = oneshot::channel();
        let call = service.ready().await.expect("ready").call(wait);
        assert_eq!(layer.in_flight(), 1);
        drop(call);
        assert_eq!(layer.in_flight(), 0);
    }
}
