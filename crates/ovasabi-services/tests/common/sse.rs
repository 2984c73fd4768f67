//! A Server-Sent Events reader over a real HTTP response, read by hand (no SSE library: the
//! tests check the wire format itself).

use std::time::{Duration, Instant};

use reqwest::StatusCode;

/// One block of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// An event: its `id:`, `event:` and `data:` lines (each `None` when absent).
    Event {
        id: Option<String>,
        kind: Option<String>,
        data: String,
    },
    /// A comment line (`: text`); an empty one is a keep-alive.
    Comment(String),
}

/// An open stream.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    /// Sends `request` (with `Accept: text/event-stream`); panics unless the answer is a 200
    /// event stream.
    pub async fn open(request: reqwest::RequestBuilder) -> SseReader {
        let response = request
            .header("Accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        SseReader {
            response,
            buffer: String::new(),
        }
    }

    /// The next frame, or `None` when nothing comes `within`; panics when the stream ends.
    pub async fn frame(&mut self, within: Duration) -> Option<Frame> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut kind, mut data, mut comment) = (None, None, None, None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix(':') {
                        comment = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        kind = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = Some(v.trim().to_owned());
                    }
                }
                return Some(match (data, comment) {
                    (Some(data), _) => Frame::Event { id, kind, data },
                    (None, Some(comment)) => Frame::Comment(comment),
                    (None, None) => panic!("an SSE block neither event nor comment: {block:?}"),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.response.chunk()).await {
                Err(_) => return None,
                Ok(chunk) => {
                    let chunk = chunk.unwrap().expect("the stream stays open");
                    self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
                }
            }
        }
    }

    /// The next event of kind `kind` (others and comments skipped) as (id, JSON data), or
    /// `None` when none comes `within`.
    pub async fn event(
        &mut self,
        kind: &str,
        within: Duration,
    ) -> Option<(Option<String>, serde_json::Value)> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.frame(left).await? {
                Frame::Event {
                    id,
                    kind: Some(k),
                    data,
                } if k == kind => return Some((id, serde_json::from_str(&data).unwrap())),
                _ => continue,
            }
        }
    }
}
