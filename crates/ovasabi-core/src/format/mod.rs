//! Event formats: how an [`Event`](crate::Event) becomes bytes, and back.
//!
//! - [`json`]: the JSON event format, for the *structured* content mode
//!   (`application/cloudevents+json`: attributes and data in one JSON object) and the
//!   batch mode (`application/cloudevents-batch+json`: a JSON array of them).
//! - [`binary`]: the *binary* content mode of the HTTP, NATS and Kafka bindings: attributes
//!   in message headers (`ce-*` or `ce_*`), the data as the body, byte for byte.
//!
//! Encoding never fails; it writes the event as it is, so validate first (every publish
//! does). Decoding always validates: an `Ok` event keeps every rule of
//! [`crate::validate`].

pub mod binary;
pub mod json;

pub use binary::Binding;

use crate::validate::ValidationError;

/// Why bytes or headers could not be decoded into an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The input is not the expected syntax: malformed JSON, or JSON of the wrong shape.
    #[error("malformed {format}: {detail}")]
    Syntax {
        /// The format that was expected (`JSON`, `JSON batch`).
        format: &'static str,
        /// What the parser found, with its position.
        detail: String,
    },
    /// An attribute or the data is missing, of the wrong type, or cannot be decoded.
    #[error("attribute `{attribute}`: {reason}")]
    Attribute {
        /// The attribute (or `data`, `data_base64`, or a header name) at fault.
        attribute: String,
        /// What is wrong with it, and what to do.
        reason: String,
    },
    /// The input decoded, but the event breaks a CloudEvents rule.
    #[error("invalid event: {0}")]
    Invalid(#[from] ValidationError),
    /// One event of a batch could not be decoded; the others were not kept.
    #[error("event {index} of the batch: {source}")]
    Batch {
        /// The event's position in the batch, from 0.
        index: usize,
        /// What was wrong with it.
        source: Box<FormatError>,
    },
}

impl FormatError {
    /// An [`Attribute`](FormatError::Attribute) error.
    pub fn attribute(attribute: impl Into<String>, reason: impl Into<String>) -> Self {
        FormatError::Attribute {
            attribute: attribute.into(),
            reason: reason.into(),
        }
    }

    /// The attribute at fault, when the error is about one.
    pub fn attribute_name(&self) -> Option<&str> {
        match self {
            FormatError::Syntax { .. } => None,
            FormatError::Attribute { attribute, .. } => Some(attribute),
            FormatError::Invalid(e) => Some(&e.attribute),
            FormatError::Batch { source, .. } => source.attribute_name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_attribute() {
        let e = FormatError::attribute("time", "bad");
        assert_eq!(e.attribute_name(), Some("time"));
        assert_eq!(e.to_string(), "attribute `time`: bad");
        let e = FormatError::Batch {
            index: 3,
            source: Box::new(FormatError::Invalid(ValidationError::new("id", "empty"))),
        };
        assert_eq!(e.attribute_name(), Some("id"));
        assert_eq!(
            e.to_string(),
            "event 3 of the batch: invalid event: attribute `id`: empty"
        );
        let e = FormatError::Syntax {
            format: "JSON",
            detail: "x".into(),
        };
        assert_eq!(e.attribute_name(), None);
    }
}
