//! Interoperability with the official CloudEvents Rust SDK (`cloudevents-sdk`): what we
//! write, the SDK reads as the same event, and what the SDK writes, we read as the same
//! event — in the JSON format and, through the SDK's binary-mode message traits, in the
//! HTTP binary mode.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{TimeZone, Timelike, Utc};
use cloudevents::event::{ExtensionValue as SdkValue, SpecVersion};
use cloudevents::message::{
    BinaryDeserializer, BinarySerializer, MessageAttributeValue, Result as SdkResult,
};
use cloudevents::{AttributesReader, AttributesWriter, Data, EventBuilder, EventBuilderV10};
use ovasabi_core::format::binary::{from_headers, to_headers, Binding};
use ovasabi_core::format::json::{from_json_slice, to_json_value, to_json_vec};
use ovasabi_core::{Event, ExtensionValue};
use serde_json::{json, Value};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Events covering every attribute, every extension type and every data representation.
fn our_events() -> Vec<(&'static str, Event)> {
    let time = Utc
        .with_ymd_and_hms(2018, 4, 5, 17, 31, 0)
        .unwrap()
        .with_nanosecond(123_456_789)
        .unwrap();
    let all_bytes: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let mib_json = json!({"items": vec!["ünïcode 😀 payload"; 1 << 15]});
    let mib_binary: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    vec![
        (
            "minimal",
            Event::new("order.placed", "/services/orders").with_id("e-1"),
        ),
        (
            "everything",
            Event::new("com.example.someevent", "https://example.com/mycontext")
                .with_id("A234-1234-1234")
                .with_subject("Euro € 😀 \"quoted\" 100%")
                .with_time(time)
                .with_dataschema("https://example.com/schemas/order.json")
                .with_extension("comexampleextension1", "value")
                .with_extension("comexampleothervalue", 5i64)
                .with_extension("negative", -2_147_483_648i64)
                .with_extension("flag", true)
                .with_extension("off", false)
                .with_extension("traceparent", TRACEPARENT)
                .with_extension("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
                .with_extension("correlationid", "txn-abc-123")
                .with_extension("causationid", "order-123")
                .with_partition_key("order-123")
                .with_json(
                    &json!({"appinfoA": "abc", "appinfoB": 123, "appinfoC": true, "n": null}),
                ),
        ),
        (
            "json without datacontenttype",
            Event {
                data: Some(Bytes::from_static(b"[1,\"two\",{\"three\":3.5}]")),
                ..Event::new("t.happened", "/s").with_id("2")
            },
        ),
        (
            "json string",
            Event::new("t.happened", "/s")
                .with_id("3")
                .with_data("application/json", "\"I'm just a string\""),
        ),
        (
            "xml text",
            Event::new("t.happened", "/s")
                .with_id("4")
                .with_data("application/xml", "<much wow=\"xml\"/>"),
        ),
        (
            "unicode text",
            Event::new("t.happened", "/s")
                .with_id("5")
                .with_data("text/plain; charset=utf-8", "héllo\n\twörld 😀 \\ \""),
        ),
        (
            "binary",
            Event::new(
                "t.happened",
                "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
            )
            .with_id("6")
            .with_data("application/vnd.apache.thrift.binary", all_bytes),
        ),
        (
            "content type without data",
            Event {
                datacontenttype: Some("application/json".into()),
                ..Event::new("t.happened", "/s").with_id("7")
            },
        ),
        (
            "1 MiB json",
            Event::new("t.happened", "/s")
                .with_id("8")
                .with_json(&mib_json),
        ),
        (
            "1 MiB binary",
            Event::new("t.happened", "/s")
                .with_id("9")
                .with_data("application/octet-stream", mib_binary),
        ),
    ]
}

fn ours_from_sdk_value(v: &SdkValue) -> ExtensionValue {
    match v {
        SdkValue::String(s) => ExtensionValue::String(s.clone()),
        SdkValue::Integer(i) => ExtensionValue::Integer(*i),
        SdkValue::Boolean(b) => ExtensionValue::Boolean(*b),
    }
}

/// Asserts the SDK's event and ours carry the same attributes and data. With
/// `typed_extensions` false, extensions are compared as canonical strings (binary mode).
fn assert_same(what: &str, ours: &Event, sdk: &cloudevents::Event, typed_extensions: bool) {
    assert_eq!(sdk.specversion(), SpecVersion::V10, "{what}");
    assert_eq!(sdk.id(), ours.id, "{what}: id");
    assert_eq!(sdk.source(), &ours.source, "{what}: source");
    assert_eq!(sdk.ty(), ours.ty, "{what}: type");
    assert_eq!(sdk.subject(), ours.subject.as_deref(), "{what}: subject");
    assert_eq!(sdk.time(), ours.time.as_ref(), "{what}: time");
    assert_eq!(
        sdk.datacontenttype(),
        ours.datacontenttype.as_deref(),
        "{what}: datacontenttype"
    );
    assert_eq!(
        sdk.dataschema().map(|u| u.to_string()),
        ours.dataschema,
        "{what}: dataschema"
    );
    let sdk_extensions: BTreeMap<String, ExtensionValue> = sdk
        .iter_extensions()
        .map(|(k, v)| {
            let v = ours_from_sdk_value(v);
            let v = if typed_extensions {
                v
            } else {
                ExtensionValue::String(v.to_canonical_string())
            };
            (k.to_owned(), v)
        })
        .collect();
    let our_extensions: BTreeMap<String, ExtensionValue> = ours
        .extensions
        .iter()
        .map(|(k, v)| {
            let v = if typed_extensions {
                v.clone()
            } else {
                ExtensionValue::String(v.to_canonical_string())
            };
            (k.clone(), v)
        })
        .collect();
    assert_eq!(sdk_extensions, our_extensions, "{what}: extensions");
    match (sdk.data(), &ours.data) {
        (None, None) => {}
        (Some(Data::Json(v)), Some(bytes)) => {
            let ours: Value = serde_json::from_slice(bytes).expect("our data is JSON");
            assert_eq!(v, &ours, "{what}: JSON data");
        }
        (Some(Data::String(s)), Some(bytes)) => {
            assert_eq!(s.as_bytes(), &bytes[..], "{what}: string data")
        }
        (Some(Data::Binary(b)), Some(bytes)) => {
            assert_eq!(&b[..], &bytes[..], "{what}: binary data")
        }
        (sdk, ours) => panic!("{what}: data differs: SDK {sdk:?}, ours {ours:?}"),
    }
}

#[test]
fn the_sdk_reads_our_json() {
    for (what, event) in our_events() {
        event.validate().unwrap();
        let wire = to_json_vec(&event);
        let sdk: cloudevents::Event = serde_json::from_slice(&wire)
            .unwrap_or_else(|e| panic!("{what}: the SDK refused our JSON: {e}"));
        assert_same(what, &event, &sdk, true);
    }
}

#[test]
fn the_sdk_writes_what_we_write() {
    for (what, event) in our_events() {
        let sdk: cloudevents::Event = serde_json::from_slice(&to_json_vec(&event)).unwrap();
        let mut theirs = serde_json::to_value(&sdk).unwrap();
        let mut ours = to_json_value(&event);
        // Both are RFC 3339; compare the instants, not the spelling.
        for v in [&mut theirs, &mut ours] {
            if let Some(t) = v.get_mut("time") {
                let parsed = chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap()).unwrap();
                *t = json!(parsed.timestamp_nanos_opt());
            }
        }
        assert_eq!(theirs, ours, "{what}");
    }
}

/// SDK events of every kind the SDK can express.
fn sdk_events() -> Vec<(&'static str, cloudevents::Event)> {
    let time = Utc
        .with_ymd_and_hms(2026, 11, 27, 10, 0, 0)
        .unwrap()
        .with_nanosecond(500_000_000)
        .unwrap();
    let base = || {
        EventBuilderV10::new()
            .id("sdk-1")
            .source("https://example.com/sdk")
            .ty("com.example.sdk.happened")
    };
    let mut no_content_type = base().build().unwrap();
    no_content_type.set_data_unchecked(json!({"implicit": "application/json"}));
    let mut with_schema = base()
        .data_with_schema(
            "application/json",
            "https://example.com/schemas/x.json",
            json!([1, 2, 3]),
        )
        .build()
        .unwrap();
    with_schema.set_subject(Some("sübject"));
    vec![
        ("sdk minimal", base().build().unwrap()),
        (
            "sdk json + extensions",
            base()
                .subject("order-1")
                .time(time)
                .extension("strext", "value")
                .extension("intext", 42i64)
                .extension("negext", -7i64)
                .extension("boolext", true)
                .extension("traceparent", TRACEPARENT)
                .data(
                    "application/json",
                    json!({"a": [1, "b", null, 2.5], "unicode": "日本 😀"}),
                )
                .build()
                .unwrap(),
        ),
        ("sdk implicit json", no_content_type),
        ("sdk dataschema", with_schema),
        (
            "sdk string data",
            base()
                .data("text/plain", "plain text with \"quotes\" and ünïcode")
                .build()
                .unwrap(),
        ),
        (
            "sdk binary data",
            base()
                .data("application/octet-stream", (0..=255u8).collect::<Vec<u8>>())
                .build()
                .unwrap(),
        ),
        (
            "sdk binary data under a JSON type",
            base()
                .data("application/json", b"{\"was\":\"binary\"}".to_vec())
                .build()
                .unwrap(),
        ),
        (
            "sdk 1 MiB binary",
            base()
                .data("application/octet-stream", vec![0xA5u8; 1 << 20])
                .build()
                .unwrap(),
        ),
    ]
}

#[test]
fn we_read_the_sdks_json() {
    for (what, sdk) in sdk_events() {
        let wire = serde_json::to_vec(&sdk).unwrap();
        let ours = from_json_slice(&wire).unwrap_or_else(|e| {
            panic!(
                "{what}: we refused the SDK's JSON: {e}\n{}",
                String::from_utf8_lossy(&wire)
            )
        });
        assert_same(what, &ours, &sdk, true);
        // And what we write back, the SDK reads as the same event.
        let again: cloudevents::Event = serde_json::from_slice(&to_json_vec(&ours)).unwrap();
        assert_same(what, &ours, &again, true);
    }
}

#[test]
fn we_read_the_sdks_json_with_nulls_and_data_base64() {
    // Hand-written the way other SDKs write it: nulls for unset attributes, Base64 data.
    let text = r#"{
        "specversion": "1.0", "id": "x", "source": "/s", "type": "t",
        "subject": null, "time": null, "unsetextension": null,
        "comexampleothervalue": 5, "flag": false,
        "datacontenttype": "application/octet-stream", "data_base64": "3q2+7w=="
    }"#;
    let ours = from_json_slice(text.as_bytes()).unwrap();
    let sdk: cloudevents::Event = serde_json::from_str(text).unwrap();
    assert_same("nulls", &ours, &sdk, true);
    assert_eq!(ours.data.as_deref(), Some(&[0xDE, 0xAD, 0xBE, 0xEF][..]));
}

// --- Binary mode, through the SDK's message traits ------------------------------------

/// Collects what the SDK puts into a binary-mode message: attributes as canonical strings.
#[derive(Default)]
struct Collected {
    attributes: Vec<(String, String)>,
    data: Option<Vec<u8>>,
}

impl BinarySerializer<Collected> for Collected {
    fn set_spec_version(mut self, v: SpecVersion) -> SdkResult<Self> {
        self.attributes.push(("specversion".into(), v.to_string()));
        Ok(self)
    }
    fn set_attribute(mut self, name: &str, value: MessageAttributeValue) -> SdkResult<Self> {
        self.attributes.push((name.into(), value.to_string()));
        Ok(self)
    }
    fn set_extension(mut self, name: &str, value: MessageAttributeValue) -> SdkResult<Self> {
        self.attributes.push((name.into(), value.to_string()));
        Ok(self)
    }
    fn end_with_data(mut self, bytes: Vec<u8>) -> SdkResult<Collected> {
        self.data = Some(bytes);
        Ok(self)
    }
    fn end(self) -> SdkResult<Collected> {
        Ok(self)
    }
}

/// A binary-mode message of ours, fed to the SDK's event builder.
struct OurMessage {
    attributes: Vec<(String, String)>,
    data: Option<Bytes>,
}

impl BinaryDeserializer for OurMessage {
    fn deserialize_binary<R: Sized, V: BinarySerializer<R>>(self, serializer: V) -> SdkResult<R> {
        let mut s = serializer.set_spec_version(SpecVersion::V10)?;
        for (name, value) in self.attributes {
            match name.as_str() {
                "specversion" => assert_eq!(value, "1.0"),
                "id" | "source" | "type" | "subject" | "time" | "dataschema"
                | "datacontenttype" => {
                    s = s.set_attribute(&name, MessageAttributeValue::String(value))?
                }
                _ => s = s.set_extension(&name, MessageAttributeValue::String(value))?,
            }
        }
        match self.data {
            Some(d) => s.end_with_data(d.to_vec()),
            None => s.end(),
        }
    }
}

/// Percent-encoding exactly as the HTTP binding's text describes it, written apart from
/// the crate's own.
fn spec_percent_encode(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c == ' ' || c == '"' || c == '%' || !('\u{21}'..='\u{7e}').contains(&c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn spec_percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn the_sdk_reads_our_http_binary_mode() {
    for (what, event) in our_events() {
        let headers = to_headers(&event, Binding::Http);
        let attributes = headers
            .iter()
            .map(|(k, v)| {
                let name = if k == "content-type" {
                    "datacontenttype".to_owned()
                } else {
                    k.strip_prefix("ce-").expect("ce- prefix").to_owned()
                };
                let value = if k == "content-type" {
                    v.clone()
                } else {
                    spec_percent_decode(v)
                };
                (name, value)
            })
            .collect();
        let message = OurMessage {
            attributes,
            data: event.data.clone(),
        };
        let sdk = BinaryDeserializer::into_event(message)
            .unwrap_or_else(|e| panic!("{what}: the SDK refused our headers: {e}"));
        // The SDK's binary builder keeps data as bytes, which `assert_same` compares.
        assert_same(what, &event, &sdk, false);
    }
}

#[test]
fn we_read_the_sdks_http_binary_mode() {
    for (what, sdk) in sdk_events() {
        let collected =
            BinaryDeserializer::deserialize_binary(sdk.clone(), Collected::default()).unwrap();
        let headers: Vec<(String, String)> = collected
            .attributes
            .iter()
            .map(|(name, value)| {
                if name == "datacontenttype" {
                    ("Content-Type".to_owned(), value.clone())
                } else {
                    (format!("Ce-{name}"), spec_percent_encode(value))
                }
            })
            .collect();
        let ours = from_headers(
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            collected.data.map(Bytes::from),
            Binding::Http,
        )
        .unwrap_or_else(|e| panic!("{what}: we refused the SDK's headers: {e}"));
        assert_same(what, &ours, &sdk, false);
    }
}
