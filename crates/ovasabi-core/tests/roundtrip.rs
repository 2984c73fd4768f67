//! Property-style round trips over many generated events (a seeded generator, so a
//! failure names its seed and replays): JSON → event → JSON, batch, and headers → event →
//! headers for every binding. Events mix unicode, every extension type, JSON, text and
//! binary data, and 1 MiB payloads.

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use ovasabi_core::format::binary::{from_headers, to_headers, Binding};
use ovasabi_core::format::json::{
    from_json_batch_slice, from_json_bytes, from_json_slice, to_json_batch_vec, to_json_value,
    to_json_vec,
};
use ovasabi_core::{Event, ExtensionValue};
use serde_json::Value;

/// xorshift64*: small, deterministic, good enough to vary test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Characters CloudEvents strings may hold, awkward ones favoured.
const CHARS: &[char] = &[
    'a',
    'Z',
    '0',
    '9',
    ' ',
    '"',
    '\\',
    '%',
    '\'',
    '/',
    ':',
    ';',
    ',',
    '=',
    '{',
    '}',
    '<',
    '>',
    '~',
    '+',
    '&',
    '#',
    '?',
    'é',
    'ß',
    '€',
    '日',
    '本',
    '😀',
    '🎉',
    '\u{a0}',
    '\u{2028}',
    '\u{fffd}',
    '\u{10fffd}',
    'Ω',
    '\u{300}',
];

fn text(rng: &mut Rng, max: u64) -> String {
    let len = 1 + rng.below(max);
    (0..len).map(|_| *rng.pick(CHARS)).collect()
}

fn name(rng: &mut Rng) -> String {
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let len = 1 + rng.below(12);
    (0..len).map(|_| char::from(*rng.pick(ALNUM))).collect()
}

fn json_value(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth > 3 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(2)),
        2 => Value::from(rng.next() as i64),
        3 => Value::from((rng.below(1_000_000) as f64) / 64.0),
        4 => Value::from(text(rng, 20)),
        5 => Value::Array(
            (0..rng.below(5))
                .map(|_| json_value(rng, depth + 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.below(5))
                .map(|_| (text(rng, 8), json_value(rng, depth + 1)))
                .collect(),
        ),
    }
}

fn bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next() as u8).collect()
}

fn time(rng: &mut Rng) -> DateTime<Utc> {
    let secs = rng.below(4_102_444_800) as i64; // 1970..2100
    let nanos = match rng.below(4) {
        0 => 0,
        1 => rng.below(1000) as u32 * 1_000_000,
        2 => rng.below(1_000_000) as u32 * 1000,
        _ => rng.below(1_000_000_000) as u32,
    };
    Utc.timestamp_opt(secs, nanos).unwrap()
}

const SOURCES: &[&str] = &[
    "/services/orders",
    "https://example.com/a/b?c=d#e",
    "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
    "mailto:someone@example.com",
    "user-service",
    "//host:8080/p",
    "http://[::1]/x%20y",
];

/// A valid event; `big` payloads are 1 MiB.
fn event(rng: &mut Rng, big: bool) -> Event {
    let mut e = Event::new(text(rng, 30), *rng.pick(SOURCES)).with_id(text(rng, 40));
    if rng.chance(2) {
        e.subject = Some(text(rng, 50));
    }
    if rng.chance(2) {
        e.time = Some(time(rng));
    }
    if rng.chance(4) {
        e.dataschema = Some(format!("https://example.com/schemas/{}.json", name(rng)));
    }
    for _ in 0..rng.below(6) {
        let value = match rng.below(3) {
            0 => ExtensionValue::String(text(rng, 30)),
            1 => ExtensionValue::Integer(i64::from(rng.next() as i32)),
            _ => ExtensionValue::Boolean(rng.chance(2)),
        };
        let n = name(rng);
        if ovasabi_core::validate::CORE_ATTRIBUTES.contains(&n.as_str()) || n == "data" {
            continue;
        }
        e.extensions.insert(n, value);
    }
    if rng.chance(3) {
        e = e
            .with_extension(
                "traceparent",
                format!(
                    "00-{:016x}{:016x}-{:016x}-01",
                    rng.next() | 1,
                    rng.next(),
                    rng.next() | 1
                ),
            )
            .with_extension("correlationid", text(rng, 20))
            .with_partition_key(text(rng, 10));
        e.set_sequence(rng.next());
    }
    let size = if big {
        1 << 20
    } else {
        rng.below(300) as usize
    };
    match rng.below(7) {
        0 => {}
        1 => e = e.with_json(&json_value(rng, 0)),
        2 => {
            // JSON without datacontenttype.
            e.data = Some(Bytes::from(json_value(rng, 0).to_string()));
        }
        3 => {
            let s: String = std::iter::repeat_with(|| text(rng, 64))
                .take(1 + size / 64)
                .collect::<String>();
            let mut end = size.min(s.len());
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            let ct = *rng.pick(&["text/plain", "text/csv; charset=utf-8", "application/xml"]);
            e = e.with_data(ct, s[..end].to_owned());
        }
        4 => {
            let ct = *rng.pick(&[
                "application/octet-stream",
                "image/png",
                "application/protobuf",
            ]);
            e = e.with_data(ct, bytes(rng, size));
        }
        5 => {
            // Bytes that are not JSON under a JSON type: written as data_base64.
            let mut b = bytes(rng, size.max(1));
            b[0] = b'{';
            e = e.with_data("application/json", b);
        }
        _ => {
            if big {
                let items: Vec<Value> = (0..size / 40).map(|_| Value::from(text(rng, 8))).collect();
                e = e.with_json(&Value::Array(items));
            } else {
                e.datacontenttype = Some("application/cloudevents+json".into());
            }
        }
    }
    e
}

fn events() -> impl Iterator<Item = (u64, Event)> {
    (1..=400u64).map(|seed| {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let big = seed % 97 == 0;
        (seed, event(&mut rng, big))
    })
}

#[test]
fn generated_events_are_valid() {
    for (seed, e) in events() {
        if let Err(err) = e.validate() {
            panic!("seed {seed}: generator made an invalid event: {err}\n{e:?}");
        }
    }
}

#[test]
fn json_round_trips() {
    for (seed, e) in events() {
        let wire = to_json_vec(&e);
        let back = from_json_slice(&wire)
            .unwrap_or_else(|err| panic!("seed {seed}: {err}\n{}", String::from_utf8_lossy(&wire)));
        assert_eq!(back, e, "seed {seed}");
        assert_eq!(to_json_vec(&back), wire, "seed {seed}: not byte-stable");
        assert_eq!(
            from_json_bytes(&Bytes::from(wire.clone())).unwrap(),
            e,
            "seed {seed}"
        );
        // What we write is JSON any parser reads, and `to_json_value` agrees with it.
        let parsed: Value = serde_json::from_slice(&wire).unwrap();
        assert_eq!(to_json_value(&e), parsed, "seed {seed}");
    }
}

#[test]
fn batch_round_trips() {
    let all: Vec<Event> = events().map(|(_, e)| e).take(100).collect();
    for chunk in [&all[..0], &all[..1], &all[..]] {
        let wire = to_json_batch_vec(chunk);
        assert_eq!(from_json_batch_slice(&wire).unwrap(), chunk);
    }
}

#[test]
fn headers_round_trip_for_every_binding() {
    for binding in [Binding::Http, Binding::Nats, Binding::Kafka] {
        for (seed, e) in events() {
            let headers = to_headers(&e, binding);
            if binding != Binding::Kafka {
                for (k, v) in &headers {
                    assert!(
                        v.bytes().all(|b| (0x20..=0x7E).contains(&b)),
                        "seed {seed} {binding:?}: header {k} not printable ASCII: {v:?}"
                    );
                }
            }
            let back = from_headers(
                headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                e.data.clone(),
                binding,
            )
            .unwrap_or_else(|err| panic!("seed {seed} {binding:?}: {err}\n{headers:?}"));
            // Headers carry every extension as a string.
            let mut want = e.clone();
            for v in want.extensions.values_mut() {
                *v = ExtensionValue::String(v.to_canonical_string());
            }
            assert_eq!(back, want, "seed {seed} {binding:?}");
            assert_eq!(
                to_headers(&back, binding),
                headers,
                "seed {seed} {binding:?}"
            );
        }
    }
}

#[test]
fn header_names_survive_any_case() {
    for (seed, e) in events().take(50) {
        for binding in [Binding::Http, Binding::Nats, Binding::Kafka] {
            let headers: Vec<(String, String)> = to_headers(&e, binding)
                .into_iter()
                .map(|(k, v)| (k.to_ascii_uppercase(), v))
                .collect();
            let back = from_headers(
                headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                e.data.clone(),
                binding,
            )
            .unwrap_or_else(|err| panic!("seed {seed} {binding:?}: {err}"));
            assert_eq!(back.id, e.id, "seed {seed}");
            assert_eq!(back.datacontenttype, e.datacontenttype, "seed {seed}");
        }
    }
}

#[test]
fn structured_and_binary_agree() {
    // The same event through either mode comes back the same (extensions as strings).
    for (seed, e) in events() {
        let structured = from_json_slice(&to_json_vec(&e)).unwrap();
        let headers = to_headers(&structured, Binding::Kafka);
        let binary = from_headers(
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            structured.data.clone(),
            Binding::Kafka,
        )
        .unwrap();
        assert_eq!(binary.data, e.data, "seed {seed}");
        assert_eq!(binary.time, e.time, "seed {seed}");
        assert_eq!(binary.subject, e.subject, "seed {seed}");
    }
}

#[test]
fn one_mib_payloads_in_every_form() {
    const MIB: usize = 1 << 20;
    let mut rng = Rng(0xC0FFEE);
    let text: String = std::iter::repeat("ünïcode text 😀 \"quoted\" \\ \n")
        .flat_map(str::chars)
        .take(MIB / 2)
        .collect();
    let json = Value::Array(
        (0..MIB / 32)
            .map(|i| Value::from(format!("item-{i:020}")))
            .collect(),
    );
    let events = [
        Event::new("t.big", "/s").with_id("json").with_json(&json),
        Event::new("t.big", "/s")
            .with_id("bin")
            .with_data("application/octet-stream", bytes(&mut rng, MIB)),
        Event::new("t.big", "/s")
            .with_id("text")
            .with_data("text/plain; charset=utf-8", text),
        Event::new("t.big", "/s")
            .with_id("notjson")
            .with_data("application/json", bytes(&mut rng, MIB)),
    ];
    for e in events {
        assert!(e.data_len() >= MIB / 2, "{}", e.id);
        let wire = to_json_vec(&e);
        assert_eq!(from_json_slice(&wire).unwrap(), e, "{}", e.id);
        assert_eq!(from_json_bytes(&Bytes::from(wire)).unwrap(), e, "{}", e.id);
        for binding in [Binding::Http, Binding::Nats, Binding::Kafka] {
            let headers = to_headers(&e, binding);
            let back = from_headers(
                headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                e.data.clone(),
                binding,
            )
            .unwrap();
            assert_eq!(back, e, "{} {binding:?}", e.id);
        }
    }
}
