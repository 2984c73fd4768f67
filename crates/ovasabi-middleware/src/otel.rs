//! OpenTelemetry: joins [`tracing`] spans to the W3C trace that events carry in their
//! `traceparent` extension, so one trace follows an event across every hop.
//!
//! Everything here works on the current [`tracing`] subscriber: when it has a
//! [`tracing_opentelemetry`] layer, spans get the event's trace as their OpenTelemetry parent
//! and events caused inside a span point at that span; without one (OpenTelemetry not
//! configured) every function is a cheap no-op and events keep the plain string handling of
//! [`crate::trace_context`].
//!
//! How the hops link, when OpenTelemetry is on:
//! - an HTTP request's span is the parent of the events the request publishes (their
//!   `traceparent` is the request span's context: [`caused_by`]);
//! - the `publish` span of an event ([`publish_span`]) is the child of the event's
//!   `traceparent`, and the event goes on the bus carrying the `publish` span's context;
//! - a consumer's `delivery` span is the child of the delivered event's `traceparent`
//!   ([`set_parent`]), and the events its handler causes point at it ([`caused_by`]).

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use ovasabi_core::event::EXT_TRACEPARENT;
use ovasabi_core::Event;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::trace_context::TraceParent;

/// The OpenTelemetry context whose remote parent is `traceparent`.
pub fn context_of(traceparent: &TraceParent) -> Context {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_string())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// Makes `traceparent` (a W3C `traceparent` string) the OpenTelemetry parent of `span`. Call it
/// before the span is entered; an invalid or missing `traceparent`, a span that is disabled or
/// already started, or a subscriber without an OpenTelemetry layer leave `span` as it is.
/// Returns whether the parent was set.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) -> bool {
    let Some(parent) = traceparent.and_then(TraceParent::parse) else {
        return false;
    };
    span.set_parent(context_of(&parent)).is_ok()
}

/// The OpenTelemetry context of `span` as a `traceparent`; `None` when the subscriber has no
/// OpenTelemetry layer or the span is disabled. Starts the span: set its parent first.
pub fn traceparent_of(span: &tracing::Span) -> Option<TraceParent> {
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    if !sc.is_valid() {
        return None;
    }
    TraceParent::parse(&format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    ))
}

/// The `traceparent` of an event caused by `cause` inside the current span: the current span's
/// context when it is in `cause`'s trace (so the span is the event's parent), otherwise (no
/// OpenTelemetry, or the span is in another trace) a [child](TraceParent::child) of `cause`.
pub fn caused_by(cause: &TraceParent) -> TraceParent {
    current_in(cause).unwrap_or_else(|| cause.child())
}

/// The current span's context as a `traceparent` when it is in `cause`'s trace; `None` without
/// OpenTelemetry or when the current span is in another trace.
pub fn current_in(cause: &TraceParent) -> Option<TraceParent> {
    traceparent_of(&tracing::Span::current())
        .filter(|current| current.trace_id() == cause.trace_id())
}

/// Records the OpenTelemetry attributes of a delivery or publish span: `event.id`,
/// `event.type`, `messaging.destination` (the topic) and, when given,
/// `messaging.consumer.group` and `attempt`. Does nothing without an OpenTelemetry layer.
pub fn set_event_attributes(
    span: &tracing::Span,
    event: &Event,
    topic: &str,
    group: Option<&str>,
    attempt: Option<u32>,
) {
    span.set_attribute("event.id", event.id.clone());
    span.set_attribute("event.type", event.ty.clone());
    span.set_attribute("messaging.destination", topic.to_owned());
    if let Some(group) = group {
        span.set_attribute("messaging.consumer.group", group.to_owned());
    }
    if let Some(attempt) = attempt {
        span.set_attribute("attempt", i64::from(attempt));
    }
}

/// A `publish` span for putting `event` on `topic`, the child of the event's `traceparent`;
/// the event's `traceparent` becomes the span's context (so consumers' spans are children of
/// this one). Without an OpenTelemetry layer the event is left as it is. Keep the span alive
/// until the event is published.
pub fn publish_span(event: &mut Event, topic: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "publish",
        event_id = %event.id,
        event_type = %event.ty,
        topic = %topic,
    );
    if span.is_disabled() {
        return span;
    }
    let parent = event.traceparent().and_then(TraceParent::parse);
    if let Some(parent) = &parent {
        let _ = span.set_parent(context_of(parent));
    }
    set_event_attributes(&span, event, topic, None, None);
    if let (Some(parent), Some(own)) = (parent, traceparent_of(&span)) {
        if own.trace_id() == parent.trace_id() {
            event
                .extensions
                .insert(EXT_TRACEPARENT.to_owned(), own.to_string().into());
        }
    }
    span
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn without_opentelemetry_everything_is_a_no_op() {
        let span = tracing::info_span!("x");
        assert!(!set_parent(&span, Some(TP)));
        assert!(traceparent_of(&span).is_none());
        let cause = TraceParent::parse(TP).unwrap();
        let child = caused_by(&cause);
        assert_eq!(child.trace_id(), cause.trace_id());
        let mut event = Event::new("order.placed", "/shop").with_extension("traceparent", TP);
        drop(publish_span(&mut event, "order.events"));
        assert_eq!(event.traceparent(), Some(TP));
    }

    #[test]
    fn spans_join_the_event_trace() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let mut event = Event::new("order.placed", "/shop").with_extension("traceparent", TP);
            let publish = publish_span(&mut event, "order.events");
            let sent = TraceParent::parse(event.traceparent().unwrap()).unwrap();
            assert_eq!(sent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_ne!(sent.parent_id(), "00f067aa0ba902b7");
            drop(publish);

            let delivery = tracing::info_span!("delivery");
            assert!(set_parent(&delivery, event.traceparent()));
            let caused = delivery.in_scope(|| caused_by(&sent));
            assert_eq!(Some(&caused), traceparent_of(&delivery).as_ref());
            drop(delivery);
        });
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 2);
        let (publish, delivery) = (&spans[0], &spans[1]);
        assert_eq!(publish.name, "publish");
        assert_eq!(
            publish.parent_span_id.to_string(),
            "00f067aa0ba902b7",
            "the publish span is the child of the event's traceparent"
        );
        assert_eq!(delivery.parent_span_id, publish.span_context.span_id());
        assert_eq!(
            delivery.span_context.trace_id(),
            publish.span_context.trace_id()
        );
        assert!(publish
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "event.type" && kv.value.as_str() == "order.placed"));
    }
}
