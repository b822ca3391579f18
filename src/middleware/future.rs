//! The response future of [`AuthService`](super::AuthService).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use super::body::ResponseBody;

pub(crate) type BoxFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send>>;

pin_project! {
    /// The future of [`AuthService`]: ready at once for requests refused before any I/O, the
    /// inner service's own future when the store answered from memory, boxed otherwise.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        state: FutureState<F, B, E>,
    }
}

pin_project! {
    #[project = StateProj]
    enum FutureState<F, B, E> {
        Ready { response: Option<Response<ResponseBody<B>>> },
        Inner { #[pin] future: F },
        Boxed { future: BoxFuture<B, E> },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(crate) fn ready(response: Response<ResponseBody<B>>) -> Self {
        Self {
            state: FutureState::Ready {
                response: Some(response),
            },
        }
    }

    pub(crate) fn inner(future: F) -> Self {
        Self {
            state: FutureState::Inner { future },
        }
    }

    pub(crate) fn boxed(future: BoxFuture<B, E>) -> Self {
        Self {
            state: FutureState::Boxed { future },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Ready { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
            StateProj::Inner { future } => future
                .poll(cx)
                .map(|r| r.map(|res| res.map(ResponseBody::inner))),
            StateProj::Boxed { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F, B, E> std::fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
