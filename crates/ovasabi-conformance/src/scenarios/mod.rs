//! The scenarios. Each is `pub async fn <name>(backend: &dyn Backend) -> Result<(), Failure>`,
//! runs on a bus of its own with unique topic and group names, and bounds every wait.
//!
//! Counts follow watermill's universal Pub/Sub tests where they overlap.
//!
//! # `basic`: publishing and delivery
//! | scenario | proves |
//! |---|---|
//! | [`publish_subscribe`] | 100 JSON events, a binary one and a bare one arrive with every attribute intact: id, source, type, subject, time (filled in when absent), datacontenttype, dataschema, data byte for byte, and extensions (traceparent, tracestate, correlationid, causationid, partitionkey, sequence, custom ones); delivery info names the topic, group, offset and attempt 1 |
//! | [`concurrent_subscribe`] | 5,000 events from 50 concurrent publishers reach 50 competing subscribers of one group: every event acked, no duplicate that is not a redelivery (redeliveries are reported) |
//! | [`many_topics`] | 20 topics × 100 events at once: each topic's subscriber gets exactly its 100 |
//! | [`two_groups_each_get_all`] | two groups of competing subscribers each receive all 1,000 events |
//! | [`topic_isolation`] | a subscriber of topic A never sees topic B; `prefix.*` sees one level only, `prefix.>` sees all levels, including topics created after subscribing |
//! | [`large_events`] | 64 KiB and exactly-the-limit (1 MiB by default) payloads round trip; one byte more is refused with `EventTooLarge` (also inside a batch) and nothing is written |
//! | [`invalid_input`] | empty id, source or type give `InvalidEvent` naming the attribute; bad topic names give `InvalidTopic`; a batch with one bad event writes nothing; the next good event lands at offset 0 and is the only one delivered |
//! | [`batch_publish`] | `publish_batch` of 500 returns 500 offsets in order (0..500 on a new topic, the next batch continues), an empty batch is fine, and a single key's 500 events are delivered in order |
//! | [`topics_report_counts`] | `Bus::topics` reports retained events, first and next offsets, and a durable group's position and lag after partial acks; ephemeral groups are not listed; the list is sorted |
//!
//! # `ordering`: per-key order and flow control
//! | scenario | proves |
//! |---|---|
//! | [`order_per_key`] | 1,000 events over 16 keys, 4 subscribers: within a key, deliveries follow publish order and never overlap (the next waits for the ack); across keys, events are in flight at once |
//! | [`no_ack_holds_next`] | while a key's event is unacked (well inside the ack timeout) the key's next event reaches no subscriber of the group, another key's event still flows; after the ack the next one arrives |
//! | [`max_in_flight_bound`] | a subscription never holds more unacked deliveries than `max_in_flight`; each ack lets one more through |
//!
//! # `failure`: nacks, timeouts and dead letters
//! | scenario | proves |
//! |---|---|
//! | [`resend_on_nack`] | a nack with a delay is redelivered no sooner than the delay, as attempt 2; after its ack, nothing more |
//! | [`continue_after_errors`] | a handler that nacks its first 50 deliveries keeps its subscription going; all 100 events are acked in the end |
//! | [`dead_letter_after_max_deliveries`] | with `max_deliveries = 3` an always-failing event is delivered 3 times, then appears exactly once in `<topic>.dlq` with `deadletterreason`, `deadlettererror` (the last error), `deadletterattempts` (`"3"`), `deadlettergroup`, `deadlettertopic` and its own attributes; `Delivery::dead_letter` does the same at once; the group gets neither again and counts both done |
//! | [`ack_after_timeout`] | a delivery held past a short ack timeout is redelivered as attempt 2; the late ack of the first delivery still succeeds, and afterwards the event is never delivered again |
//!
//! # `lifecycle`: closing, cancelling, restarting, replaying
//! | scenario | proves |
//! |---|---|
//! | [`continue_after_subscribe_close`] | 5,000 events read by rounds of 5 subscribers that each ack some and close; fresh subscribers continue; every event is acked, none lost, none acked twice |
//! | [`concurrent_close`] | 50 subscriptions opened and closed (or dropped, or closed holding a delivery) at once while 500 events are published: no hang, no error; a new subscriber of the group then gets all 500 |
//! | [`subscribe_cancellation`] | dropping `next()` futures mid-wait, dropping a delivery unacked and dropping the subscription lose nothing: another subscriber of the group gets every event not acked |
//! | [`publisher_close`] | 10,000 events published by 100 tasks while `Bus::close` runs: publishes return Ok or `Closed`; after close, publish and subscribe return `Closed`; after a restart every event whose publish returned Ok is there |
//! | [`restart`] | publish 100, ack the even half and hold the odd half, close the bus with deliveries outstanding, reopen: exactly the odd half is delivered again, no acked event returns, a new group still sees all 100 |
//! | [`new_subscriber_replays_history`] | a new group with `Beginning` gets history; `Latest` gets only later events; an existing group resubscribing with `Beginning` keeps its position |
//! | [`replay_from_offset_and_time`] | `Offset(n)` and `Time(t)` start a new group at the right event and move an existing group back (replay) |

mod basic;
mod failure;
mod lifecycle;
mod ordering;

pub use basic::{
    batch_publish, concurrent_subscribe, invalid_input, large_events, many_topics,
    publish_subscribe, topic_isolation, topics_report_counts, two_groups_each_get_all,
};
pub use failure::{
    ack_after_timeout, continue_after_errors, dead_letter_after_max_deliveries, resend_on_nack,
};
pub use lifecycle::{
    concurrent_close, continue_after_subscribe_close, new_subscriber_replays_history,
    publisher_close, replay_from_offset_and_time, restart, subscribe_cancellation,
};
pub use ordering::{max_in_flight_bound, no_ack_holds_next, order_per_key};
