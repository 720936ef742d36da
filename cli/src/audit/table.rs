//! `attestgate audit --output table`: one aligned row per decision.
//!
//! Column widths are those of the first rows; the rest are streamed in
//! those widths (a wider cell pushes its row's later cells right), so a
//! query over a large log holds no more than those rows in memory.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};

use super::record::Record;

const HEADER: [&str; COLUMNS] = [
    "TIME",
    "OPERATION",
    "DECISION",
    "REASON",
    "NAMESPACE/POD",
    "IMAGE",
];
const COLUMNS: usize = 6;
/// Rows read before the widths are settled.
const SIZING_ROWS: usize = 10_000;
/// Hex digits of a digest the table shows: enough to tell images apart.
const SHORT_DIGEST: usize = 12;

type Row = [String; COLUMNS];

pub struct Table {
    sizing: Vec<Row>,
    widths: Option<[usize; COLUMNS]>,
}

impl Table {
    pub fn new() -> Table {
        Table {
            sizing: Vec::new(),
            widths: None,
        }
    }

    pub fn add(&mut self, record: &Record<'_>, out: &mut impl Write) -> io::Result<()> {
        let row = row(record);
        if let Some(widths) = &self.widths {
            return write_row(out, widths, &row);
        }
        self.sizing.push(row);
        if self.sizing.len() == SIZING_ROWS {
            self.settle(out)?;
        }
        Ok(())
    }

    /// Prints what is still held; nothing at all when nothing matched.
    pub fn finish(mut self, out: &mut impl Write) -> io::Result<()> {
        if self.widths.is_none() && !self.sizing.is_empty() {
            self.settle(out)?;
        }
        Ok(())
    }

    fn settle(&mut self, out: &mut impl Write) -> io::Result<()> {
        let mut widths = HEADER.map(|h| h.chars().count());
        for row in &self.sizing {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        write_row(out, &widths, &HEADER.map(String::from))?;
        for row in self.sizing.drain(..) {
            write_row(out, &widths, &row)?;
        }
        self.widths = Some(widths);
        Ok(())
    }
}

fn write_row(out: &mut impl Write, widths: &[usize; COLUMNS], row: &Row) -> io::Result<()> {
    let last = COLUMNS - 1;
    for (i, cell) in row.iter().enumerate() {
        if i == last {
            writeln!(out, "{cell}")?;
        } else {
            write!(out, "{cell:<width$}  ", width = widths[i])?;
        }
    }
    Ok(())
}

fn or_dash(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("-").to_string()
}

fn row(record: &Record<'_>) -> Row {
    let pod = match (record.namespace(), record.pod_name()) {
        (None, None) => "-".to_string(),
        (namespace, name) => format!("{}/{}", namespace.unwrap_or("-"), name.unwrap_or("-")),
    };
    [
        record.time.as_str().to_string(),
        or_dash(record.operation()),
        or_dash(Some(record.decision.as_str())),
        or_dash(Some(record.reason.as_str())),
        pod,
        image_cell(record),
    ]
    .map(|cell| printable(&cell).into_owned())
}

/// `text` with its control characters (C0, DEL, C1) written as visible
/// escapes: `\n`, `\x1b`. Anyone who can create a pod chooses its image
/// reference, name and namespace, and JSON unescaping turns their
/// `\u001b[…` and `\n` into the raw characters: printed as they are, they
/// could drive the terminal or forge rows. Escaped, every record is exactly one line of plain text.
/// (`--output json` keeps the log's bytes, where JSON escapes them.)
pub(super) fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        // `char::is_control` is exactly C0, DEL and C1.
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if c.is_control() => {
                // Writing to a String cannot fail.
                let _ = write!(escaped, "\\x{:02x}", u32::from(c));
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// The image as asked for, its digest shortened: `reg/app:1.2@sha256:0123456789ab`.
fn image_cell(record: &Record<'_>) -> String {
    let Some(image) = &record.image else {
        return "-".to_string();
    };
    let reference = image.reference.as_str();
    let (named, digest_in_reference) = match reference.split_once('@') {
        Some((named, digest)) => (named, Some(digest)),
        None => (reference, None),
    };
    let digest = image
        .digest
        .as_ref()
        .map(|d| d.as_str())
        .or(digest_in_reference);
    match digest {
        Some(digest) => format!("{named}@{}", short_digest(digest)),
        None => reference.to_string(),
    }
}

fn short_digest(digest: &str) -> &str {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return digest;
    };
    match hex.char_indices().nth(SHORT_DIGEST) {
        Some((cut, _)) => &digest[..algorithm.len() + 1 + cut],
        None => digest,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn image_of(image: &str) -> String {
        let line = format!(r#"{{"time":"t","decision":"deny","reason":"ERROR","image":{image}}}"#);
        image_cell(&Record::parse(line.as_bytes()).unwrap())
    }

    #[test]
    fn images_show_a_short_digest() {
        assert_eq!(
            image_of(&format!(
                r#"{{"reference":"reg/app:1.2","repository":"reg/app","digest":"{DIGEST}"}}"#
            )),
            "reg/app:1.2@sha256:0123456789ab"
        );
        assert_eq!(
            image_of(&format!(r#"{{"reference":"reg/app@{DIGEST}"}}"#)),
            "reg/app@sha256:0123456789ab"
        );
        assert_eq!(image_of(r#"{"reference":"reg/app:1.2"}"#), "reg/app:1.2");
        assert_eq!(
            image_of(r#"{"reference":"reg/app","digest":"sha256:abc"}"#),
            "reg/app@sha256:abc"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(printable("reg/app:1"), Cow::Borrowed("reg/app:1")));
        assert_eq!(
            printable("a\u{1b}[2Jb\nc\rd\te\u{0}\u{7f}\u{9b}é"),
            "a\\x1b[2Jb\\nc\\rd\\te\\x00\\x7f\\x9bé"
        );
    }

    #[test]
    fn a_record_with_escapes_and_newlines_is_one_plain_line() {
        let line = r#"{"time":"2026-12-02T11:00:00.000000Z","operation":"PullImage","decision":"allow","reason":"ATTESTED","image":{"reference":"reg/a:1\u001b[2J\n2026-12-02T11:00:01.000000Z  PullImage  allow"},"pod":{"namespace":"prod\u009b","name":"web\n\u001b]0;owned\u0007"}}"#;
        let mut table = Table::new();
        let mut out = Vec::new();
        table
            .add(&Record::parse(line.as_bytes()).unwrap(), &mut out)
            .unwrap();
        table.finish(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        // The header and one row, each ended by its newline and holding
        // no other control character.
        assert_eq!(text.matches('\n').count(), 2, "{text}");
        assert!(
            text.lines().all(|l| !l.chars().any(char::is_control)),
            "{text}"
        );
        let row = text.lines().nth(1).unwrap();
        assert!(row.contains(r"prod\x9b/web\n\x1b]0;owned\x07"), "{row}");
        assert!(
            row.ends_with(r"reg/a:1\x1b[2J\n2026-12-02T11:00:01.000000Z  PullImage  allow"),
            "{row}"
        );
    }

    #[test]
    fn columns_are_aligned_to_the_widest_cell() {
        let lines = [
            r#"{"time":"2026-12-02T11:00:00.000000Z","operation":"PullImage","decision":"allow","reason":"ATTESTED","image":{"reference":"reg/a:1"}}"#,
            r#"{"time":"2026-12-02T11:00:01.000000Z","operation":"CreateContainer","decision":"deny","reason":"MISSING_ATTESTATIONS","image":{"reference":"reg/b:1"},"pod":{"namespace":"prod","name":"web-0"}}"#,
        ];
        let mut table = Table::new();
        let mut out = Vec::new();
        for line in lines {
            table
                .add(&Record::parse(line.as_bytes()).unwrap(), &mut out)
                .unwrap();
        }
        assert!(out.is_empty(), "rows are held until the widths are known");
        table.finish(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let expected = "\
TIME                         OPERATION        DECISION  REASON                NAMESPACE/POD  IMAGE
2026-12-02T11:00:00.000000Z  PullImage        allow     ATTESTED              -              reg/a:1
2026-12-02T11:00:01.000000Z  CreateContainer  deny      MISSING_ATTESTATIONS  prod/web-0     reg/b:1
";
        assert_eq!(text, expected);
        let mut out = Vec::new();
        Table::new().finish(&mut out).unwrap();
        assert!(out.is_empty());
    }
}
