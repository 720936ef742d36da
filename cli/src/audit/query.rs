//! The filters of `attestgate audit`, compiled once and applied to each line:
//! a byte search rules most lines out before any JSON is parsed.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use attestgate_policy::Reason;
use attestgate_policy::decision::format_time;
use memchr::memmem;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::glob::ImageGlob;
use super::record::{Record, leading_time, looks_whole};

/// `--since` / `--until`: how long ago, or a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSpec {
    Ago(Duration),
    At(OffsetDateTime),
}

impl TimeSpec {
    pub fn parse(value: &str) -> Result<TimeSpec, String> {
        if let Ok(at) = OffsetDateTime::parse(value, &Rfc3339) {
            return Ok(TimeSpec::At(at));
        }
        value
            .parse::<attestgate_node::config::Span>()
            .map(|span| TimeSpec::Ago(span.0))
            .map_err(|_| {
                format!("{value:?}: expected a duration (30s, 5m, 1h, 7d) or an RFC 3339 time (2026-01-02T03:04:05Z)")
            })
    }

    fn resolve(self, now: OffsetDateTime) -> Result<OffsetDateTime> {
        match self {
            TimeSpec::At(at) => Ok(at),
            TimeSpec::Ago(ago) => time::Duration::try_from(ago)
                .ok()
                .and_then(|ago| now.checked_sub(ago))
                .with_context(|| format!("{}s ago is before any time there is", ago.as_secs())),
        }
    }
}

/// The operations of SPEC §6.
pub const OPERATIONS: &[&str] = &[
    "PullImage",
    "CreateContainer",
    "TaskCreate",
    "Evaluate",
    "ContinuousValidation",
];

/// Spellings compared without case, `-` or `_`: `missing-attestations`,
/// `pullimage`, `PULL_IMAGE`.
fn loosely(value: &str) -> impl Iterator<Item = char> + '_ {
    value
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .map(|c| c.to_ascii_lowercase())
}

pub fn parse_reason(value: &str) -> Result<&'static str, String> {
    Reason::ALL
        .iter()
        .map(|r| r.as_str())
        .find(|name| loosely(name).eq(loosely(value)))
        .ok_or_else(|| {
            let names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
            format!("{value:?}: expected one of {}", names.join(", "))
        })
}

pub fn parse_operation(value: &str) -> Result<&'static str, String> {
    OPERATIONS
        .iter()
        .copied()
        .find(|name| loosely(name).eq(loosely(value)))
        .ok_or_else(|| format!("{value:?}: expected one of {}", OPERATIONS.join(", ")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DecisionFilter {
    Allow,
    Deny,
}

impl DecisionFilter {
    fn as_str(self) -> &'static str {
        match self {
            DecisionFilter::Allow => "allow",
            DecisionFilter::Deny => "deny",
        }
    }
}

/// A moment as the node writes it (RFC 3339, UTC, microseconds), so that
/// times written the same way compare as strings.
#[derive(Debug, Clone)]
struct Moment {
    written: String,
    at: OffsetDateTime,
}

impl Moment {
    fn new(at: OffsetDateTime) -> Moment {
        Moment {
            written: format_time(at),
            at,
        }
    }
}

/// Whether `time` has the node's fixed shape, `2026-01-02T03:04:05.123456Z`,
/// in which string order is time order.
fn written_by_node(time: &[u8]) -> bool {
    time.len() == 27
        && time.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            10 => *b == b'T',
            13 | 16 => *b == b':',
            19 => *b == b'.',
            26 => *b == b'Z',
            _ => b.is_ascii_digit(),
        })
}

/// What the filters make of one line.
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per line and taken apart at once; boxing would allocate per match"
)]
pub enum Verdict<'a> {
    Match(Record<'a>),
    NoMatch,
    /// Not a record: cut short, not JSON, or missing what every record has.
    Unreadable,
}

#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub since: Option<TimeSpec>,
    pub until: Option<TimeSpec>,
    pub decision: Option<DecisionFilter>,
    pub reason: Option<&'static str>,
    pub operation: Option<&'static str>,
    pub namespace: Option<String>,
    pub image: Option<String>,
}

pub struct Query {
    /// Inclusive.
    since: Option<Moment>,
    /// Exclusive.
    until: Option<Moment>,
    decision: Option<&'static str>,
    reason: Option<&'static str>,
    operation: Option<&'static str>,
    namespace: Option<String>,
    image: Option<ImageGlob>,
    /// Bytes each match contains verbatim, provided its line has no escape.
    required: Vec<memmem::Finder<'static>>,
}

impl Query {
    pub fn new(filters: &Filters, now: OffsetDateTime) -> Result<Query> {
        let since = filters.since.map(|s| s.resolve(now)).transpose()?;
        let until = filters.until.map(|u| u.resolve(now)).transpose()?;
        if let (Some(since), Some(until)) = (since, until)
            && since >= until
        {
            bail!(
                "--since {} is not before --until {}",
                format_time(since),
                format_time(until)
            );
        }
        let image = filters.image.as_deref().map(ImageGlob::parse).transpose()?;
        let decision = filters.decision.map(DecisionFilter::as_str);
        let mut required: Vec<String> = [decision, filters.reason, filters.operation]
            .into_iter()
            .flatten()
            .map(|value| format!("\"{value}\""))
            .collect();
        if let Some(namespace) = &filters.namespace {
            required.push(serde_json::to_string(namespace)?);
        }
        if let Some(text) = image.as_ref().and_then(ImageGlob::required_text)
            && !text.contains(['"', '\\'])
        {
            required.push(text.to_string());
        }
        Ok(Query {
            since: since.map(Moment::new),
            until: until.map(Moment::new),
            decision,
            reason: filters.reason,
            operation: filters.operation,
            namespace: filters.namespace.clone(),
            image,
            required: required
                .iter()
                .map(|needle| memmem::Finder::new(needle.as_bytes()).into_owned())
                .collect(),
        })
    }

    pub fn judge<'a>(&self, line: &'a [u8]) -> Verdict<'a> {
        let line = line.trim_ascii_end();
        if line.is_empty() {
            return Verdict::NoMatch;
        }
        let ruled_out = || {
            if looks_whole(line) {
                Verdict::NoMatch
            } else {
                Verdict::Unreadable
            }
        };
        // A JSON writer may escape any character of a string, so the bytes
        // are only known to appear verbatim in a line without escapes.
        if self.required.iter().any(|f| f.find(line).is_none())
            && memchr::memchr(b'\\', line).is_none()
        {
            return ruled_out();
        }
        let mut time_checked = false;
        if (self.since.is_some() || self.until.is_some())
            && let Some(time) = leading_time(line).filter(|t| written_by_node(t))
        {
            if !self.in_written_range(time) {
                return ruled_out();
            }
            time_checked = true;
        }
        let Some(record) = Record::parse(line) else {
            return Verdict::Unreadable;
        };
        if !time_checked {
            let time = record.time.as_str();
            if written_by_node(time.as_bytes()) {
                if !self.in_written_range(time.as_bytes()) {
                    return Verdict::NoMatch;
                }
            } else if self.since.is_some() || self.until.is_some() {
                let Ok(at) = OffsetDateTime::parse(time, &Rfc3339) else {
                    return Verdict::Unreadable;
                };
                if self.since.as_ref().is_some_and(|since| at < since.at)
                    || self.until.as_ref().is_some_and(|until| at >= until.at)
                {
                    return Verdict::NoMatch;
                }
            }
        }
        if self.matches_fields(&record) {
            Verdict::Match(record)
        } else {
            Verdict::NoMatch
        }
    }

    fn in_written_range(&self, time: &[u8]) -> bool {
        self.since
            .as_ref()
            .is_none_or(|since| time >= since.written.as_bytes())
            && self
                .until
                .as_ref()
                .is_none_or(|until| time < until.written.as_bytes())
    }

    fn matches_fields(&self, record: &Record<'_>) -> bool {
        self.decision
            .is_none_or(|want| record.decision.as_str() == want)
            && self
                .reason
                .is_none_or(|want| record.reason.as_str() == want)
            && self
                .operation
                .is_none_or(|want| record.operation() == Some(want))
            && self
                .namespace
                .as_deref()
                .is_none_or(|want| record.namespace() == Some(want))
            && self
                .image
                .as_ref()
                .is_none_or(|glob| image_matches(glob, record))
    }
}

/// The image as asked for, its repository, and `repository@digest`.
fn image_matches(glob: &ImageGlob, record: &Record<'_>) -> bool {
    let Some(image) = &record.image else {
        return false;
    };
    if glob.matches(image.reference.as_str()) {
        return true;
    }
    let Some(repository) = &image.repository else {
        return false;
    };
    glob.matches(repository.as_str())
        || image.digest.as_ref().is_some_and(|digest| {
            glob.matches(&format!("{}@{}", repository.as_str(), digest.as_str()))
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-02 12:00:00 UTC);

    fn line(time: &str, decision: &str, reason: &str, namespace: &str, image: &str) -> String {
        format!(
            r#"{{"time":"{time}","operation":"CreateContainer","decision":"{decision}","reason":"{reason}","enforced":true,"image":{{"reference":"{image}:1","repository":"{image}","digest":"sha256:00ff"}},"pod":{{"namespace":"{namespace}","name":"web-0"}},"message":"m"}}"#
        )
    }

    fn query(filters: Filters) -> Query {
        Query::new(&filters, NOW).unwrap()
    }

    fn verdict(query: &Query, line: &str) -> &'static str {
        match query.judge(line.as_bytes()) {
            Verdict::Match(_) => "match",
            Verdict::NoMatch => "no match",
            Verdict::Unreadable => "unreadable",
        }
    }

    #[test]
    fn durations_and_times_parse() {
        assert_eq!(
            TimeSpec::parse("90m"),
            Ok(TimeSpec::Ago(Duration::from_secs(5400)))
        );
        assert_eq!(
            TimeSpec::parse("7d"),
            Ok(TimeSpec::Ago(Duration::from_secs(7 * 86_400)))
        );
        assert_eq!(
            TimeSpec::parse("2026-12-01T00:00:00+01:00"),
            Ok(TimeSpec::At(datetime!(2026-11-30 23:00:00 UTC)))
        );
        for bad in ["", "5", "m", "1w", "-1h", "2026-12-01", "yesterday"] {
            assert!(TimeSpec::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            TimeSpec::Ago(Duration::from_secs(3600))
                .resolve(NOW)
                .unwrap(),
            datetime!(2026-12-02 11:00:00 UTC)
        );
        assert!(TimeSpec::Ago(Duration::MAX).resolve(NOW).is_err());
    }

    #[test]
    fn reasons_and_operations_take_loose_spellings() {
        assert_eq!(
            parse_reason("MISSING_ATTESTATIONS"),
            Ok("MISSING_ATTESTATIONS")
        );
        assert_eq!(
            parse_reason("missing-attestations"),
            Ok("MISSING_ATTESTATIONS")
        );
        assert_eq!(parse_reason("dry_run"), Ok("DRY_RUN"));
        assert!(parse_reason("MISSING").unwrap_err().contains("BREAK_GLASS"));
        assert_eq!(parse_operation("pullimage"), Ok("PullImage"));
        assert_eq!(
            parse_operation("continuous-validation"),
            Ok("ContinuousValidation")
        );
        assert!(parse_operation("Pull").is_err());
    }

    #[test]
    fn filters_and_together() {
        let q = query(Filters {
            decision: Some(DecisionFilter::Deny),
            namespace: Some("prod".into()),
            image: Some("reg.example/team/*".into()),
            ..Filters::default()
        });
        let t = "2026-12-02T11:00:00.000000Z";
        let hit = line(
            t,
            "deny",
            "MISSING_ATTESTATIONS",
            "prod",
            "reg.example/team/app",
        );
        assert_eq!(verdict(&q, &hit), "match");
        for miss in [
            line(t, "allow", "ATTESTED", "prod", "reg.example/team/app"),
            line(
                t,
                "deny",
                "MISSING_ATTESTATIONS",
                "dev",
                "reg.example/team/app",
            ),
            line(
                t,
                "deny",
                "MISSING_ATTESTATIONS",
                "prod",
                "reg.example/other/app",
            ),
            line(
                t,
                "deny",
                "MISSING_ATTESTATIONS",
                "production",
                "reg.example/team/app",
            ),
        ] {
            assert_eq!(verdict(&q, &miss), "no match", "{miss}");
        }
        let by_digest = query(Filters {
            image: Some("reg.example/team/app@sha256:00*".into()),
            ..Filters::default()
        });
        assert_eq!(verdict(&by_digest, &hit), "match");
        let by_reason = query(Filters {
            reason: Some("ATTESTED"),
            operation: Some("CreateContainer"),
            ..Filters::default()
        });
        assert_eq!(verdict(&by_reason, &hit), "no match");
        assert_eq!(
            verdict(&by_reason, &line(t, "allow", "ATTESTED", "p", "r")),
            "match"
        );
    }

    #[test]
    fn escaped_lines_are_parsed_not_ruled_out_by_bytes() {
        let q = query(Filters {
            namespace: Some("prod".into()),
            image: Some("reg.example/app".into()),
            ..Filters::default()
        });
        let escaped = r#"{"time":"2026-12-02T11:00:00.000000Z","decision":"deny","reason":"ERROR","image":{"reference":"reg.example\/app"},"pod":{"namespace":"\u0070rod"}}"#;
        assert_eq!(verdict(&q, escaped), "match");
    }

    #[test]
    fn time_bounds_are_inclusive_then_exclusive() {
        let q = query(Filters {
            since: Some(TimeSpec::Ago(Duration::from_secs(3600))),
            until: Some(TimeSpec::At(datetime!(2026-12-02 11:30:00 UTC))),
            ..Filters::default()
        });
        let at = |t: &str| verdict(&q, &line(t, "allow", "ATTESTED", "p", "r"));
        assert_eq!(at("2026-12-02T10:59:59.999999Z"), "no match");
        assert_eq!(at("2026-12-02T11:00:00.000000Z"), "match");
        assert_eq!(at("2026-12-02T11:29:59.999999Z"), "match");
        assert_eq!(at("2026-12-02T11:30:00.000000Z"), "no match");
        // Written otherwise than the node writes: parsed.
        assert_eq!(at("2026-12-02T12:15:00+01:00"), "match");
        assert_eq!(at("2026-12-02T11:15:00Z"), "match");
        assert_eq!(at("2026-12-02T13:15:00+01:00"), "no match");
        assert_eq!(at("yesterday"), "unreadable");
        assert!(
            Query::new(
                &Filters {
                    since: Some(TimeSpec::Ago(Duration::from_secs(60))),
                    until: Some(TimeSpec::Ago(Duration::from_secs(120))),
                    ..Filters::default()
                },
                NOW
            )
            .is_err()
        );
    }

    #[test]
    fn damaged_lines_are_unreadable_even_when_ruled_out() {
        let whole = line("2026-12-02T11:00:00.000000Z", "allow", "ATTESTED", "p", "r");
        let torn = &whole[..whole.len() / 2];
        let everything = query(Filters::default());
        let denied = query(Filters {
            decision: Some(DecisionFilter::Deny),
            ..Filters::default()
        });
        let recent = query(Filters {
            since: Some(TimeSpec::Ago(Duration::from_secs(60))),
            ..Filters::default()
        });
        for q in [&everything, &denied, &recent] {
            assert_eq!(verdict(q, torn), "unreadable");
            assert_eq!(verdict(q, "garbage"), "unreadable");
            assert_eq!(verdict(q, "  \r"), "no match");
        }
        // Whole-looking but no record: counted only when it is parsed.
        assert_eq!(verdict(&everything, "{\"time\":\"x\"}"), "unreadable");
        assert_eq!(verdict(&denied, "{\"time\":\"x\"}"), "no match");
        assert_eq!(verdict(&everything, &format!("{whole}\r")), "match");
    }
}
