//! Errors of the core: what a user or a backend can get wrong.

use crate::validate::ValidationError;

/// An error from a bus operation.
///
/// Each variant has a stable [`code`](BusError::code) for programs and a message for people
/// that names what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The event breaks a CloudEvents rule; nothing was written.
    #[error("invalid event: {0}")]
    InvalidEvent(#[from] ValidationError),
    /// The event's payload is larger than the bus accepts; nothing was written.
    #[error("event too large: its data is {size} bytes and this bus accepts at most {max}; send a reference to the payload instead, or raise the maximum")]
    EventTooLarge {
        /// The payload's size in bytes.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A topic name or pattern is malformed.
    #[error("invalid topic `{topic}`: {reason}")]
    InvalidTopic {
        /// The name as given.
        topic: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Subscription options that cannot work together.
    #[error("invalid subscription options: {0}")]
    InvalidOptions(String),
    /// The bus or subscription was closed.
    #[error("the bus is closed")]
    Closed,
    /// Another process owns the data directory.
    #[error("data directory {path} is in use by another process ({detail}); stop that process, or use another --data-dir; several processes share one bus through a broker such as NATS")]
    DataDirLocked {
        /// The directory.
        path: String,
        /// What the lock attempt said.
        detail: String,
    },
    /// The backend's storage failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// The broker could not be reached or refused the operation.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

impl BusError {
    /// A stable, machine-readable code for the error kind; never reused for another kind.
    pub fn code(&self) -> &'static str {
        match self {
            BusError::InvalidEvent(_) => "invalid_event",
            BusError::EventTooLarge { .. } => "event_too_large",
            BusError::InvalidTopic { .. } => "invalid_topic",
            BusError::InvalidOptions(_) => "invalid_options",
            BusError::Closed => "closed",
            BusError::DataDirLocked { .. } => "data_dir_locked",
            BusError::Storage(_) => "storage",
            BusError::Unavailable(_) => "unavailable",
        }
    }

    /// Whether the caller caused the error (bad input), as opposed to the bus failing.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            BusError::InvalidEvent(_)
                | BusError::EventTooLarge { .. }
                | BusError::InvalidTopic { .. }
                | BusError::InvalidOptions(_)
        )
    }
}
