//! What a dead-lettered event carries: the extension attributes every backend (and the
//! outbox relay, for an event the bus refused) adds to the copy it puts on `<topic>.dlq`
//! ([`naming::dead_letter_topic`](crate::naming::dead_letter_topic)).
//!
//! | attribute | value |
//! | --- | --- |
//! | [`REASON`] | why it was dead-lettered, e.g. `max deliveries reached` |
//! | [`ERROR`] | the handler's last error, or the bus's refusal, at most [`MAX_ERROR_BYTES`] ([`error_text`]) |
//! | [`ATTEMPTS`] | deliveries made, a decimal string |
//! | [`GROUP`] | the consumer group that gave up (absent when the relay parked it) |
//! | [`TOPIC`] | the topic it came from |
//! | [`OFFSET`] | its position on that topic, a decimal string, where the backend has one |

/// Why the event was dead-lettered.
pub const REASON: &str = "deadletterreason";
/// The last error, at most [`MAX_ERROR_BYTES`].
pub const ERROR: &str = "deadlettererror";
/// How many deliveries were made.
pub const ATTEMPTS: &str = "deadletterattempts";
/// The group that gave up.
pub const GROUP: &str = "deadlettergroup";
/// The topic the event came from.
pub const TOPIC: &str = "deadlettertopic";
/// The event's position on that topic.
pub const OFFSET: &str = "deadletteroffset";
/// What every one of these attributes' names starts with.
pub const PREFIX: &str = "deadletter";

/// Longest [`ERROR`] kept, in bytes: the copy must still fit a broker's limits.
pub const MAX_ERROR_BYTES: usize = 4096;

/// `error` as [`ERROR`] keeps it: cut at a character boundary to at most
/// [`MAX_ERROR_BYTES`], with `…` added where it was cut.
pub fn error_text(error: &str) -> String {
    if error.len() <= MAX_ERROR_BYTES {
        return error.to_owned();
    }
    let mut end = MAX_ERROR_BYTES;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &error[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_cut_at_a_character_boundary() {
        assert_eq!(error_text("short"), "short");
        let exact = "x".repeat(MAX_ERROR_BYTES);
        assert_eq!(error_text(&exact), exact);
        // 'é' is two bytes: one starts at MAX_ERROR_BYTES - 1 and would be split.
        let long = format!("{}é{}", "x".repeat(MAX_ERROR_BYTES - 1), "y".repeat(10));
        let cut = error_text(&long);
        assert_eq!(cut, format!("{}…", "x".repeat(MAX_ERROR_BYTES - 1)));
        for name in [REASON, ERROR, ATTEMPTS, GROUP, TOPIC, OFFSET] {
            assert!(name.starts_with(PREFIX), "{name}");
        }
    }
}
