//! Trace context: carry the W3C trace of the incoming event to the events it causes.
//!
//! Every outgoing event of a successful call that has no `traceparent` of its own gets one
//! ([`EXT_TRACEPARENT`], the CloudEvents distributed-tracing extension):
//! - the incoming event's trace id, a fresh parent (span) id and the incoming flags, and its
//!   `tracestate` ([`EXT_TRACESTATE`]) copied; or,
//! - when the incoming event has no valid `traceparent`, a new trace: a random trace id
//!   shared by all outgoing events of the call, flags `01` (sampled).
//!
//! This is plain string handling of `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`). When the
//! `tracing` subscriber has an OpenTelemetry layer, the parent id is instead the id of the span
//! the handler runs in (the consumer's `delivery` span), so the trace links: see
//! [`crate::otel`].

use std::fmt;

use async_trait::async_trait;
use ovasabi_core::event::{EXT_TRACEPARENT, EXT_TRACESTATE};
use ovasabi_core::{Event, ExtensionValue};
use rand::Rng;

use crate::handler::{Handler, HandlerError, Message, Outgoing};
use crate::layer::Layer;

/// A parsed W3C `traceparent`: trace id, parent (span) id and trace flags.
///
/// ```
/// use ovasabi_middleware::TraceParent;
///
/// let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
/// assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert!(tp.sampled());
/// let child = tp.child();
/// assert_eq!(child.trace_id(), tp.trace_id());
/// assert_ne!(child.parent_id(), tp.parent_id());
/// assert!(TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: String,
    parent_id: String,
    flags: u8,
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn random_nonzero_hex_u128() -> String {
    let mut rng = rand::thread_rng();
    loop {
        let v: u128 = rng.gen();
        if v != 0 {
            return format!("{v:032x}");
        }
    }
}

fn random_nonzero_hex_u64() -> String {
    let mut rng = rand::thread_rng();
    loop {
        let v: u64 = rng.gen();
        if v != 0 {
            return format!("{v:016x}");
        }
    }
}

impl TraceParent {
    /// The length of a version-00 `traceparent`.
    const LEN: usize = 55;

    /// Parses a `traceparent`; `None` if it is not valid per W3C Trace Context (wrong shape,
    /// upper-case hex, version `ff`, an all-zero trace or parent id). A version above `00`
    /// is read as `00`, ignoring anything after the flags, as the specification asks.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let version = text.get(0..2)?;
        if !is_lower_hex(version, 2) || version == "ff" {
            return None;
        }
        let head = if version == "00" {
            (text.len() == Self::LEN).then_some(text)?
        } else {
            let head = text.get(..Self::LEN)?;
            let rest = &text[Self::LEN..];
            (rest.is_empty() || rest.starts_with('-')).then_some(head)?
        };
        let mut parts = head.split('-');
        let (_, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || !is_lower_hex(trace_id, 32)
            || !is_lower_hex(parent_id, 16)
            || !is_lower_hex(flags, 2)
            || trace_id.bytes().all(|b| b == b'0')
            || parent_id.bytes().all(|b| b == b'0')
        {
            return None;
        }
        Some(TraceParent {
            trace_id: trace_id.to_owned(),
            parent_id: parent_id.to_owned(),
            flags: u8::from_str_radix(flags, 16).ok()?,
        })
    }

    /// A new trace: random trace and parent ids, flags `01` (sampled).
    pub fn new_root() -> Self {
        TraceParent {
            trace_id: random_nonzero_hex_u128(),
            parent_id: random_nonzero_hex_u64(),
            flags: 0x01,
        }
    }

    /// The same trace and flags with a fresh random parent id.
    pub fn child(&self) -> Self {
        TraceParent {
            trace_id: self.trace_id.clone(),
            parent_id: random_nonzero_hex_u64(),
            flags: self.flags,
        }
    }

    /// The trace id: 32 lower-case hex digits.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }
    /// The parent (span) id: 16 lower-case hex digits.
    pub fn parent_id(&self) -> &str {
        &self.parent_id
    }
    /// The trace flags.
    pub fn flags(&self) -> u8 {
        self.flags
    }
    /// Whether the `sampled` flag is set.
    pub fn sampled(&self) -> bool {
        self.flags & 0x01 == 0x01
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

/// Wraps handlers in [`TraceContext`].
///
/// ```
/// use ovasabi_core::Event;
/// use ovasabi_middleware::{handler_fn, Handler, Layer, Message, Outgoing, TraceContextLayer, TraceParent};
///
/// let handler = TraceContextLayer::new().layer(handler_fn(|msg: Message| async move {
///     let id = format!("{}-paid", msg.event().id);
///     Ok(vec![Outgoing::new("payment.events", Event::new("payment.captured", "/pay").with_id(id))])
/// }));
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let placed = Event::new("order.placed", "/shop")
///     .with_extension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// let out = handler.handle(&Message::local("order.events", placed)).await.unwrap();
/// let tp = TraceParent::parse(out[0].event.traceparent().unwrap()).unwrap();
/// assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_ne!(tp.parent_id(), "00f067aa0ba902b7");
/// # });
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceContextLayer;

impl TraceContextLayer {
    /// The layer.
    pub fn new() -> Self {
        TraceContextLayer
    }
}

impl<H> Layer<H> for TraceContextLayer {
    type Handler = TraceContext<H>;

    fn layer(&self, inner: H) -> TraceContext<H> {
        TraceContext::new(inner)
    }
}

/// `inner`, its outgoing events carrying the incoming event's trace.
#[derive(Clone, Debug)]
pub struct TraceContext<H> {
    inner: H,
}

impl<H> TraceContext<H> {
    /// Wraps `inner`.
    pub fn new(inner: H) -> Self {
        TraceContext { inner }
    }
}

#[async_trait]
impl<H: Handler> Handler for TraceContext<H> {
    async fn handle(&self, msg: &Message) -> Result<Vec<Outgoing>, HandlerError> {
        let mut outgoing = self.inner.handle(msg).await?;
        if outgoing.is_empty() {
            return Ok(outgoing);
        }
        let incoming = msg.event();
        let (parent, tracestate) = match incoming.traceparent().and_then(TraceParent::parse) {
            Some(parent) => (parent, incoming.extension_str(EXT_TRACESTATE)),
            // No usable trace: start one for this call. The W3C rules drop `tracestate`
            // along with an invalid `traceparent`.
            None => (TraceParent::new_root(), None),
        };
        for out in &mut outgoing {
            stamp_trace(&parent, tracestate, &mut out.event);
        }
        Ok(outgoing)
    }
}

fn stamp_trace(parent: &TraceParent, tracestate: Option<&str>, event: &mut Event) {
    if event.extensions.contains_key(EXT_TRACEPARENT) {
        return;
    }
    event.extensions.insert(
        EXT_TRACEPARENT.to_owned(),
        ExtensionValue::String(crate::otel::caused_by(parent).to_string()),
    );
    if let Some(state) = tracestate {
        event
            .extensions
            .entry(EXT_TRACESTATE.to_owned())
            .or_insert_with(|| ExtensionValue::String(state.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler_fn;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

    fn emitting(events: Vec<Event>) -> impl Handler {
        handler_fn(move |_msg: Message| {
            let events = events.clone();
            async move {
                Ok(events
                    .into_iter()
                    .map(|e| Outgoing::new("out", e))
                    .collect())
            }
        })
    }

    fn two() -> Vec<Event> {
        vec![Event::new("a.done", "/s"), Event::new("b.done", "/s")]
    }

    #[test]
    fn parses_only_valid_traceparents() {
        let tp = TraceParent::parse(TP).unwrap();
        assert_eq!(tp.to_string(), TP);
        assert!(!tp.sampled());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad:?}");
        }
        // A later version is read as 00; anything after the flags is ignored.
        let future =
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-whatever")
                .unwrap();
        assert_eq!(future.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn roots_and_children_are_well_formed() {
        let root = TraceParent::new_root();
        let text = root.to_string();
        assert_eq!(TraceParent::parse(&text), Some(root.clone()));
        assert!(root.sampled());
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_eq!(child.flags(), root.flags());
        assert_ne!(child.parent_id(), root.parent_id());
    }

    #[tokio::test]
    async fn outgoing_events_continue_the_incoming_trace() {
        let h = TraceContextLayer::new().layer(emitting(two()));
        let incoming = Event::new("a.happened", "/s")
            .with_extension(EXT_TRACEPARENT, TP)
            .with_extension(EXT_TRACESTATE, "vendor=abc");
        let out = h.handle(&Message::local("in", incoming)).await.unwrap();
        let mut parents = Vec::new();
        for o in &out {
            let tp = TraceParent::parse(o.event.traceparent().unwrap()).unwrap();
            assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(tp.flags(), 0);
            assert_ne!(tp.parent_id(), "00f067aa0ba902b7");
            assert_eq!(o.event.extension_str(EXT_TRACESTATE), Some("vendor=abc"));
            parents.push(tp.parent_id().to_owned());
        }
        assert_ne!(
            parents[0], parents[1],
            "each outgoing event gets its own span id"
        );
    }

    #[tokio::test]
    async fn without_a_trace_a_new_one_starts() {
        let h = TraceContextLayer::new().layer(emitting(two()));
        // An invalid traceparent counts as none; its tracestate goes with it.
        let incoming = Event::new("a.happened", "/s")
            .with_extension(EXT_TRACEPARENT, "garbage")
            .with_extension(EXT_TRACESTATE, "vendor=abc");
        let out = h.handle(&Message::local("in", incoming)).await.unwrap();
        let a = TraceParent::parse(out[0].event.traceparent().unwrap()).unwrap();
        let b = TraceParent::parse(out[1].event.traceparent().unwrap()).unwrap();
        assert_eq!(a.trace_id(), b.trace_id(), "one call, one trace");
        assert!(a.sampled());
        assert_eq!(out[0].event.extension_str(EXT_TRACESTATE), None);
    }

    #[tokio::test]
    async fn a_traceparent_the_handler_set_is_kept() {
        let mine = "00-11111111111111111111111111111111-2222222222222222-01";
        let h = TraceContextLayer::new().layer(emitting(vec![
            Event::new("a.done", "/s").with_extension(EXT_TRACEPARENT, mine)
        ]));
        let incoming = Event::new("a.happened", "/s").with_extension(EXT_TRACEPARENT, TP);
        let out = h.handle(&Message::local("in", incoming)).await.unwrap();
        assert_eq!(out[0].event.traceparent(), Some(mine));
    }
}
