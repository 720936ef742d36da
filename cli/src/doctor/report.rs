//! A check's result, and the two ways doctor prints them: one line each
//! for people, one JSON document for automation.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// For automation that wants a boolean, beside `status`.
    pub ok: bool,
    /// What was found, pass or fail.
    pub detail: String,
    /// What to do about a failure; none when the check passed.
    pub remedy: Option<String>,
}

impl Check {
    pub fn pass(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Pass,
            ok: true,
            detail: detail.into(),
            remedy: None,
        }
    }

    pub fn fail(name: &'static str, detail: impl Into<String>, remedy: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Fail,
            ok: false,
            detail: detail.into(),
            remedy: Some(remedy.into()),
        }
    }
}

/// A span of time for people: its two largest units (`3d 4h`, `5m 2s`).
pub fn span(seconds: i64) -> String {
    let mut left = seconds.unsigned_abs();
    let mut parts = Vec::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if left >= size || (unit == "s" && parts.is_empty()) {
            parts.push(format!("{}{unit}", left / size));
            left %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(" ")
}

pub fn all_pass(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status == Status::Pass)
}

/// One line per check; a failing one ends with what to do.
pub fn text(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for check in checks {
        let (mark, remedy) = match (&check.status, &check.remedy) {
            (Status::Pass, _) => ("ok  ", String::new()),
            (Status::Fail, Some(remedy)) => ("FAIL", format!(" — fix: {remedy}")),
            (Status::Fail, None) => ("FAIL", String::new()),
        };
        out.push_str(&format!(
            "{mark} {:<width$}  {}{remedy}\n",
            check.name, check.detail
        ));
    }
    out
}

pub fn json(checks: &[Check]) -> String {
    let document = serde_json::json!({ "ok": all_pass(checks), "checks": checks });
    format!("{document:#}\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn spans_read_as_people_write_them() {
        assert_eq!(span(0), "0s");
        assert_eq!(span(42), "42s");
        assert_eq!(span(3 * 86_400 + 4 * 3600 + 59), "3d 4h");
        assert_eq!(span(-(5 * 60 + 2)), "5m 2s");
    }

    #[test]
    fn failing_lines_carry_their_remedy_and_json_says_the_same() {
        let checks = vec![
            Check::pass("kubelet", "points at the proxy"),
            Check::fail("bundle", "expired", "renew it"),
        ];
        let text = text(&checks);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ok   kubelet"), "{text}");
        assert!(
            lines[1].starts_with("FAIL bundle") && lines[1].ends_with("fix: renew it"),
            "{text}"
        );
        let doc: serde_json::Value = serde_json::from_str(&json(&checks)).unwrap();
        assert_eq!(doc["ok"], false);
        assert_eq!(doc["checks"][1]["name"], "bundle");
        assert_eq!(doc["checks"][1]["status"], "fail");
        assert_eq!(doc["checks"][1]["ok"], false);
        assert_eq!(doc["checks"][1]["remedy"], "renew it");
        assert_eq!(doc["checks"][0]["remedy"], serde_json::Value::Null);
        assert!(!all_pass(&checks));
        assert!(all_pass(&checks[..1]));
    }
}
