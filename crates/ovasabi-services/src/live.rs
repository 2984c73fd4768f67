//! Live streams of a feed read in batches, to a client over Server-Sent Events or a
//! WebSocket: one pump of each kind, shared by the notifications and the partners' streams.
//!
//! A pump sends each item of each batch in order and ends when the client goes away. A
//! failed read is logged as a warning and tried again after the feed's
//! [`retry`](Feed::RETRY) delay; the stream stays open.

use std::convert::Infallible;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::{Message as WsMessage, WebSocket};
use axum::response::sse::Event as SseEvent;

use crate::http::ApiError;

/// What a live stream reads: the next items, waiting until there are some.
#[async_trait]
pub(crate) trait Feed: Send + 'static {
    /// One item sent to the client.
    type Item: Send;
    /// How long to wait after a failed read before reading again.
    const RETRY: Duration;

    /// The next items after those already returned, waiting for one if there are none.
    async fn next_batch(&mut self) -> Result<Vec<Self::Item>, ApiError>;

    /// Names the stream in warnings (`notification stream of user u1`).
    fn describe(&self) -> String;
}

/// Sends the feed's items to `socket` as text messages (`text` of each), until the client
/// closes it or goes away.
pub(crate) async fn websocket<F: Feed>(
    mut feed: F,
    mut socket: WebSocket,
    text: impl Fn(F::Item) -> String + Send,
) {
    loop {
        tokio::select! {
            batch = feed.next_batch() => match batch {
                Ok(batch) => {
                    for item in batch {
                        if socket.send(WsMessage::Text(text(item).into())).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("{}: {}", feed.describe(), e.message);
                    tokio::time::sleep(F::RETRY).await;
                }
            },
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// The feed's items as Server-Sent Events (`event` of each), after `first` when given; the
/// task reading the feed ends when the client goes away.
pub(crate) fn sse<F: Feed>(
    feed: F,
    first: Option<SseEvent>,
    event: impl Fn(F::Item) -> SseEvent + Send + 'static,
) -> impl futures::Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
    let (tx, events) = crate::http::sse_channel(64);
    tokio::spawn(async move {
        let mut feed = feed;
        if let Some(first) = first {
            if tx.send(first).await.is_err() {
                return;
            }
        }
        loop {
            let batch = tokio::select! {
                _ = tx.closed() => return,
                batch = feed.next_batch() => batch,
            };
            match batch {
                Ok(batch) => {
                    for item in batch {
                        if tx.send(event(item)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("{}: {}", feed.describe(), e.message);
                    tokio::time::sleep(F::RETRY).await;
                }
            }
        }
    });
    events
}

/// The request's WebSocket upgrade when it asks for one (`Upgrade: websocket`), else `None`
/// (the caller answers with Server-Sent Events); 400 `invalid_upgrade` when it asks for one
/// that cannot be accepted.
pub(crate) async fn upgrade<S: Send + Sync>(
    parts: &mut axum::http::request::Parts,
    state: &S,
) -> Result<Option<axum::extract::ws::WebSocketUpgrade>, ApiError> {
    use axum::extract::FromRequestParts;
    let asked = parts
        .headers
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !asked {
        return Ok(None);
    }
    axum::extract::ws::WebSocketUpgrade::from_request_parts(parts, state)
        .await
        .map(Some)
        .map_err(|e| ApiError {
            status: axum::http::StatusCode::BAD_REQUEST,
            code: "invalid_upgrade",
            message: format!(
                "the WebSocket upgrade cannot be accepted: {}",
                e.body_text()
            ),
            field: None,
        })
}
