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
//! | topic `user.events` of a bus with [`namespace`](crate::NatsConfig::namespace()) `prod-eu` | stored as topic `_ns.prod-eu.user.events`: stream `OVASABI___ns_prod-eu_user_events`, subjects `_ns.prod-eu.user.events.*` (`….p<n>`, `….u`), description `ovasabi topic=user.events partitions=16 namespace=prod-eu` |
//!
//! Stream and consumer names may not hold `.`; a topic's stream name escapes `_` as `__` and
//! turns `.` into `_`, which no other topic maps to (a topic token never starts with `_`).
//! What a stream or consumer stands for is also written in its description
//! (`ovasabi topic=user.events partitions=16`, `ovasabi group=billing`), which is what the bus
//! reads back.
//!
//! # Namespaces
//!
//! A bus with a namespace `ns` ([`validate_namespace`]: lower-case letters, digits and `-`)
//! stores a topic `T` as if it were the topic `_ns.<ns>.T` ([`qualified_topic`]): its stream,
//! subjects and consumers are those of that name. No plain topic maps there, since a topic
//! token never starts with `_`, and no other namespace does either, since a namespace holds
//! neither `.` nor `_` (so its stream name `OVASABI___ns_<ns>_…` ends the namespace at the
//! first `_`). The stream's description keeps the user-facing topic and adds the namespace
//! ([`stream_description_in`]); the bus only takes up streams whose description names its own
//! namespace, or none for a bus without one ([`parse_stream_description_in`]). Consumer names
//! live inside streams and are the same in every namespace. Without a namespace every name is
//! what it always was.

/// Prefix of every stream the bus creates.
pub const STREAM_PREFIX: &str = "OVASABI_";

/// Longest stream name used as is; longer names are shortened with a hash (stream names are
/// directory names on the server's disk).
const MAX_STREAM_NAME: usize = 200;

/// The first token of every namespaced topic's stored name: `_ns` (a topic token never
/// starts with `_`, so no plain topic begins with it).
pub const NAMESPACE_TOKEN: &str = "_ns";

/// Longest namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 64;

/// Checks a namespace: 1 to [`MAX_NAMESPACE_LEN`] characters of lower-case ASCII letters,
/// digits and `-`, starting with a letter or digit (`prod-eu`, `t-3f2a…`).
pub fn validate_namespace(namespace: &str) -> Result<(), String> {
    let rule = format!(
        "a namespace is 1 to {MAX_NAMESPACE_LEN} characters of lower-case ASCII letters, digits and `-`, starting with a letter or digit"
    );
    let problem = if namespace.is_empty() {
        Some("it is empty".to_owned())
    } else if namespace.len() > MAX_NAMESPACE_LEN {
        Some(format!("it is {} bytes long", namespace.len()))
    } else if namespace.starts_with('-') {
        Some("it starts with `-`".to_owned())
    } else {
        namespace
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
            .map(|bad| format!("character {bad:?} is not allowed"))
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(format!(
            "invalid namespace {namespace:?}: {problem}; {rule}"
        )),
    }
}

/// The name `topic` is stored under in `namespace`: `_ns.<namespace>.<topic>`, or `topic`
/// itself without a namespace. Streams, subjects and consumer filters of a namespaced topic
/// are those of this name (`stream_name(&qualified_topic(ns, t))`, …). Also works for
/// patterns (`*.events` → `_ns.<namespace>.*.events`).
pub fn qualified_topic<'a>(namespace: Option<&str>, topic: &'a str) -> std::borrow::Cow<'a, str> {
    match namespace {
        None => std::borrow::Cow::Borrowed(topic),
        Some(ns) => std::borrow::Cow::Owned(format!("{NAMESPACE_TOKEN}.{ns}.{topic}")),
    }
}

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

/// The description of a topic's stream in `namespace`: [`stream_description`], plus
/// ` namespace=<namespace>` when there is one (without, exactly [`stream_description`]).
pub fn stream_description_in(namespace: Option<&str>, topic: &str, partitions: u32) -> String {
    match namespace {
        None => stream_description(topic, partitions),
        Some(ns) => format!("{} namespace={ns}", stream_description(topic, partitions)),
    }
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

/// The topic and partition count a stream's description names, if it is one of ours,
/// whatever its namespace (see [`parse_stream_description_in`]).
pub fn parse_stream_description(description: Option<&str>) -> Option<(String, u32)> {
    let topic = description_field(description, "topic")?;
    let partitions = description_field(description, "partitions")?.parse().ok()?;
    Some((topic.to_owned(), partitions))
}

/// The namespace a stream's description names (`None` for a stream of no namespace, or not
/// one of ours).
pub fn stream_namespace(description: Option<&str>) -> Option<&str> {
    description_field(description, "namespace")
}

/// The topic and partition count a stream's description names, if it is one of ours and
/// belongs to `namespace` (`None`: to no namespace). What a bus with that namespace reads
/// back; a stream of another namespace, or of none for a namespaced bus, gives `None`.
pub fn parse_stream_description_in(
    description: Option<&str>,
    namespace: Option<&str>,
) -> Option<(String, u32)> {
    if stream_namespace(description) != namespace {
        return None;
    }
    parse_stream_description(description)
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
    fn namespaces_are_validated() {
        for ok in ["a", "prod-eu", "0", "t-0123456789abcdef", &"a".repeat(64)] {
            assert_eq!(validate_namespace(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "A",
            "a.b",
            "a_b",
            "a b",
            "é",
            "a*",
            ">",
            &"a".repeat(65),
        ] {
            let err = validate_namespace(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
            assert!(
                err.contains("lower-case ASCII letters, digits and `-`"),
                "{err}"
            );
        }
    }

    #[test]
    fn namespaced_names() {
        assert_eq!(qualified_topic(None, "user.events"), "user.events");
        let q = qualified_topic(Some("prod-eu"), "user.events");
        assert_eq!(q, "_ns.prod-eu.user.events");
        assert_eq!(stream_name(&q), "OVASABI___ns_prod-eu_user_events");
        assert_eq!(stream_subjects(&q), "_ns.prod-eu.user.events.*");
        assert_eq!(subject_for(&q, None, 16), "_ns.prod-eu.user.events.u");
        assert_eq!(
            subject_for(&q, Some("held"), 16),
            format!("_ns.prod-eu.user.events.p{}", partition_of("held", 16))
        );
        assert_eq!(Lane::All.filter(&q), "_ns.prod-eu.user.events.*");
        assert_eq!(
            pattern_filter(&qualified_topic(Some("a"), "*.events")),
            "_ns.a.*.events.*"
        );
        assert_eq!(pattern_filter(&qualified_topic(Some("a"), ">")), "_ns.a.>");
    }

    /// Whether a subject matches a NATS filter (`*` one token, `>` the rest).
    fn subject_matches(filter: &str, subject: &str) -> bool {
        let (mut f, mut s) = (filter.split('.'), subject.split('.'));
        loop {
            match (f.next(), s.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    #[test]
    fn namespaced_names_are_injective() {
        let topics = [
            "user.events",
            "user_events",
            "ns.user.events",
            "ns.a.user.events",
            "a.user.events",
            "a-b.user.events",
            "a.b.user.events",
            "a-b",
            "x",
            "x.dlq",
            "0.x",
        ];
        let namespaces = [
            None,
            Some("a"),
            Some("a-b"),
            Some("b"),
            Some("ns"),
            Some("0"),
        ];
        let mut streams = std::collections::HashMap::new();
        let mut subjects: Vec<(String, (Option<&str>, &str))> = Vec::new();
        for ns in namespaces {
            for topic in topics {
                let q = qualified_topic(ns, topic);
                let name = stream_name(&q);
                assert!(!name.contains('.'), "{name}");
                assert_eq!(name.starts_with("OVASABI___ns_"), ns.is_some(), "{name}");
                if let Some(before) = streams.insert(name.clone(), (ns, topic)) {
                    panic!("{before:?} and {:?} share stream {name}", (ns, topic));
                }
                subjects.push((stream_subjects(&q), (ns, topic)));
            }
        }
        // No stream's subjects overlap another's: every published subject has one home.
        for (filter, owner) in &subjects {
            for (other_filter, other) in &subjects {
                if owner == other {
                    continue;
                }
                let stem = other_filter.trim_end_matches(".*");
                for subject in [format!("{stem}.u"), format!("{stem}.p3")] {
                    assert!(
                        !subject_matches(filter, &subject),
                        "{owner:?}'s {filter} takes {other:?}'s {subject}"
                    );
                }
            }
        }
        // Long topics stay distinct (and short enough) too.
        let long = format!("{}.x", "a".repeat(240));
        let plain = stream_name(&long);
        let spaced = stream_name(&qualified_topic(Some(&"n".repeat(64)), &long));
        assert!(spaced.len() <= MAX_STREAM_NAME && spaced.starts_with("OVASABI___ns_"));
        assert_ne!(plain, spaced);
    }

    #[test]
    fn namespaced_descriptions() {
        let plain = stream_description_in(None, "t.x", 16);
        assert_eq!(plain, stream_description("t.x", 16));
        assert_eq!(plain, "ovasabi topic=t.x partitions=16");
        let spaced = stream_description_in(Some("a-1"), "t.x", 4);
        assert_eq!(spaced, "ovasabi topic=t.x partitions=4 namespace=a-1");
        assert_eq!(stream_namespace(Some(&spaced)), Some("a-1"));
        assert_eq!(stream_namespace(Some(&plain)), None);
        let parsed = Some(("t.x".to_owned(), 4));
        assert_eq!(
            parse_stream_description_in(Some(&spaced), Some("a-1")),
            parsed
        );
        assert_eq!(parse_stream_description_in(Some(&spaced), Some("a")), None);
        assert_eq!(parse_stream_description_in(Some(&spaced), None), None);
        assert_eq!(parse_stream_description_in(Some(&plain), Some("a-1")), None);
        assert_eq!(
            parse_stream_description_in(Some(&plain), None),
            Some(("t.x".to_owned(), 16))
        );
        assert_eq!(parse_stream_description(Some(&spaced)), parsed);
    }

    #[test]
    fn message_ids() {
        assert_eq!(message_id("/s", "e-1"), "/s e-1");
        assert_eq!(message_id("/a b", "100%"), "/a%20b 100%25");
        assert_eq!(dead_letter_message_id("g", "t", 7), "g:t:7");
    }
}
