//! The storage encoding of an event: compact, versioned, and exact for every attribute.
//!
//! Layout (all integers LEB128 varints, strings length-prefixed UTF-8):
//! `version(=1) id source type flags [subject] [time: secs(zigzag) nanos] [datacontenttype]
//! [dataschema] extension-count { name tag value }* [data]`, where `flags` says which
//! optional parts are present. JSON is not used on disk: decoding it would cost more than the
//! SQLite read itself on the consume path.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use ovasabi_core::{Event, ExtensionValue};

const VERSION: u8 = 1;
const HAS_SUBJECT: u8 = 1;
const HAS_TIME: u8 = 2;
const HAS_CONTENT_TYPE: u8 = 4;
const HAS_SCHEMA: u8 = 8;
const HAS_DATA: u8 = 16;

const TAG_STRING: u8 = 0;
const TAG_INTEGER: u8 = 1;
const TAG_BOOLEAN: u8 = 2;

/// A stored record that cannot be decoded: the database was changed outside this program.
#[derive(Debug, thiserror::Error)]
#[error("corrupt event record: {0}")]
pub(crate) struct CorruptRecord(&'static str);

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Encodes `event` for storage.
pub(crate) fn encode(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        64 + event.id.len() + event.source.len() + event.ty.len() + event.data_len(),
    );
    out.push(VERSION);
    put_str(&mut out, &event.id);
    put_str(&mut out, &event.source);
    put_str(&mut out, &event.ty);
    let mut flags = 0;
    if event.subject.is_some() {
        flags |= HAS_SUBJECT;
    }
    if event.time.is_some() {
        flags |= HAS_TIME;
    }
    if event.datacontenttype.is_some() {
        flags |= HAS_CONTENT_TYPE;
    }
    if event.dataschema.is_some() {
        flags |= HAS_SCHEMA;
    }
    if event.data.is_some() {
        flags |= HAS_DATA;
    }
    out.push(flags);
    if let Some(s) = &event.subject {
        put_str(&mut out, s);
    }
    if let Some(t) = &event.time {
        let secs = t.timestamp();
        put_varint(&mut out, ((secs << 1) ^ (secs >> 63)) as u64);
        put_varint(&mut out, u64::from(t.timestamp_subsec_nanos()));
    }
    if let Some(s) = &event.datacontenttype {
        put_str(&mut out, s);
    }
    if let Some(s) = &event.dataschema {
        put_str(&mut out, s);
    }
    put_varint(&mut out, event.extensions.len() as u64);
    for (name, value) in &event.extensions {
        put_str(&mut out, name);
        match value {
            ExtensionValue::String(s) => {
                out.push(TAG_STRING);
                put_str(&mut out, s);
            }
            ExtensionValue::Integer(i) => {
                out.push(TAG_INTEGER);
                put_varint(&mut out, ((i << 1) ^ (i >> 63)) as u64);
            }
            ExtensionValue::Boolean(b) => {
                out.push(TAG_BOOLEAN);
                out.push(u8::from(*b));
            }
        }
    }
    if let Some(d) = &event.data {
        put_varint(&mut out, d.len() as u64);
        out.extend_from_slice(d);
    }
    out
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, CorruptRecord> {
        let (&b, rest) = self.buf.split_first().ok_or(CorruptRecord("truncated"))?;
        self.buf = rest;
        Ok(b)
    }
    fn varint(&mut self) -> Result<u64, CorruptRecord> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CorruptRecord("varint too long"))
    }
    fn bytes(&mut self) -> Result<&'a [u8], CorruptRecord> {
        let len = usize::try_from(self.varint()?).map_err(|_| CorruptRecord("length"))?;
        if len > self.buf.len() {
            return Err(CorruptRecord("truncated"));
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head)
    }
    fn string(&mut self) -> Result<String, CorruptRecord> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| CorruptRecord("invalid UTF-8"))
    }
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Decodes a stored record.
pub(crate) fn decode(buf: &[u8]) -> Result<Event, CorruptRecord> {
    let mut r = Reader { buf };
    if r.byte()? != VERSION {
        return Err(CorruptRecord("unknown record version"));
    }
    let id = r.string()?;
    let source = r.string()?;
    let ty = r.string()?;
    let flags = r.byte()?;
    let subject = if flags & HAS_SUBJECT != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let time = if flags & HAS_TIME != 0 {
        let secs = unzigzag(r.varint()?);
        let nanos = u32::try_from(r.varint()?).map_err(|_| CorruptRecord("nanos"))?;
        Some(DateTime::<Utc>::from_timestamp(secs, nanos).ok_or(CorruptRecord("time"))?)
    } else {
        None
    };
    let datacontenttype = if flags & HAS_CONTENT_TYPE != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let dataschema = if flags & HAS_SCHEMA != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let count = r.varint()?;
    let mut extensions = BTreeMap::new();
    for _ in 0..count {
        let name = r.string()?;
        let value = match r.byte()? {
            TAG_STRING => ExtensionValue::String(r.string()?),
            TAG_INTEGER => ExtensionValue::Integer(unzigzag(r.varint()?)),
            TAG_BOOLEAN => ExtensionValue::Boolean(r.byte()? != 0),
            _ => return Err(CorruptRecord("unknown extension tag")),
        };
        extensions.insert(name, value);
    }
    let data = if flags & HAS_DATA != 0 {
        Some(Bytes::copy_from_slice(r.bytes()?))
    } else {
        None
    };
    if !r.buf.is_empty() {
        return Err(CorruptRecord("trailing bytes"));
    }
    Ok(Event {
        id,
        source,
        ty,
        subject,
        time,
        datacontenttype,
        dataschema,
        extensions,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_attribute() {
        let mut e = Event::new("order.placed", "/commerce")
            .with_json(&serde_json_value())
            .with_subject("order-1")
            .with_partition_key("order-1")
            .with_extension("count", 7i64)
            .with_extension("neg", -3i64)
            .with_extension("flag", true);
        e.dataschema = Some("https://schemas.ovasabi.dev/order.placed/1".into());
        e.time = Some(DateTime::from_timestamp(-5, 123_456_789).unwrap());
        assert_eq!(decode(&encode(&e)).unwrap(), e);
        let bare = Event::new("a.b", "s");
        assert_eq!(decode(&encode(&bare)).unwrap(), bare);
        let bin = Event::new("a.b", "s").with_data("application/octet-stream", vec![0u8, 255, 1]);
        assert_eq!(decode(&encode(&bin)).unwrap(), bin);
    }

    fn serde_json_value() -> serde_json::Value {
        serde_json::json!({"total": 12.5, "items": ["a", "é"]})
    }

    #[test]
    fn corrupt_records_are_errors() {
        let e = Event::new("a.b", "s").with_subject("x");
        let bytes = encode(&e);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err());
        }
        assert!(decode(&[9]).is_err());
    }
}
