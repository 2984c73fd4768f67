//! The few JetStream API calls the bus makes, as plain requests with errors sorted into what
//! the bus acts on (missing, already there, anything else).
//!
//! Everything here works on nats-server 2.9: consumers are created with
//! `$JS.API.CONSUMER.CREATE.<stream>.<consumer>.<filter>` (2.9.0+) and carry one filter
//! subject; nothing uses 2.10+ features (multiple filters, metadata).

use std::fmt;

use async_nats::jetstream::consumer::{self, pull, FromConsumer, IntoConsumerConfig, PullConsumer};
use async_nats::jetstream::response::Response;
use async_nats::jetstream::{stream, Context, ErrorCode};
use ovasabi_core::BusError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Why an API call failed.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// The stream or consumer does not exist.
    NotFound(String),
    /// A stream or consumer of that name exists with another configuration.
    Exists(String),
    /// The server refused the request for another reason; `status` is its HTTP-like code
    /// (503: JetStream is not ready, e.g. while a restarted server recovers its streams).
    Refused { status: usize, message: String },
    /// No answer: the connection is down or the server did not reply in time.
    Transport(String),
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::NotFound(m) | ApiError::Exists(m) | ApiError::Transport(m) => f.write_str(m),
            ApiError::Refused { message, .. } => f.write_str(message),
        }
    }
}

impl ApiError {
    /// As a bus error, with `what` naming the operation.
    pub(crate) fn into_bus(self, what: &str) -> BusError {
        match self {
            ApiError::Transport(m)
            | ApiError::Refused {
                status: 503,
                message: m,
            } => BusError::Unavailable(format!("{what}: {m}")),
            other => BusError::Storage(format!("{what}: {other}")),
        }
    }
}

/// A JetStream API handle.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) js: Context,
}

#[derive(Deserialize)]
struct NamesPage {
    total: usize,
    #[serde(default)]
    streams: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct StreamsPage {
    total: usize,
    #[serde(default)]
    streams: Option<Vec<stream::Info>>,
}

#[derive(Deserialize)]
struct ConsumersPage {
    total: usize,
    #[serde(default)]
    consumers: Option<Vec<consumer::Info>>,
}

#[derive(Deserialize)]
struct Success {
    #[serde(default)]
    success: bool,
}

#[derive(Serialize)]
struct CreateConsumer<'a> {
    stream_name: &'a str,
    config: consumer::Config,
}

impl Api {
    async fn call<T: DeserializeOwned>(
        &self,
        subject: String,
        payload: &impl Serialize,
    ) -> Result<T, ApiError> {
        let response: Response<T> = self
            .js
            .request(subject.clone(), payload)
            .await
            .map_err(|e| ApiError::Transport(format!("JetStream request `{subject}`: {e}")))?;
        match response {
            Response::Ok(value) => Ok(value),
            Response::Err { error } => {
                let code = error.error_code();
                let status = error.code();
                let message = error.to_string();
                Err(
                    if code == ErrorCode::STREAM_NOT_FOUND || code == ErrorCode::CONSUMER_NOT_FOUND
                    {
                        ApiError::NotFound(message)
                    } else if code == ErrorCode::STREAM_NAME_EXIST
                        || code == ErrorCode::CONSUMER_NAME_EXIST
                        || code == ErrorCode::CONSUMER_ALREADY_EXISTS
                    {
                        ApiError::Exists(message)
                    } else {
                        ApiError::Refused { status, message }
                    },
                )
            }
        }
    }

    /// The account's JetStream usage and limits; fails when JetStream is off.
    pub(crate) async fn account_info(&self) -> Result<serde_json::Value, ApiError> {
        self.call("INFO".to_owned(), &serde_json::json!({})).await
    }

    pub(crate) async fn stream_info(&self, name: &str) -> Result<stream::Info, ApiError> {
        self.call(format!("STREAM.INFO.{name}"), &serde_json::json!({}))
            .await
    }

    pub(crate) async fn create_stream(
        &self,
        config: &stream::Config,
    ) -> Result<stream::Info, ApiError> {
        self.call(format!("STREAM.CREATE.{}", config.name), config)
            .await
    }

    pub(crate) async fn update_stream(
        &self,
        config: &stream::Config,
    ) -> Result<stream::Info, ApiError> {
        self.call(format!("STREAM.UPDATE.{}", config.name), config)
            .await
    }

    pub(crate) async fn delete_stream(&self, name: &str) -> Result<(), ApiError> {
        let done: Success = self
            .call(format!("STREAM.DELETE.{name}"), &serde_json::json!({}))
            .await?;
        if done.success {
            Ok(())
        } else {
            Err(ApiError::Refused {
                status: 500,
                message: format!("the server did not delete stream {name}"),
            })
        }
    }

    /// Names of streams whose subjects overlap `filter` (every stream with `None`).
    pub(crate) async fn stream_names(&self, filter: Option<&str>) -> Result<Vec<String>, ApiError> {
        self.paged(
            "STREAM.NAMES",
            filter,
            |page: NamesPage| (page.total, page.streams.unwrap_or_default()),
            |n| n.clone(),
        )
        .await
    }

    /// Infos of streams whose subjects overlap `filter` (every stream with `None`).
    pub(crate) async fn streams(
        &self,
        filter: Option<&str>,
    ) -> Result<Vec<stream::Info>, ApiError> {
        self.paged(
            "STREAM.LIST",
            filter,
            |page: StreamsPage| (page.total, page.streams.unwrap_or_default()),
            |i| i.config.name.clone(),
        )
        .await
    }

    /// Reads every page of a stream listing. Pages are windows (by offset) over the streams
    /// sorted by name, so a stream created or deleted meanwhile shifts them: a listing whose
    /// pages disagree on the total is read again (up to five times), and names seen twice
    /// are kept once.
    async fn paged<P: DeserializeOwned, T>(
        &self,
        subject: &str,
        filter: Option<&str>,
        split: impl Fn(P) -> (usize, Vec<T>),
        name: impl Fn(&T) -> String,
    ) -> Result<Vec<T>, ApiError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut items: Vec<T> = Vec::new();
            let mut offset = 0;
            let mut totals = std::collections::BTreeSet::new();
            loop {
                let mut request = serde_json::json!({ "offset": offset });
                if let Some(filter) = filter {
                    request["subject"] = filter.into();
                }
                let (total, got) = split(self.call(subject.to_owned(), &request).await?);
                totals.insert(total);
                offset += got.len();
                let empty = got.is_empty();
                items.extend(got);
                if empty || offset >= total {
                    break;
                }
            }
            if totals.len() <= 1 || attempt >= 5 {
                let mut seen = std::collections::HashSet::new();
                items.retain(|item| seen.insert(name(item)));
                return Ok(items);
            }
        }
    }

    pub(crate) async fn consumers(&self, stream: &str) -> Result<Vec<consumer::Info>, ApiError> {
        let mut infos = Vec::new();
        loop {
            let request = serde_json::json!({ "offset": infos.len() });
            let page: ConsumersPage = self
                .call(format!("CONSUMER.LIST.{stream}"), &request)
                .await?;
            let got = page.consumers.unwrap_or_default();
            let empty = got.is_empty();
            infos.extend(got);
            if empty || infos.len() >= page.total {
                return Ok(infos);
            }
        }
    }

    pub(crate) async fn consumer_info(
        &self,
        stream: &str,
        name: &str,
    ) -> Result<consumer::Info, ApiError> {
        self.call(
            format!("CONSUMER.INFO.{stream}.{name}"),
            &serde_json::json!({}),
        )
        .await
    }

    /// Creates a consumer, or updates the editable fields of an existing one.
    pub(crate) async fn create_consumer(
        &self,
        stream: &str,
        config: pull::Config,
    ) -> Result<consumer::Info, ApiError> {
        let name = config
            .durable_name
            .clone()
            .or_else(|| config.name.clone())
            .unwrap_or_default();
        let subject = if config.filter_subject.is_empty() {
            format!("CONSUMER.CREATE.{stream}.{name}")
        } else {
            format!("CONSUMER.CREATE.{stream}.{name}.{}", config.filter_subject)
        };
        let request = CreateConsumer {
            stream_name: stream,
            config: config.into_consumer_config(),
        };
        self.call(subject, &request).await
    }

    pub(crate) async fn delete_consumer(&self, stream: &str, name: &str) -> Result<(), ApiError> {
        let done: Success = self
            .call(
                format!("CONSUMER.DELETE.{stream}.{name}"),
                &serde_json::json!({}),
            )
            .await?;
        if done.success {
            Ok(())
        } else {
            Err(ApiError::Refused {
                status: 500,
                message: format!("the server did not delete consumer {name} of {stream}"),
            })
        }
    }

    /// A handle to pull from the consumer `info` describes.
    pub(crate) fn pull_handle(&self, info: consumer::Info) -> Result<PullConsumer, BusError> {
        let config = pull::Config::try_from_consumer_config(info.config.clone()).map_err(|e| {
            BusError::Storage(format!(
                "consumer {} of stream {} is not a pull consumer: {e}",
                info.name, info.stream_name
            ))
        })?;
        Ok(PullConsumer::new(config, info, self.js.clone()))
    }
}
