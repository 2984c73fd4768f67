//! Dead letters. JetStream has no dead-letter queue of its own: the bus publishes a copy of
//! the event to `<topic>.dlq` with the `deadletter*` extensions, then acks the original.
//!
//! The copy's `Nats-Msg-Id` is `<group>:<topic>:<offset>`, so if the bus stops between the
//! copy and the ack, the redelivery's copy is dropped by the dead-letter stream's
//! deduplication (within its duplicate window) and the event lands there once per group.

use async_nats::jetstream::message::PublishMessage;
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use ovasabi_core::dead_letter;
use ovasabi_core::naming::dead_letter_topic;
use ovasabi_core::{BusError, Event, ExtensionValue};

use crate::bus::Inner;
use crate::codec;
use crate::layout;

/// Where the event was and why it goes.
pub(crate) struct DeadLetterJob<'a> {
    pub(crate) group: &'a str,
    pub(crate) topic: &'a str,
    pub(crate) offset: u64,
    pub(crate) attempts: u32,
    pub(crate) reason: &'a str,
    pub(crate) error: Option<String>,
}

impl DeadLetterJob<'_> {
    fn extensions(&self) -> Vec<(&'static str, String)> {
        let mut ext = vec![(dead_letter::REASON, self.reason.to_owned())];
        if let Some(error) = &self.error {
            ext.push((dead_letter::ERROR, dead_letter::error_text(error)));
        }
        ext.push((dead_letter::ATTEMPTS, self.attempts.to_string()));
        ext.push((dead_letter::GROUP, self.group.to_owned()));
        ext.push((dead_letter::TOPIC, self.topic.to_owned()));
        ext.push((dead_letter::OFFSET, self.offset.to_string()));
        ext
    }

    fn message_id(&self) -> String {
        layout::dead_letter_message_id(self.group, self.topic, self.offset)
    }
}

/// Copies `event` to the dead-letter topic, then acks the original (`reply`).
pub(crate) async fn dead_letter(
    bus: &Inner,
    reply: &Subject,
    event: &Event,
    job: DeadLetterJob<'_>,
) -> Result<(), BusError> {
    let mut copy = event.clone();
    for (name, value) in job.extensions() {
        copy.extensions
            .insert(name.to_owned(), ExtensionValue::String(value));
    }
    let dlq = dead_letter_topic(job.topic);
    bus.send(&dlq, None, &[(copy, job.message_id())]).await?;
    finish(bus, reply, &job).await
}

/// Copies a message that is not a valid CloudEvent (a foreign publisher's) to the
/// dead-letter topic as it is, with the `ce-deadletter*` headers added, then acks it.
pub(crate) async fn dead_letter_raw(
    bus: &Inner,
    reply: &Subject,
    headers: Option<&HeaderMap>,
    body: Bytes,
    job: DeadLetterJob<'_>,
) -> Result<(), BusError> {
    let dlq = dead_letter_topic(job.topic);
    let meta = bus.ensure_topic(&dlq).await?;
    let mut copy = headers.cloned().unwrap_or_default();
    for (name, value) in job.extensions() {
        copy.insert(
            format!("ce-{name}").as_str(),
            layout::header_safe(&value).as_ref(),
        );
    }
    copy.insert(codec::MSG_ID, job.message_id().as_str());
    copy.insert(codec::EXPECTED_STREAM, meta.stream.as_str());
    let message = PublishMessage::build().payload(body).headers(copy);
    let ack = bus
        .api
        .js
        .send_publish(meta.unkeyed_subject(), message)
        .await
        .map_err(|e| BusError::Unavailable(format!("dead-lettering to `{dlq}`: {e}")))?;
    ack.await
        .map_err(|e| BusError::Unavailable(format!("dead-lettering to `{dlq}`: {e}")))?;
    finish(bus, reply, &job).await
}

async fn finish(bus: &Inner, reply: &Subject, job: &DeadLetterJob<'_>) -> Result<(), BusError> {
    bus.confirm(reply, "+ACK").await?;
    bus.forget_error(job.group, job.topic, job.offset);
    tracing::warn!(
        group = job.group,
        topic = job.topic,
        offset = job.offset,
        attempts = job.attempts,
        reason = job.reason,
        error = ?job.error,
        "event dead-lettered"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_strings_and_errors_are_bounded() {
        let job = DeadLetterJob {
            group: "g",
            topic: "t",
            offset: 7,
            attempts: 3,
            reason: "max deliveries reached",
            error: Some("é".repeat(5000)),
        };
        let ext = job.extensions();
        let get = |n: &str| ext.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        assert_eq!(get(dead_letter::ATTEMPTS).as_deref(), Some("3"));
        assert_eq!(get(dead_letter::OFFSET).as_deref(), Some("7"));
        assert!(get(dead_letter::ERROR).unwrap().len() <= dead_letter::MAX_ERROR_BYTES + 3);
        assert_eq!(job.message_id(), "g:t:7");
    }
}
