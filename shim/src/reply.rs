//! What a shim's `start` prints for containerd, in the three forms containerd
//! has used: a bare ttrpc address (task API v2, containerd 1.x), a JSON
//! object `{"version":3,"address":…,"protocol":"ttrpc"}` (2.0–2.2), and a
//! protobuf `BootstrapResult` (2.3+: version = 1, address = 2, protocol = 3).
//! The forwarder prints the runc shim's own reply with only the address
//! changed, so containerd speaks to it exactly as it would to runc's shim.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    Bare,
    Json(serde_json::Value),
    Protobuf(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartReply {
    pub address: String,
    /// The task API version the shim serves (2 or 3).
    pub version: i64,
    form: Form,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error("the runc shim printed no address")]
    Empty,
    #[error("cannot read the runc shim's reply {0:?}")]
    Unreadable(String),
}

const ADDRESS_FIELD: u64 = 2;
const VERSION_FIELD: u64 = 1;

impl StartReply {
    pub fn parse(output: &[u8]) -> Result<StartReply, ReplyError> {
        let text = String::from_utf8_lossy(output);
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(ReplyError::Empty);
        }
        if trimmed.starts_with('{') {
            let value: serde_json::Value = serde_json::from_str(trimmed)
                .map_err(|_| ReplyError::Unreadable(trimmed.to_string()))?;
            let address = value
                .get("address")
                .and_then(|a| a.as_str())
                .ok_or_else(|| ReplyError::Unreadable(trimmed.to_string()))?
                .to_string();
            let version = value.get("version").and_then(|v| v.as_i64()).unwrap_or(2);
            return Ok(StartReply {
                address,
                version,
                form: Form::Json(value),
            });
        }
        if trimmed.starts_with("unix://") || trimmed.starts_with('/') {
            return Ok(StartReply {
                address: trimmed.to_string(),
                version: 2,
                form: Form::Bare,
            });
        }
        let fields = ProtoFields::parse(output)
            .ok_or_else(|| ReplyError::Unreadable(trimmed.to_string()))?;
        let address = fields
            .bytes(ADDRESS_FIELD)
            .and_then(|a| String::from_utf8(a.to_vec()).ok())
            .ok_or_else(|| ReplyError::Unreadable(trimmed.to_string()))?;
        let version = fields.varint(VERSION_FIELD).map_or(2, |v| v as i64);
        Ok(StartReply {
            address,
            version,
            form: Form::Protobuf(output.to_vec()),
        })
    }

    /// The same reply, naming `address` instead.
    pub fn with_address(&self, address: &str) -> Vec<u8> {
        match &self.form {
            Form::Bare => address.as_bytes().to_vec(),
            Form::Json(value) => {
                let mut value = value.clone();
                if let Some(object) = value.as_object_mut() {
                    object.insert("address".into(), serde_json::Value::from(address));
                }
                value.to_string().into_bytes()
            }
            Form::Protobuf(bytes) => ProtoFields::parse(bytes)
                .map(|fields| fields.replace_bytes(ADDRESS_FIELD, address.as_bytes()))
                .unwrap_or_default(),
        }
    }
}

/// The top-level fields of a protobuf message, as spans of the original
/// bytes, so one field can be replaced and every other kept as it was.
struct ProtoFields<'a> {
    bytes: &'a [u8],
    /// (field number, wire type, whole field span, value span)
    fields: Vec<(u64, u8, std::ops::Range<usize>, std::ops::Range<usize>)>,
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn write_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

impl<'a> ProtoFields<'a> {
    fn parse(bytes: &'a [u8]) -> Option<ProtoFields<'a>> {
        let mut fields = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let start = at;
            let key = read_varint(bytes, &mut at)?;
            let (number, wire) = (key >> 3, (key & 7) as u8);
            if number == 0 {
                return None;
            }
            let value_start;
            match wire {
                0 => {
                    value_start = at;
                    read_varint(bytes, &mut at)?;
                }
                1 => {
                    value_start = at;
                    at = at.checked_add(8)?;
                }
                2 => {
                    let len = usize::try_from(read_varint(bytes, &mut at)?).ok()?;
                    value_start = at;
                    at = at.checked_add(len)?;
                }
                5 => {
                    value_start = at;
                    at = at.checked_add(4)?;
                }
                _ => return None,
            }
            if at > bytes.len() {
                return None;
            }
            fields.push((number, wire, start..at, value_start..at));
        }
        Some(ProtoFields { bytes, fields })
    }

    fn bytes(&self, number: u64) -> Option<&'a [u8]> {
        self.fields
            .iter()
            .rev()
            .find(|(n, wire, _, _)| *n == number && *wire == 2)
            .map(|(_, _, _, value)| &self.bytes[value.clone()])
    }

    fn varint(&self, number: u64) -> Option<u64> {
        self.fields
            .iter()
            .rev()
            .find(|(n, wire, _, _)| *n == number && *wire == 0)
            .and_then(|(_, _, _, value)| read_varint(self.bytes, &mut value.start.clone()))
    }

    fn replace_bytes(&self, number: u64, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() + value.len());
        for (n, wire, span, _) in &self.fields {
            if *n == number && *wire == 2 {
                write_varint(number << 3 | 2, &mut out);
                write_varint(value.len() as u64, &mut out);
                out.extend_from_slice(value);
            } else {
                out.extend_from_slice(&self.bytes[span.clone()]);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bare_addresses_are_task_api_v2() {
        let reply = StartReply::parse(b"unix:///run/containerd/s/abc\n").unwrap();
        assert_eq!(reply.address, "unix:///run/containerd/s/abc");
        assert_eq!(reply.version, 2);
        assert_eq!(reply.with_address("unix:///x"), b"unix:///x");
    }

    #[test]
    fn json_keeps_every_other_key() {
        let reply = StartReply::parse(
            br#"{"version":3,"address":"unix:///run/containerd/s/abc","protocol":"ttrpc"}"#,
        )
        .unwrap();
        assert_eq!(reply.version, 3);
        let out: serde_json::Value =
            serde_json::from_slice(&reply.with_address("unix:///x")).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"version": 3, "address": "unix:///x", "protocol": "ttrpc"})
        );
    }

    #[test]
    fn protobuf_keeps_every_other_field() {
        // version=3, address="unix:///s/abc", protocol="ttrpc", metadata {k: v}
        let mut msg = vec![0x08, 3, 0x12, 13];
        msg.extend_from_slice(b"unix:///s/abc");
        msg.extend_from_slice(&[0x1a, 5]);
        msg.extend_from_slice(b"ttrpc");
        msg.extend_from_slice(&[0x2a, 6, 0x0a, 1, b'k', 0x12, 1, b'v']);
        let reply = StartReply::parse(&msg).unwrap();
        assert_eq!(reply.address, "unix:///s/abc");
        assert_eq!(reply.version, 3);
        let out = reply.with_address("unix:///run/x");
        let again = StartReply::parse(&out).unwrap();
        assert_eq!(again.address, "unix:///run/x");
        assert_eq!(again.version, 3);
        assert!(out.ends_with(&[
            0x1a, 5, b't', b't', b'r', b'p', b'c', 0x2a, 6, 0x0a, 1, b'k', 0x12, 1, b'v'
        ]));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(StartReply::parse(b"").is_err());
        assert!(StartReply::parse(b"{not json").is_err());
        assert!(StartReply::parse(&[0x12, 50, b'x']).is_err());
    }
}
