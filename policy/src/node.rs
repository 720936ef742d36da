//! A format-neutral document tree that remembers where every value came
//! from. Policy and attestor files (YAML or JSON, both read by the YAML 1.2
//! parser) become a tree of [`Node`]s; conversion into the model walks it
//! with a [`Path`] so every error names the field, line and column.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::error::{FieldError, Location};

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Number(String),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub kind: Kind,
    pub location: Option<Location>,
}

/// Input larger than this is refused before parsing: policy and attestor
/// files are small, and a hostile multi-gigabyte file must not exhaust memory.
pub(crate) const MAX_DOCUMENT_BYTES: usize = 16 << 20;

impl Node {
    /// Parses YAML or JSON text.
    pub(crate) fn parse(text: &str) -> Result<Node, FieldError> {
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(FieldError::new(
                "",
                None,
                format!(
                    "document is {} bytes, more than the limit of {MAX_DOCUMENT_BYTES}",
                    text.len()
                ),
            ));
        }
        let raw: Spanned<RawNode> = serde_saphyr::from_str(text).map_err(|e| {
            let location = e.location().map(|l| Location {
                line: l.line(),
                column: l.column(),
            });
            let message = e.to_string();
            // The library renders a source snippet after the first line; the
            // first line alone is the message.
            let first = message.lines().next().unwrap_or("syntax error");
            let first = first.trim_start_matches("error: ");
            // The location is already in front of the message.
            let first = match first
                .strip_prefix("line ")
                .and_then(|rest| rest.split_once(": "))
            {
                Some((position, message)) if position.contains(" column ") => message,
                _ => first,
            };
            FieldError::new("", location, format!("invalid YAML/JSON: {first}"))
        })?;
        Ok(Node::from_spanned(raw, text))
    }

    fn from_spanned(raw: Spanned<RawNode>, text: &str) -> Node {
        let loc = raw.referenced;
        let location = Some(Location {
            line: loc.line(),
            column: loc.column(),
        });
        let kind = match raw.value {
            RawNode::Null => Kind::Null,
            RawNode::Str(s) => Kind::Str(s),
            // Keep the source text of numbers and booleans: a field that wants
            // a string (an id like `0123`) must get exactly what was written.
            RawNode::Bool(b) => match source_text(text, &raw.referenced) {
                Some(s) if !matches!(s, "true" | "false") => Kind::Str(s.to_string()),
                _ => Kind::Bool(b),
            },
            RawNode::Number(n) => Kind::Number(
                source_text(text, &raw.referenced)
                    .map(str::to_string)
                    .unwrap_or(n),
            ),
            RawNode::Seq(items) => Kind::Seq(
                items
                    .into_iter()
                    .map(|i| Node::from_spanned(i, text))
                    .collect(),
            ),
            RawNode::Map(entries) => Kind::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.value, Node::from_spanned(v, text)))
                    .collect(),
            ),
        };
        Node { kind, location }
    }

    pub(crate) fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Number(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self.kind, Kind::Null)
    }
}

fn source_text<'t>(text: &'t str, loc: &serde_saphyr::Location) -> Option<&'t str> {
    let span = loc.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let end = start.checked_add(usize::try_from(span.byte_len()?).ok()?)?;
    text.get(start..end)
}

/// A field path under construction, rendered like `a.b[2].c`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Path(String);

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Path {
    pub(crate) fn root() -> Path {
        Path(String::new())
    }

    pub(crate) fn starting(prefix: impl Into<String>) -> Path {
        Path(prefix.into())
    }

    pub(crate) fn field(&self, name: &str) -> Path {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{name}", self.0))
        }
    }

    pub(crate) fn index(&self, i: usize) -> Path {
        Path(format!("{}[{i}]", self.0))
    }

    /// A map key that may contain dots, e.g. a cluster name.
    pub(crate) fn key(&self, key: &str) -> Path {
        let quoted = format!("[{key:?}]");
        Path(format!("{}{quoted}", self.0))
    }

    pub(crate) fn error(&self, node: Option<&Node>, message: impl Into<String>) -> FieldError {
        FieldError::new(self.0.clone(), node.and_then(|n| n.location), message)
    }
}

/// A mapping node seen through its field path.
pub(crate) struct Obj<'n> {
    pub node: &'n Node,
    pub entries: &'n [(String, Node)],
    pub path: Path,
}

impl<'n> Obj<'n> {
    pub(crate) fn new(node: &'n Node, path: Path) -> Result<Obj<'n>, FieldError> {
        match &node.kind {
            Kind::Map(entries) => Ok(Obj {
                node,
                entries,
                path,
            }),
            _ => Err(path.error(
                Some(node),
                format!("expected a mapping, found {}", node.type_name()),
            )),
        }
    }

    /// The field's node, treating an explicit `null` as absent.
    pub(crate) fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    }

    pub(crate) fn string(&self, name: &str) -> Result<Option<String>, FieldError> {
        match self.get(name) {
            None => Ok(None),
            Some(node) => scalar_string(node, &self.path.field(name)).map(Some),
        }
    }

    /// A string field that must be present and non-empty.
    pub(crate) fn required_string(&self, name: &str) -> Result<String, FieldError> {
        match self.string(name)? {
            Some(s) if !s.is_empty() => Ok(s),
            Some(_) => Err(self
                .path
                .field(name)
                .error(self.get(name), "must not be empty")),
            None => Err(self.missing(name)),
        }
    }

    pub(crate) fn object(&self, name: &str) -> Result<Option<Obj<'n>>, FieldError> {
        self.get(name)
            .map(|n| Obj::new(n, self.path.field(name)))
            .transpose()
    }

    pub(crate) fn list(&self, name: &str) -> Result<Vec<(Path, &'n Node)>, FieldError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(node) => list_items(node, &self.path.field(name)),
        }
    }

    pub(crate) fn missing(&self, name: &str) -> FieldError {
        self.path
            .field(name)
            .error(Some(self.node), "missing required field")
    }
}

pub(crate) fn list_items<'n>(
    node: &'n Node,
    path: &Path,
) -> Result<Vec<(Path, &'n Node)>, FieldError> {
    match &node.kind {
        Kind::Seq(items) => Ok(items
            .iter()
            .enumerate()
            .map(|(i, n)| (path.index(i), n))
            .collect()),
        _ => Err(path.error(
            Some(node),
            format!("expected a list, found {}", node.type_name()),
        )),
    }
}

pub(crate) fn scalar_string(node: &Node, path: &Path) -> Result<String, FieldError> {
    match &node.kind {
        Kind::Str(s) | Kind::Number(s) => Ok(s.clone()),
        Kind::Bool(b) => Ok(b.to_string()),
        _ => Err(path.error(
            Some(node),
            format!("expected a string, found {}", node.type_name()),
        )),
    }
}

/// Only what the YAML parser needs to hand over; locations come from
/// [`Spanned`].
enum RawNode {
    Null,
    Bool(bool),
    Number(String),
    Str(String),
    Seq(Vec<Spanned<RawNode>>),
    Map(Vec<(Spanned<String>, Spanned<RawNode>)>),
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawNode;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<RawNode, E> {
        Ok(RawNode::Null)
    }
    fn visit_none<E>(self) -> Result<RawNode, E> {
        Ok(RawNode::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<RawNode, E> {
        Ok(RawNode::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<RawNode, E> {
        Ok(RawNode::Number(v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<RawNode, E> {
        Ok(RawNode::Number(v.to_string()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<RawNode, E> {
        Ok(RawNode::Number(v.to_string()))
    }
    fn visit_u128<E>(self, v: u128) -> Result<RawNode, E> {
        Ok(RawNode::Number(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<RawNode, E> {
        Ok(RawNode::Number(v.to_string()))
    }
    fn visit_str<E>(self, v: &str) -> Result<RawNode, E> {
        Ok(RawNode::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<RawNode, E> {
        Ok(RawNode::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<RawNode, E> {
        Ok(RawNode::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawNode, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(RawNode::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawNode, A::Error> {
        let mut entries: Vec<(Spanned<String>, Spanned<RawNode>)> = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            // The parser itself refuses duplicate keys.
            let value = map.next_value()?;
            entries.push((key, value));
        }
        Ok(RawNode::Map(entries))
    }
}

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawNode, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

/// Attestation files are read by serde_json straight into nodes (without
/// locations): no intermediate `serde_json::Value`, one allocation per value.
impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(PlainVisitor)
    }
}

struct PlainVisitor;

impl PlainVisitor {
    fn node<E>(kind: Kind) -> Result<Node, E> {
        Ok(Node {
            kind,
            location: None,
        })
    }
}

impl<'de> Visitor<'de> for PlainVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Self::node(Kind::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Self::node(Kind::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Self::node(Kind::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Self::node(Kind::Number(v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Self::node(Kind::Number(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Self::node(Kind::Number(v.to_string()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Self::node(Kind::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Self::node(Kind::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Self::node(Kind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries: Vec<(String, Node)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value: Node = map.next_value()?;
            // Same rule as for YAML; maps in occurrences are a handful of keys.
            if entries.len() < 64 && entries.iter().any(|(k, _)| *k == key) {
                return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
            }
            entries.push((key, value));
        }
        Self::node(Kind::Map(entries))
    }
}
