//! The fields of a decision record (SPEC §6) a query looks at, borrowed from
//! the line: nothing else of the record is built, and strings without
//! escapes are not copied.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, Visitor};

/// A JSON string borrowed from the line when it has no escapes.
///
/// `Cow<str>` alone borrows only as a field marked `#[serde(borrow)]`, not
/// inside an `Option`, and `&str` fails on an escaped string: that would
/// make a valid record unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl Text<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text<'a>, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

#[derive(Debug, Deserialize)]
pub struct Record<'a> {
    #[serde(borrow)]
    pub time: Text<'a>,
    /// Absent from the record the node writes when a decision could not be
    /// serialised (policy `record_json`'s fallback).
    #[serde(borrow, default)]
    pub operation: Option<Text<'a>>,
    #[serde(borrow)]
    pub decision: Text<'a>,
    #[serde(borrow)]
    pub reason: Text<'a>,
    #[serde(borrow, default)]
    pub image: Option<Image<'a>>,
    #[serde(borrow, default)]
    pub pod: Option<Pod<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct Image<'a> {
    #[serde(borrow)]
    pub reference: Text<'a>,
    #[serde(borrow, default)]
    pub repository: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub digest: Option<Text<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct Pod<'a> {
    #[serde(borrow, default)]
    pub namespace: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub name: Option<Text<'a>>,
}

impl<'a> Record<'a> {
    pub fn parse(line: &'a [u8]) -> Option<Record<'a>> {
        serde_json::from_slice(line).ok()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.pod.as_ref()?.namespace.as_ref().map(Text::as_str)
    }

    pub fn pod_name(&self) -> Option<&str> {
        self.pod.as_ref()?.name.as_ref().map(Text::as_str)
    }

    pub fn operation(&self) -> Option<&str> {
        self.operation.as_ref().map(Text::as_str)
    }
}

/// The time at the very start of a line as the node writes it
/// (`{"time":"…"`), read without parsing the record.
pub fn leading_time(line: &[u8]) -> Option<&[u8]> {
    const PREFIX: &[u8] = b"{\"time\":\"";
    let rest = line.strip_prefix(PREFIX)?;
    let end = memchr::memchr(b'"', rest)?;
    Some(&rest[..end])
}

/// Whether a line at least looks whole: one object, not cut short. Lines
/// a pre-filter rules out are never parsed; this cheap check still counts
/// the commonest damage, a line the writer did not finish.
pub fn looks_whole(line: &[u8]) -> bool {
    line.first() == Some(&b'{') && line.last() == Some(&b'}')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_record_borrows_plain_strings_and_owns_escaped_ones() {
        let line = br#"{"time":"2026-01-02T03:04:05.123456Z","operation":"PullImage","decision":"deny","reason":"ERROR","image":{"reference":"a\/b:1","repository":"a/b"},"pod":{"namespace":"prod"}}"#;
        let record = Record::parse(line).unwrap();
        assert!(matches!(record.time.0, Cow::Borrowed(_)));
        let image = record.image.as_ref().unwrap();
        assert_eq!(image.reference.as_str(), "a/b:1");
        assert!(matches!(image.reference.0, Cow::Owned(_)));
        assert_eq!(record.namespace(), Some("prod"));
        assert_eq!(record.pod_name(), None);
    }

    #[test]
    fn the_fallback_record_without_operation_or_image_is_read() {
        let line = br#"{"time":"2026-01-02T03:04:05.000000Z","decision":"deny","reason":"ERROR","message":"cannot serialise decision: x"}"#;
        let record = Record::parse(line).unwrap();
        assert_eq!(record.operation(), None);
        assert!(record.image.is_none());
    }

    #[test]
    fn lines_that_are_not_records_are_refused() {
        assert!(Record::parse(b"{\"time\":\"2026-01-02T03:04").is_none());
        assert!(Record::parse(b"not json").is_none());
        assert!(Record::parse(b"{}").is_none());
        assert!(Record::parse(b"[1,2]").is_none());
    }

    #[test]
    fn the_leading_time_is_found_without_parsing() {
        assert_eq!(
            leading_time(b"{\"time\":\"2026-01-02T03:04:05.123456Z\",\"x\":1}"),
            Some(&b"2026-01-02T03:04:05.123456Z"[..])
        );
        assert_eq!(leading_time(b"{\"operation\":\"x\"}"), None);
        assert_eq!(leading_time(b"{\"time\":\"2026"), None);
        assert!(looks_whole(b"{}"));
        assert!(!looks_whole(b"{\"time\":\"2026"));
    }
}
