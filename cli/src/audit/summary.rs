//! `attestgate audit summary`: the matching decisions counted by decision
//! and reason, by namespace and by image, and the images denied most.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, Write};

use serde::Serialize;

use super::record::Record;
use super::table::printable;

const TOP_DENIED: usize = 10;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
struct Counts {
    count: u64,
    denied: u64,
}

impl Counts {
    fn add(&mut self, denied: bool) {
        self.count += 1;
        self.denied += u64::from(denied);
    }
}

#[derive(Default)]
pub struct Summary {
    records: u64,
    allowed: u64,
    denied: u64,
    /// (decision, reason): a dozen at most, so a list.
    outcomes: Vec<(String, String, u64)>,
    namespaces: HashMap<Box<str>, Counts>,
    images: HashMap<Box<str>, Counts>,
    /// Reused to name each record's image without allocating.
    image_name: String,
}

/// Counts under a borrowed key; the key is copied only the first time.
fn count_under(map: &mut HashMap<Box<str>, Counts>, key: &str, denied: bool) {
    match map.get_mut(key) {
        Some(counts) => counts.add(denied),
        None => {
            let mut counts = Counts::default();
            counts.add(denied);
            map.insert(key.into(), counts);
        }
    }
}

impl Summary {
    pub fn add(&mut self, record: &Record<'_>) {
        let decision = record.decision.as_str();
        let reason = record.reason.as_str();
        let denied = decision == "deny";
        self.records += 1;
        if denied {
            self.denied += 1;
        } else if decision == "allow" {
            self.allowed += 1;
        }
        match self
            .outcomes
            .iter_mut()
            .find(|(d, r, _)| d == decision && r == reason)
        {
            Some((_, _, count)) => *count += 1,
            None => self
                .outcomes
                .push((decision.to_string(), reason.to_string(), 1)),
        }
        count_under(
            &mut self.namespaces,
            record.namespace().unwrap_or(""),
            denied,
        );
        self.image_name.clear();
        if let Some(image) = &record.image {
            match (&image.repository, &image.digest) {
                (Some(repository), Some(digest)) => {
                    self.image_name.push_str(repository.as_str());
                    self.image_name.push('@');
                    self.image_name.push_str(digest.as_str());
                }
                _ => self.image_name.push_str(image.reference.as_str()),
            }
        }
        count_under(&mut self.images, &self.image_name, denied);
    }

    fn report(&self) -> Report<'_> {
        let mut outcomes: Vec<OutcomeCount<'_>> = self
            .outcomes
            .iter()
            .map(|(decision, reason, count)| OutcomeCount {
                decision,
                reason,
                count: *count,
            })
            .collect();
        outcomes.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| (a.decision, a.reason).cmp(&(b.decision, b.reason)))
        });
        let images = ranked(&self.images);
        let mut top_denied: Vec<Named<'_>> = images
            .iter()
            .filter(|i| i.counts.denied > 0)
            .cloned()
            .collect();
        top_denied.sort_by(|a, b| {
            b.counts
                .denied
                .cmp(&a.counts.denied)
                .then_with(|| a.name.cmp(&b.name))
        });
        top_denied.truncate(TOP_DENIED);
        Report {
            records: self.records,
            allowed: self.allowed,
            denied: self.denied,
            outcomes,
            namespaces: ranked(&self.namespaces),
            images,
            top_denied,
        }
    }

    pub fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        let report = self.report();
        let json = JsonReport {
            records: report.records,
            decisions: Decisions {
                allow: report.allowed,
                deny: report.denied,
            },
            reasons: &report.outcomes,
            namespaces: report
                .namespaces
                .iter()
                .map(|n| NamespaceJson {
                    namespace: n.name,
                    count: n.counts.count,
                    denied: n.counts.denied,
                })
                .collect(),
            images: report.images.iter().map(image_json).collect(),
            top_denied_images: report.top_denied.iter().map(image_json).collect(),
        };
        serde_json::to_writer(&mut *out, &json)?;
        out.write_all(b"\n")
    }

    pub fn write_table(&self, out: &mut impl Write) -> io::Result<()> {
        let report = self.report();
        writeln!(
            out,
            "{} decisions: {} allowed, {} denied",
            report.records, report.allowed, report.denied
        )?;
        if report.records == 0 {
            return Ok(());
        }
        let outcome_rows: Vec<[String; 3]> = report
            .outcomes
            .iter()
            .map(|o| {
                [
                    o.decision.to_string(),
                    o.reason.to_string(),
                    o.count.to_string(),
                ]
            })
            .collect();
        writeln!(out)?;
        write_aligned(out, ["DECISION", "REASON", "COUNT"], &outcome_rows)?;
        let named_rows = |rows: &[Named<'_>]| -> Vec<[String; 3]> {
            rows.iter()
                .map(|r| {
                    [
                        r.name.unwrap_or("-").to_string(),
                        r.counts.count.to_string(),
                        r.counts.denied.to_string(),
                    ]
                })
                .collect()
        };
        writeln!(out)?;
        write_aligned(
            out,
            ["NAMESPACE", "COUNT", "DENIED"],
            &named_rows(&report.namespaces),
        )?;
        writeln!(out)?;
        write_aligned(
            out,
            ["IMAGE", "COUNT", "DENIED"],
            &named_rows(&report.images),
        )?;
        if !report.top_denied.is_empty() {
            writeln!(out)?;
            let rows: Vec<[String; 2]> = report
                .top_denied
                .iter()
                .map(|r| {
                    [
                        r.name.unwrap_or("-").to_string(),
                        r.counts.denied.to_string(),
                    ]
                })
                .collect();
            write_aligned(out, ["MOST DENIED IMAGE", "DENIED"], &rows)?;
        }
        Ok(())
    }
}

/// Text left-aligned, counts (every column after the first, here) right.
fn write_aligned<const N: usize>(
    out: &mut impl Write,
    header: [&str; N],
    rows: &[[String; N]],
) -> io::Result<()> {
    // Names come from records, which anyone creating a pod writes to.
    let rows: Vec<[Cow<'_, str>; N]> = rows
        .iter()
        .map(|row| row.each_ref().map(|cell| printable(cell)))
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    // Counts, and their headers, are right-aligned.
    let right: [bool; N] = std::array::from_fn(|i| {
        i > 0
            && !rows.is_empty()
            && rows
                .iter()
                .all(|row| row[i].chars().all(|c| c.is_ascii_digit()))
    });
    let mut line = |cells: [&str; N]| -> io::Result<()> {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            if right[i] {
                text.extend(std::iter::repeat_n(' ', pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                if i + 1 < N {
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(header)?;
    for row in rows {
        line(std::array::from_fn(|i| &*row[i]))?;
    }
    Ok(())
}

/// Most counted first, then by name.
fn ranked(map: &HashMap<Box<str>, Counts>) -> Vec<Named<'_>> {
    let mut rows: Vec<Named<'_>> = map
        .iter()
        .map(|(name, counts)| Named {
            name: (!name.is_empty()).then_some(&**name),
            counts: *counts,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.counts
            .count
            .cmp(&a.counts.count)
            .then_with(|| a.name.cmp(&b.name))
    });
    rows
}

/// An image's counts as the JSON report gives them.
fn image_json<'a>(image: &Named<'a>) -> ImageJson<'a> {
    ImageJson {
        image: image.name,
        count: image.counts.count,
        denied: image.counts.denied,
    }
}

struct Report<'a> {
    records: u64,
    allowed: u64,
    denied: u64,
    outcomes: Vec<OutcomeCount<'a>>,
    namespaces: Vec<Named<'a>>,
    images: Vec<Named<'a>>,
    top_denied: Vec<Named<'a>>,
}

#[derive(Serialize)]
struct OutcomeCount<'a> {
    decision: &'a str,
    reason: &'a str,
    count: u64,
}

#[derive(Clone)]
struct Named<'a> {
    /// None for records without one (no pod, or no image).
    name: Option<&'a str>,
    counts: Counts,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    records: u64,
    decisions: Decisions,
    reasons: &'a [OutcomeCount<'a>],
    namespaces: Vec<NamespaceJson<'a>>,
    images: Vec<ImageJson<'a>>,
    top_denied_images: Vec<ImageJson<'a>>,
}

#[derive(Serialize)]
struct Decisions {
    allow: u64,
    deny: u64,
}

#[derive(Serialize)]
struct NamespaceJson<'a> {
    namespace: Option<&'a str>,
    count: u64,
    denied: u64,
}

#[derive(Serialize)]
struct ImageJson<'a> {
    image: Option<&'a str>,
    count: u64,
    denied: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(decision: &str, reason: &str, namespace: Option<&str>, image: &str) -> String {
        let pod = namespace
            .map(|ns| format!(r#","pod":{{"namespace":"{ns}"}}"#))
            .unwrap_or_default();
        format!(
            r#"{{"time":"t","decision":"{decision}","reason":"{reason}","image":{{"reference":"{image}:1","repository":"{image}","digest":"sha256:1"}}{pod}}}"#
        )
    }

    fn summary_of(lines: &[String]) -> Summary {
        let mut summary = Summary::default();
        for line in lines {
            summary.add(&Record::parse(line.as_bytes()).unwrap());
        }
        summary
    }

    #[test]
    fn decisions_are_counted_by_reason_namespace_and_image() {
        let mut lines = vec![
            record("allow", "ATTESTED", Some("prod"), "reg/a"),
            record("allow", "ATTESTED", Some("prod"), "reg/a"),
            record("deny", "MISSING_ATTESTATIONS", Some("prod"), "reg/b"),
            record("deny", "MISSING_ATTESTATIONS", Some("dev"), "reg/b"),
            record("deny", "ALWAYS_DENY", None, "reg/c"),
        ];
        for i in 0..12 {
            lines.push(record(
                "deny",
                "ALWAYS_DENY",
                Some("dev"),
                &format!("reg/x{i:02}"),
            ));
        }
        let mut out = Vec::new();
        summary_of(&lines).write_json(&mut out).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["records"], 17);
        assert_eq!(
            json["decisions"],
            serde_json::json!({"allow": 2, "deny": 15})
        );
        assert_eq!(
            json["reasons"],
            serde_json::json!([
                {"decision": "deny", "reason": "ALWAYS_DENY", "count": 13},
                {"decision": "allow", "reason": "ATTESTED", "count": 2},
                {"decision": "deny", "reason": "MISSING_ATTESTATIONS", "count": 2},
            ])
        );
        assert_eq!(
            json["namespaces"],
            serde_json::json!([
                {"namespace": "dev", "count": 13, "denied": 13},
                {"namespace": "prod", "count": 3, "denied": 1},
                {"namespace": null, "count": 1, "denied": 1},
            ])
        );
        assert_eq!(json["images"][0]["image"], "reg/a@sha256:1");
        assert_eq!(json["images"][0]["count"], 2);
        let top = json["top_denied_images"].as_array().unwrap();
        assert_eq!(top.len(), 10);
        assert_eq!(
            top[0],
            serde_json::json!({"image": "reg/b@sha256:1", "count": 2, "denied": 2})
        );
        assert_eq!(top[1]["image"], "reg/c@sha256:1");
        assert_eq!(top[9]["image"], "reg/x07@sha256:1");
    }

    #[test]
    fn names_in_the_table_have_their_control_characters_escaped() {
        let lines = vec![record(
            "deny",
            "ALWAYS_DENY",
            Some(r"prod\u001b[2J"),
            r"reg/b\nreg/forged",
        )];
        let mut out = Vec::new();
        summary_of(&lines).write_table(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.lines().all(|l| !l.chars().any(char::is_control)),
            "{text}"
        );
        assert!(text.contains("\nprod\\x1b[2J  "), "{text}");
        assert!(text.contains("\nreg/b\\nreg/forged@sha256:1  "), "{text}");
    }

    #[test]
    fn the_table_lines_up_counts() {
        let lines = vec![
            record("allow", "ATTESTED", Some("prod"), "reg/a"),
            record("deny", "MISSING_ATTESTATIONS", Some("prod"), "reg/b"),
        ];
        let mut out = Vec::new();
        summary_of(&lines).write_table(&mut out).unwrap();
        let expected = "\
2 decisions: 1 allowed, 1 denied

DECISION  REASON                COUNT
allow     ATTESTED                  1
deny      MISSING_ATTESTATIONS      1

NAMESPACE  COUNT  DENIED
prod           2       1

IMAGE           COUNT  DENIED
reg/a@sha256:1      1       0
reg/b@sha256:1      1       1

MOST DENIED IMAGE  DENIED
reg/b@sha256:1          1
";
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        let mut out = Vec::new();
        Summary::default().write_table(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0 decisions: 0 allowed, 0 denied\n"
        );
    }
}
