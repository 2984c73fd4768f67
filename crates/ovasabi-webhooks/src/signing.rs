//! Standard Webhooks 1.0 signatures (<https://www.standardwebhooks.com>).
//!
//! Every delivery carries three headers:
//!
//! - [`HEADER_ID`] (`webhook-id`): the message id, the same across retries (an idempotency key);
//! - [`HEADER_TIMESTAMP`] (`webhook-timestamp`): the time of *this attempt*, in integer seconds
//!   since the Unix epoch;
//! - [`HEADER_SIGNATURE`] (`webhook-signature`): a space-separated list of `v1,<base64>`
//!   signatures, one per secret that is currently valid (two while a secret is being rotated).
//!
//! A `v1` signature is the standard base64 (with padding) of
//! `HMAC-SHA256(key, "{msg_id}.{timestamp}.{payload}")`, where `payload` is the exact body
//! bytes sent. The key is a [`Secret`] of 24 to 64 random bytes, shown to partners as
//! `whsec_` followed by its base64.
//!
//! A receiver ([`verify`]) refuses a timestamp more than [`TOLERANCE`] (5 minutes) away from
//! its own clock, which limits replays, then accepts the message if any `v1` entry of the
//! header matches, compared in constant time; entries of other versions (such as the
//! asymmetric `v1a`) are ignored. This is what the reference libraries of the specification
//! do, so partners can verify our deliveries with any of them.
//!
//! The message id must not contain a `.` (ours never do): the signed content is delimited by
//! full stops.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore as _;
use sha2::Sha256;

/// Name of the header carrying the message id.
pub const HEADER_ID: &str = "webhook-id";

/// Name of the header carrying the attempt's timestamp, in integer seconds since the Unix epoch.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";

/// Name of the header carrying the space-separated `v1,<base64>` signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// How far a message's timestamp may be from the receiver's clock, in either direction.
pub const TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The prefix that identifies a serialized symmetric secret.
const PREFIX: &str = "whsec_";

/// The signature version of HMAC-SHA256 signatures.
const VERSION: &str = "v1";

/// Fewest key bytes the specification allows (192 bits).
const MIN_KEY_LEN: usize = 24;

/// Most key bytes the specification allows (512 bits).
const MAX_KEY_LEN: usize = 64;

/// Key length of [`Secret::generate`].
const GENERATED_KEY_LEN: usize = 32;

/// What a secret looks like, repeated in every [`SigningError`] message.
const SECRET_FORMAT: &str = "a webhook secret is `whsec_` followed by the standard base64 \
     (A-Z a-z 0-9 + /, padded with =) of 24 to 64 random bytes, \
     e.g. `whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`; the `whsec_` prefix may be omitted";

type HmacSha256 = Hmac<Sha256>;

/// A symmetric signing secret: the raw HMAC key bytes (24 to 64 of them).
///
/// Serialized as `whsec_<base64>` by [`Display`](fmt::Display) (which therefore prints the key:
/// show it only to the endpoint's owner) and read back by [`Secret::parse`]. `Debug` never
/// prints the key.
#[derive(Clone, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

impl Secret {
    /// A new secret of 32 bytes from the operating system's CSPRNG.
    pub fn generate() -> Secret {
        let mut key = vec![0u8; GENERATED_KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Secret { key }
    }

    /// Reads a secret written as `whsec_<base64>` (or, as the reference libraries also accept,
    /// the bare base64 without the prefix).
    ///
    /// Refuses an empty text, anything that is not standard padded base64 (surrounding spaces
    /// and line breaks included), and keys shorter than 24 or longer than 64 bytes.
    pub fn parse(text: &str) -> Result<Secret, SigningError> {
        let encoded = text.strip_prefix(PREFIX).unwrap_or(text);
        if encoded.is_empty() {
            return Err(SigningError::Empty);
        }
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SigningError::InvalidBase64)?;
        if key.len() < MIN_KEY_LEN {
            return Err(SigningError::TooShort { len: key.len() });
        }
        if key.len() > MAX_KEY_LEN {
            return Err(SigningError::TooLong { len: key.len() });
        }
        Ok(Secret { key })
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.key
    }

    /// An HMAC-SHA256 instance keyed with this secret, fed the signed content of a message.
    fn mac(&self, msg_id: &str, timestamp: i64, payload: &[u8]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        mac
    }
}

impl PartialEq for Secret {
    /// Compares the keys in constant time (for keys of the same length).
    fn eq(&self, other: &Secret) -> bool {
        self.key.len() == other.key.len()
            && self
                .key
                .iter()
                .zip(&other.key)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl fmt::Display for Secret {
    /// `whsec_` followed by the standard base64 of the key: the secret itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", STANDARD.encode(&self.key))
    }
}

impl fmt::Debug for Secret {
    /// `Secret(whsec_…redacted)`: never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(whsec_…redacted)")
    }
}

/// Why [`Secret::parse`] refused a text. The messages never quote the text itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// Nothing (or only the `whsec_` prefix) was given.
    #[error("the webhook secret is empty: {SECRET_FORMAT}")]
    Empty,
    /// The text after the prefix is not standard padded base64.
    #[error("the webhook secret is not valid base64: {SECRET_FORMAT}")]
    InvalidBase64,
    /// The key has fewer than 24 bytes.
    #[error(
        "the webhook secret is too short ({len} bytes, at least 24 are needed): {SECRET_FORMAT}"
    )]
    TooShort {
        /// Number of key bytes decoded.
        len: usize,
    },
    /// The key has more than 64 bytes.
    #[error(
        "the webhook secret is too long ({len} bytes, at most 64 are allowed): {SECRET_FORMAT}"
    )]
    TooLong {
        /// Number of key bytes decoded.
        len: usize,
    },
}

/// Why [`verify`] refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The `webhook-timestamp` header is absent or empty.
    #[error(
        "the webhook-timestamp header is missing (expected integer seconds since the Unix epoch)"
    )]
    MissingTimestamp,
    /// The `webhook-timestamp` header is not an integer.
    #[error(
        "the webhook-timestamp header is not an integer number of seconds since the Unix epoch"
    )]
    InvalidTimestamp,
    /// The timestamp is more than [`TOLERANCE`] in the past: a delayed or replayed message.
    #[error(
        "the webhook-timestamp is {age_secs} s in the past, more than the {} s tolerance: \
         the message is too old (delayed or replayed, or the clocks disagree)",
        TOLERANCE.as_secs()
    )]
    TooOld {
        /// How many seconds before the receiver's clock the timestamp is.
        age_secs: i64,
    },
    /// The timestamp is more than [`TOLERANCE`] in the future.
    #[error(
        "the webhook-timestamp is {ahead_secs} s in the future, more than the {} s tolerance: \
         the sender's or the receiver's clock is wrong",
        TOLERANCE.as_secs()
    )]
    TooNew {
        /// How many seconds after the receiver's clock the timestamp is.
        ahead_secs: i64,
    },
    /// No `v1` signature of the webhook-signature header matches the message and the secret.
    #[error(
        "no v1 signature in the webhook-signature header matches this message and secret \
         (wrong secret, modified id, timestamp or body, or a malformed header)"
    )]
    NoMatchingSignature,
}

/// The `v1,<base64>` signature of one message under one secret.
///
/// `payload` must be the exact bytes of the body sent; `timestamp` the value sent in the
/// `webhook-timestamp` header.
pub fn sign(secret: &Secret, msg_id: &str, timestamp: i64, payload: &[u8]) -> String {
    let tag = secret
        .mac(msg_id, timestamp, payload)
        .finalize()
        .into_bytes();
    format!("{VERSION},{}", STANDARD.encode(tag))
}

/// The value of the `webhook-signature` header: one `v1,<base64>` signature per secret,
/// separated by single spaces.
///
/// Several secrets are given during a rotation, when the old and the new secret are both
/// valid, so a receiver configured with either accepts the message. No secrets give an empty
/// string (which no receiver accepts).
pub fn signature_header(
    secrets: &[&Secret],
    msg_id: &str,
    timestamp: i64,
    payload: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| sign(secret, msg_id, timestamp, payload))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks a received message, as the Standard Webhooks reference libraries do.
///
/// `timestamp` and `signature_header` are the raw values of the `webhook-timestamp` and
/// `webhook-signature` headers (an absent header can be passed as `""`), `payload` the exact
/// body bytes received and `now` the receiver's clock in seconds since the Unix epoch.
///
/// The timestamp must be an integer within [`TOLERANCE`] of `now` (exactly 5 minutes off is
/// still accepted); then the message is accepted if any space-separated `v1,<base64>` entry
/// of the header is the expected signature (compared in constant time). Entries of other
/// versions, and malformed entries, are skipped.
pub fn verify(
    secret: &Secret,
    msg_id: &str,
    timestamp: &str,
    signature_header: &str,
    payload: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    if timestamp.is_empty() {
        return Err(VerifyError::MissingTimestamp);
    }
    let timestamp: i64 = timestamp
        .parse()
        .map_err(|_| VerifyError::InvalidTimestamp)?;
    let tolerance = TOLERANCE.as_secs() as i64;
    let age_secs = now.saturating_sub(timestamp);
    if age_secs > tolerance {
        return Err(VerifyError::TooOld { age_secs });
    }
    let ahead_secs = timestamp.saturating_sub(now);
    if ahead_secs > tolerance {
        return Err(VerifyError::TooNew { ahead_secs });
    }

    let mac = secret.mac(msg_id, timestamp, payload);
    let matched = signature_header
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == VERSION)
        .filter_map(|(_, encoded)| STANDARD.decode(encoded).ok())
        .any(|tag| mac.clone().verify_slice(&tag).is_ok());
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_32_bytes_and_differ() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_eq!(a.as_bytes().len(), GENERATED_KEY_LEN);
        assert_ne!(a, b);
        assert_eq!(a, a.clone());
    }

    #[test]
    fn the_bounds_on_key_length_are_inclusive() {
        for len in [MIN_KEY_LEN, MAX_KEY_LEN] {
            let text = format!("{PREFIX}{}", STANDARD.encode(vec![7u8; len]));
            assert_eq!(Secret::parse(&text).unwrap().as_bytes().len(), len);
        }
        let short = STANDARD.encode(vec![7u8; MIN_KEY_LEN - 1]);
        assert_eq!(
            Secret::parse(&short),
            Err(SigningError::TooShort {
                len: MIN_KEY_LEN - 1
            })
        );
        let long = STANDARD.encode(vec![7u8; MAX_KEY_LEN + 1]);
        assert_eq!(
            Secret::parse(&long),
            Err(SigningError::TooLong {
                len: MAX_KEY_LEN + 1
            })
        );
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let secret = Secret::generate();
        assert!(matches!(
            verify(&secret, "msg", &i64::MIN.to_string(), "", b"", i64::MAX),
            Err(VerifyError::TooOld { .. })
        ));
        assert!(matches!(
            verify(&secret, "msg", &i64::MAX.to_string(), "", b"", i64::MIN),
            Err(VerifyError::TooNew { .. })
        ));
    }
}
