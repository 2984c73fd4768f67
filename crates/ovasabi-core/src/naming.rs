//! Topic names, topic patterns and event-type names.
//!
//! A topic is a dot-separated list of tokens, each made of lower-case ASCII letters, digits,
//! `_` and `-`, starting with a letter or digit: `user.events`, `commerce.events`,
//! `user.events.dlq`. The rules fit NATS subjects, Kafka topic names and RabbitMQ routing
//! keys alike, so one name works on every backend.
//!
//! A pattern may also use `*` for exactly one token and `>` as its last token for one or
//! more tokens, with NATS's meanings: `*.events` matches `user.events`, `wallet.>` matches
//! `wallet.events` and `wallet.events.dlq`.

use crate::error::BusError;

/// Longest topic name accepted (Kafka's limit).
pub const MAX_TOPIC_LEN: usize = 249;

/// The suffix of a dead-letter topic: events of `T` that exhausted their deliveries go to
/// `T.dlq`.
pub const DEAD_LETTER_SUFFIX: &str = ".dlq";

/// The dead-letter topic of `topic`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}{DEAD_LETTER_SUFFIX}")
}

/// Whether `topic` is a dead-letter topic (`….dlq`).
pub fn is_dead_letter_topic(topic: &str) -> bool {
    topic.ends_with(DEAD_LETTER_SUFFIX)
}

fn check_token(whole: &str, token: &str) -> Result<(), BusError> {
    let invalid = |reason: String| BusError::InvalidTopic {
        topic: whole.to_owned(),
        reason,
    };
    let first = token.chars().next().ok_or_else(|| {
        invalid(
            "it has an empty token (two dots in a row, or a leading or trailing dot)".to_owned(),
        )
    })?;
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(invalid(format!(
            "token `{token}` must start with a lower-case letter or a digit"
        )));
    }
    if let Some(bad) = token
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return Err(invalid(format!(
            "character {bad:?} is not allowed; use lower-case letters, digits, `_`, `-` and `.` between tokens"
        )));
    }
    Ok(())
}

/// Checks a concrete topic name (no wildcards).
pub fn validate_topic(topic: &str) -> Result<(), BusError> {
    if topic.len() > MAX_TOPIC_LEN {
        return Err(BusError::InvalidTopic {
            topic: topic.to_owned(),
            reason: format!(
                "it is {} bytes long; the limit is {MAX_TOPIC_LEN}",
                topic.len()
            ),
        });
    }
    for token in topic.split('.') {
        check_token(topic, token)?;
    }
    Ok(())
}

/// A topic pattern: a topic name that may use `*` (one token) and a final `>` (the rest).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TopicPattern {
    text: String,
    tokens: Vec<PatternToken>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum PatternToken {
    Literal(String),
    One,
    Rest,
}

impl TopicPattern {
    /// Parses a pattern, with a message naming the problem when it is malformed.
    pub fn parse(text: &str) -> Result<Self, BusError> {
        if text.len() > MAX_TOPIC_LEN {
            return Err(BusError::InvalidTopic {
                topic: text.to_owned(),
                reason: format!(
                    "it is {} bytes long; the limit is {MAX_TOPIC_LEN}",
                    text.len()
                ),
            });
        }
        let parts: Vec<&str> = text.split('.').collect();
        let mut tokens = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            match *part {
                "*" => tokens.push(PatternToken::One),
                ">" if i + 1 == parts.len() => tokens.push(PatternToken::Rest),
                ">" => {
                    return Err(BusError::InvalidTopic {
                        topic: text.to_owned(),
                        reason: "`>` may only be the last token".to_owned(),
                    })
                }
                literal => {
                    check_token(text, literal)?;
                    tokens.push(PatternToken::Literal(literal.to_owned()));
                }
            }
        }
        Ok(TopicPattern {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern has a wildcard.
    pub fn is_wildcard(&self) -> bool {
        self.tokens
            .iter()
            .any(|t| !matches!(t, PatternToken::Literal(_)))
    }

    /// Whether `topic` matches the pattern.
    pub fn matches(&self, topic: &str) -> bool {
        let mut parts = topic.split('.');
        for token in &self.tokens {
            match token {
                PatternToken::Rest => return parts.next().is_some(),
                PatternToken::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                PatternToken::Literal(lit) => {
                    if parts.next() != Some(lit.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

impl std::fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Checks an OVASABI event type name: `<domain>.<past_tense_verb>`, lower-case tokens of
/// letters, digits and `_` (`user.registered`, `payment.completed`, `user.profile_updated`).
///
/// The bus itself accepts any CloudEvents type (events may come from outside); OVASABI's own
/// producers and the schema registry hold to this rule.
pub fn validate_event_type(ty: &str) -> Result<(), String> {
    let tokens: Vec<&str> = ty.split('.').collect();
    if tokens.len() < 2 {
        return Err(format!(
            "event type `{ty}` must be `<domain>.<past_tense_verb>`, e.g. `order.placed`"
        ));
    }
    for t in tokens {
        let ok = t.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && t.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            return Err(format!(
                "event type `{ty}`: token `{t}` must be lower-case letters, digits and `_`, starting with a letter"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert!(validate_topic("user.events").is_ok());
        assert!(validate_topic("user.events.dlq").is_ok());
        assert!(validate_topic("a-b_c.9").is_ok());
        for bad in [
            "",
            "User.events",
            "user..events",
            ".user",
            "user.",
            "user events",
            "user.*",
            "a/b",
        ] {
            assert!(validate_topic(bad).is_err(), "{bad} accepted");
        }
        assert!(validate_topic(&"a".repeat(250)).is_err());
    }

    #[test]
    fn patterns() {
        let p = TopicPattern::parse("*.events").unwrap();
        assert!(p.matches("user.events"));
        assert!(!p.matches("user.events.dlq"));
        assert!(!p.matches("events"));
        let p = TopicPattern::parse("wallet.>").unwrap();
        assert!(p.matches("wallet.events"));
        assert!(p.matches("wallet.events.dlq"));
        assert!(!p.matches("wallet"));
        let p = TopicPattern::parse("user.events").unwrap();
        assert!(p.matches("user.events") && !p.is_wildcard());
        assert!(!p.matches("user.events.x"));
        assert!(TopicPattern::parse("a.>.b").is_err());
        assert!(TopicPattern::parse("a.B").is_err());
    }

    #[test]
    fn event_types() {
        assert!(validate_event_type("user.registered").is_ok());
        assert!(validate_event_type("user.profile_updated").is_ok());
        assert!(validate_event_type("registered").is_err());
        assert!(validate_event_type("User.registered").is_err());
    }
}
