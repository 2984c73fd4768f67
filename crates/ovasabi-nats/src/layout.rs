//! How topics, partition keys and groups map onto JetStream streams, subjects and consumers.
//!
//! | OVASABI | JetStream |
//! |---|---|
//! | topic `user.events` | stream `OVASABI_user_events`, subjects `user.events.*` |
//! | event with partition key `k` | subject `user.events.p<partition_of(k)>` |
//! | event without a key | subject `user.events.u` |
//! | offset `n` | stream sequence `n + 1` |
//! | group `billing`, [`Ordering::PerKey`](ovasabi_core::Ordering::PerKey) | durable consumers `billing-p0` … `billing-p15` (one per partition, `MaxAckPending = 1`) and `billing-u` (unkeyed events) |
//! | group `billing`, [`Ordering::None`](ovasabi_core::Ordering::None) | durable consumer `billing-all` on `user.events.*` |
//!
//! Stream and consumer names may not hold `.`; a topic's stream name escapes `_` as `__` and
//! turns `.` into `_`, which no other topic maps to (a topic token never starts with `_`).
//! What a stream or consumer stands for is also written in its description
//! (`ovasabi topic=user.events partitions=16`, `ovasabi group=billing`), which is what the bus
//! reads back.

/// Prefix of every stream the bus creates.
pub const STREAM_PREFIX: &str = "OVASABI_";

/// Longest stream name used as is; longer names are shortened with a hash (stream names are
/// directory names on the server's disk).
const MAX_STREAM_NAME: usize = 200;

/// The stream holding `topic`: `OVASABI_` and the topic with `_` doubled and `.` as `_`
/// (`user.events` → `OVASABI_user_events`, `user_events` → `OVASABI_user__events`).
pub fn stream_name(topic: &str) -> String {
    let mut name = String::with_capacity(STREAM_PREFIX.len() + topic.len() + 4);
    name.push_str(STREAM_PREFIX);
    for c in topic.chars() {
        match c {
            '_' => name.push_str("__"),
            '.' => name.push('_'),
            c => name.push(c),
        }
    }
    if name.len() > MAX_STREAM_NAME {
        name.truncate(MAX_STREAM_NAME - 17);
        name.push_str(&format!("-{:016x}", hash(topic.as_bytes())));
    }
    name
}

/// The subjects of `topic`'s stream: `<topic>.*`.
pub fn stream_subjects(topic: &str) -> String {
    format!("{topic}.*")
}

/// The subject of partition `n` of `topic`: `<topic>.p<n>`.
pub fn partition_subject(topic: &str, partition: u32) -> String {
    format!("{topic}.p{partition}")
}

/// The subject of `topic`'s events without a partition key: `<topic>.u`.
pub fn unkeyed_subject(topic: &str) -> String {
    format!("{topic}.u")
}

/// The subject an event with partition key `key` (or none) is published to.
pub fn subject_for(topic: &str, key: Option<&str>, partitions: u32) -> String {
    match key {
        Some(key) => partition_subject(topic, partition_of(key, partitions)),
        None => unkeyed_subject(topic),
    }
}

/// The partition of a key: `fmix64(fnv1a64(key)) % partitions` (FNV-1a over the key's UTF-8
/// bytes, then MurmurHash3's 64-bit finaliser to spread similar keys), so any client can
/// compute it.
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    (hash(key.as_bytes()) % u64::from(partitions.max(1))) as u32
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The subject filter that finds the streams of topics matching a pattern: the pattern with
/// `.*` appended (a topic's subjects have one more token), or as it is when it ends in `>`.
pub fn pattern_filter(pattern: &str) -> String {
    if pattern.ends_with('>') {
        pattern.to_owned()
    } else {
        format!("{pattern}.*")
    }
}

/// Which messages of a topic one consumer of a group reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// One partition's keyed events, one at a time (`MaxAckPending = 1`).
    Partition(u32),
    /// Events without a partition key, concurrently.
    Unkeyed,
    /// Every event of the topic, concurrently ([`Ordering::None`](ovasabi_core::Ordering::None)).
    All,
}

impl Lane {
    /// The lanes of a group reading a topic of `partitions` partitions.
    pub fn for_ordering(ordering: ovasabi_core::Ordering, partitions: u32) -> Vec<Lane> {
        match ordering {
            ovasabi_core::Ordering::PerKey => (0..partitions)
                .map(Lane::Partition)
                .chain([Lane::Unkeyed])
                .collect(),
            ovasabi_core::Ordering::None => vec![Lane::All],
        }
    }

    /// The consumer name suffix: `p<n>`, `u` or `all`.
    pub fn suffix(self) -> String {
        match self {
            Lane::Partition(n) => format!("p{n}"),
            Lane::Unkeyed => "u".to_owned(),
            Lane::All => "all".to_owned(),
        }
    }

    /// Parses a suffix written by [`Lane::suffix`].
    pub fn parse_suffix(suffix: &str) -> Option<Lane> {
        match suffix {
            "u" => Some(Lane::Unkeyed),
            "all" => Some(Lane::All),
            _ => suffix
                .strip_prefix('p')
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse().ok())
                .map(Lane::Partition),
        }
    }

    /// The subject filter of this lane's consumer.
    pub fn filter(self, topic: &str) -> String {
        match self {
            Lane::Partition(n) => partition_subject(topic, n),
            Lane::Unkeyed => unkeyed_subject(topic),
            Lane::All => stream_subjects(topic),
        }
    }

    /// Whether the lane holds one event at a time (per-key order).
    pub fn is_ordered(self) -> bool {
        matches!(self, Lane::Partition(_))
    }
}

/// The stem of a group's consumer names: the group itself, or, when it holds `.` (not
/// allowed in consumer names), the group with `.` as `_` and a hash of the real name.
pub fn group_stem(group: &str) -> String {
    if group.contains('.') {
        format!(
            "{}-h{:08x}",
            group.replace('.', "_"),
            hash(group.as_bytes()) as u32
        )
    } else {
        group.to_owned()
    }
}

/// The name of a durable group's consumer for one lane: `<stem>-<lane>`.
pub fn consumer_name(group: &str, lane: Lane) -> String {
    format!("{}-{}", group_stem(group), lane.suffix())
}

/// The name of an ephemeral group's consumer for one lane: `<stem>-e<tag>-<lane>`.
pub fn ephemeral_consumer_name(group: &str, tag: &str, lane: Lane) -> String {
    format!("{}-e{tag}-{}", group_stem(group), lane.suffix())
}

/// The lane a consumer name ends with, if it is one of ours.
pub fn lane_of_consumer(name: &str) -> Option<Lane> {
    name.rsplit_once('-')
        .and_then(|(_, suffix)| Lane::parse_suffix(suffix))
}

/// The description of a topic's stream.
pub fn stream_description(topic: &str, partitions: u32) -> String {
    format!("ovasabi topic={topic} partitions={partitions}")
}

/// The description of a group's consumer.
pub fn consumer_description(group: &str) -> String {
    format!("ovasabi group={group}")
}

/// A `key=value` field of a description written by this module, if it is one.
pub fn description_field<'a>(description: Option<&'a str>, key: &str) -> Option<&'a str> {
    let mut words = description?.split_whitespace();
    if words.next() != Some("ovasabi") {
        return None;
    }
    words.find_map(|w| w.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

/// The topic and partition count a stream's description names, if it is one of ours.
pub fn parse_stream_description(description: Option<&str>) -> Option<(String, u32)> {
    let topic = description_field(description, "topic")?;
    let partitions = description_field(description, "partitions")?.parse().ok()?;
    Some((topic.to_owned(), partitions))
}

/// Percent-encodes what a `Nats-Msg-Id` header cannot hold plainly (space, `%`, control and
/// non-ASCII bytes), so joining two encoded parts with a space stays unambiguous.
pub fn header_safe(value: &str) -> std::borrow::Cow<'_, str> {
    if value.bytes().all(|b| b.is_ascii_graphic() && b != b'%') {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for b in value.bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The deduplication id of an event: its `source` and `id` (together unique, as CloudEvents
/// requires), so a re-publish within the stream's duplicate window is stored once.
pub fn message_id(source: &str, id: &str) -> String {
    let (source, id) = (header_safe(source), header_safe(id));
    let mut out = String::with_capacity(source.len() + 1 + id.len());
    out.push_str(&source);
    out.push(' ');
    out.push_str(&id);
    out
}

/// The deduplication id of a dead-letter copy: `<group>:<topic>:<offset>`, so it lands
/// exactly once per group even if the bus stops between the copy and the ack.
pub fn dead_letter_message_id(group: &str, topic: &str, offset: u64) -> String {
    format!("{group}:{topic}:{offset}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovasabi_core::Ordering;

    #[test]
    fn stream_names_are_injective_and_readable() {
        assert_eq!(stream_name("user.events"), "OVASABI_user_events");
        assert_eq!(stream_name("user_events"), "OVASABI_user__events");
        assert_eq!(stream_name("a_.b"), "OVASABI_a___b");
        assert_ne!(stream_name("a.b_c"), stream_name("a_b.c"));
        let long = format!("{}.x", "a".repeat(240));
        let name = stream_name(&long);
        assert!(name.len() <= MAX_STREAM_NAME, "{}", name.len());
        assert_ne!(name, stream_name(&format!("{}.y", "a".repeat(240))));
        assert!(!name.contains('.'));
    }

    #[test]
    fn subjects_and_partitions() {
        assert_eq!(stream_subjects("user.events"), "user.events.*");
        assert_eq!(subject_for("t", None, 16), "t.u");
        assert_eq!(subject_for("t", Some("held"), 16), "t.p5");
        assert_eq!(subject_for("t", Some("free"), 16), "t.p14");
        // Stable across releases: clients in other languages compute the same.
        assert_eq!(partition_of("user-1", 16), partition_of("user-1", 16));
        assert!((0..1000).all(|i| partition_of(&format!("k{i}"), 7) < 7));
        let used: std::collections::BTreeSet<u32> = (0..16)
            .map(|i| partition_of(&format!("key-{i}"), 16))
            .collect();
        assert!(used.len() >= 8, "{used:?}");
        assert_eq!(pattern_filter("a.*"), "a.*.*");
        assert_eq!(pattern_filter("a.>"), "a.>");
    }

    #[test]
    fn lanes_and_consumer_names() {
        assert_eq!(Lane::for_ordering(Ordering::PerKey, 2).len(), 3);
        assert_eq!(Lane::for_ordering(Ordering::None, 16), vec![Lane::All]);
        for lane in [
            Lane::Partition(0),
            Lane::Partition(15),
            Lane::Unkeyed,
            Lane::All,
        ] {
            assert_eq!(Lane::parse_suffix(&lane.suffix()), Some(lane));
            assert_eq!(
                lane_of_consumer(&consumer_name("billing", lane)),
                Some(lane)
            );
        }
        assert_eq!(Lane::parse_suffix("p"), None);
        assert_eq!(Lane::parse_suffix("px"), None);
        assert_eq!(consumer_name("billing", Lane::Partition(3)), "billing-p3");
        let dotted = consumer_name("billing.eu", Lane::All);
        assert!(!dotted.contains('.') && dotted.starts_with("billing_eu-h"));
        assert_ne!(group_stem("a.b"), group_stem("a_b"));
        assert_eq!(Lane::Partition(2).filter("t"), "t.p2");
        assert_eq!(Lane::All.filter("t"), "t.*");
    }

    #[test]
    fn descriptions_round_trip() {
        let d = stream_description("user.events", 16);
        assert_eq!(
            parse_stream_description(Some(&d)),
            Some(("user.events".to_owned(), 16))
        );
        assert_eq!(parse_stream_description(Some("someone else's")), None);
        assert_eq!(parse_stream_description(None), None);
        let d = consumer_description("billing.eu");
        assert_eq!(description_field(Some(&d), "group"), Some("billing.eu"));
    }

    #[test]
    fn message_ids() {
        assert_eq!(message_id("/s", "e-1"), "/s e-1");
        assert_eq!(message_id("/a b", "100%"), "/a%20b 100%25");
        assert_eq!(dead_letter_message_id("g", "t", 7), "g:t:7");
    }
}
