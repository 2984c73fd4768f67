//! Events as NATS messages: binary-mode CloudEvents (`ce-*` headers, the data as the body,
//! [`Binding::Nats`]) plus the `Nats-Msg-Id` that deduplicates re-publishes.
//!
//! A plain NATS client reading a stream sees standard CloudEvents. One header of our own is
//! added only when needed: `ovasabi-data: empty` marks an event whose data is present but
//! empty, which binary mode cannot tell from an event without data.

use std::borrow::Cow;

use async_nats::header::HeaderName;
use async_nats::HeaderMap;
use bytes::Bytes;
use ovasabi_core::format::binary::{for_each_header, from_headers, Binding};
use ovasabi_core::{BusError, Event};

use crate::layout;

/// The JetStream deduplication header.
pub(crate) const MSG_ID: &str = "Nats-Msg-Id";
/// The header that makes the server refuse a message meant for another stream.
pub(crate) const EXPECTED_STREAM: &str = "Nats-Expected-Stream";
/// Our marker for present-but-empty data.
const DATA_HEADER: &str = "ovasabi-data";

/// An event ready to send: its headers, body and the bytes they take on the wire.
#[derive(Debug)]
pub(crate) struct Encoded {
    /// Headers: the event's attributes, `Nats-Msg-Id` and `Nats-Expected-Stream`.
    pub(crate) headers: HeaderMap,
    /// The data, as is.
    pub(crate) body: Bytes,
}

/// Encodes `event` for `stream`, with `msg_id` as its deduplication id.
///
/// Checks that headers and data fit in the server's `max_payload`; a message that does not
/// is refused with [`BusError::EventTooLarge`] naming how much data would fit beside these
/// headers.
pub(crate) fn encode(
    event: &Event,
    stream: &str,
    msg_id: &str,
    max_payload: usize,
) -> Result<Encoded, BusError> {
    let mut headers = HeaderMap::new();
    // The header block as NATS writes it: "NATS/1.0\r\n", "<name>: <value>\r\n"…, "\r\n".
    let mut header_len = 12;
    for_each_header(event, Binding::Nats, |name, value| {
        header_len += name.len() + value.len() + 4;
        // Static names (the core attributes') go in without a copy; owned ones move in.
        match name {
            Cow::Borrowed(name) => headers.insert(HeaderName::from_static(name), value),
            Cow::Owned(name) => headers.insert(name, value),
        }
    });
    let marked_empty = event.data.as_ref().is_some_and(Bytes::is_empty);
    let extra: [(&'static str, &str); 3] = [
        (MSG_ID, msg_id),
        (EXPECTED_STREAM, stream),
        (DATA_HEADER, "empty"),
    ];
    for (name, value) in &extra[..if marked_empty { 3 } else { 2 }] {
        header_len += name.len() + value.len() + 4;
        headers.insert(HeaderName::from_static(name), *value);
    }
    let data_len = event.data_len();
    if header_len + data_len > max_payload {
        return Err(BusError::EventTooLarge {
            size: data_len,
            max: max_payload.saturating_sub(header_len),
        });
    }
    Ok(Encoded {
        headers,
        body: event.data.clone().unwrap_or_default(),
    })
}

/// The deduplication id [`encode`] uses for a plain publish.
pub(crate) fn publish_message_id(event: &Event) -> String {
    layout::message_id(&event.source, &event.id)
}

/// Decodes an event from a delivered message's headers and body.
pub(crate) fn decode(headers: Option<&HeaderMap>, body: &Bytes) -> Result<Event, String> {
    let empty = HeaderMap::new();
    let headers = headers.unwrap_or(&empty);
    let marked_empty = headers
        .get(DATA_HEADER)
        .is_some_and(|v| v.as_str() == "empty");
    let data = if body.is_empty() && !marked_empty {
        None
    } else {
        Some(body.clone())
    };
    let pairs = headers.iter().flat_map(|(name, values)| {
        values
            .iter()
            .map(move |v| (AsRef::<str>::as_ref(name), v.as_str()))
    });
    from_headers(pairs, data, Binding::Nats).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_attribute() {
        let event = Event::new("order.placed", "/orders")
            .with_id("e 1")
            .with_subject("Euro € 😀")
            .with_partition_key("o1")
            .with_extension("flag", "x")
            .with_data("application/octet-stream", vec![0u8, 1, 2, 255]);
        let enc = encode(&event, "S", "m", 1 << 20).unwrap();
        assert_eq!(enc.headers.get(MSG_ID).unwrap().as_str(), "m");
        assert_eq!(enc.headers.get("ce-id").unwrap().as_str(), "e%201");
        let back = decode(Some(&enc.headers), &enc.body).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn empty_and_absent_data_differ() {
        let none = Event::new("a.b", "/s").with_id("1");
        let empty = none.clone().with_data("text/plain", Bytes::new());
        for event in [none, empty] {
            let enc = encode(&event, "S", "m", 1 << 20).unwrap();
            assert_eq!(decode(Some(&enc.headers), &enc.body).unwrap(), event);
        }
    }

    #[test]
    fn too_large_names_what_fits() {
        let event = Event::new("a.b", "/s")
            .with_id("1")
            .with_data("application/octet-stream", vec![0u8; 1000]);
        match encode(&event, "S", "m", 900) {
            Err(BusError::EventTooLarge { size, max }) => {
                assert_eq!(size, 1000);
                assert!(max < 900);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn foreign_messages_are_refused_with_a_reason() {
        let err = decode(None, &Bytes::from_static(b"hello")).unwrap_err();
        assert!(err.contains("specversion"), "{err}");
    }
}
