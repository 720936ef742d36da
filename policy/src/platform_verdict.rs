//! What a platform policy says of one image (SPEC §12), as decisions and
//! their records carry it: apart from the policy and its evaluation, which
//! read the bundle, so that a decision need not know either.

use serde::Serialize;

/// One check's result, as the record carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// The check's `displayName`, else its place (`checkSets[0].checks[1]`).
    pub name: String,
    /// The check's field name (`sigstoreSignatureCheck`, …).
    pub kind: String,
    pub passed: bool,
    pub detail: String,
}

/// What the platform policy says of one image in one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlatformVerdict {
    /// The policy's `name`, when the file gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The check set that applied: its `displayName`, else `checkSets[N]`;
    /// none when the whole policy exempted the image or no set's scope
    /// matches the pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_set: Option<String>,
    /// That check set's scope (`namespace:NS`, `serviceAccount:NS:SA`,
    /// `everything`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub conforms: bool,
    /// Whether the verdict took part in the admission decision
    /// (`platform_policy_enforce`), or was only evaluated.
    pub enforced: bool,
    /// The `imageAllowlist` pattern that exempted the image, policy-wide or
    /// the check set's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exempted_by: Option<String>,
    pub checks: Vec<CheckResult>,
    /// Checks the node cannot evaluate (GKE's `configErrorEvent`): each
    /// also in `checks`, failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub config_errors: Vec<String>,
}

impl PlatformVerdict {
    /// One line for the decision's message: which check set, and which of
    /// its checks failed and why.
    pub fn summary(&self) -> String {
        if let Some(pattern) = &self.exempted_by {
            return match &self.check_set {
                Some(set) => format!(
                    "platform policy check set {set}: image exempted by imageAllowlist pattern {pattern}"
                ),
                None => {
                    format!("platform policy: image exempted by imageAllowlist pattern {pattern}")
                }
            };
        }
        let Some(set) = &self.check_set else {
            return "platform policy: no check set applies to the pod".to_string();
        };
        if self.conforms {
            return format!("platform policy check set {set}: every check passed");
        }
        let failed: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("check {} ({}) failed: {}", c.name, c.kind, c.detail))
            .collect();
        // An undecided check set runs no checks: its config error says why.
        if failed.is_empty() {
            return format!("platform policy: {}", self.config_errors.join("; "));
        }
        format!("platform policy check set {set}: {}", failed.join("; "))
    }

    /// The failed checks that signatures from the registry might satisfy.
    pub fn wants_registry_signatures(&self) -> bool {
        !self.conforms
            && self.checks.iter().any(|c| {
                !c.passed
                    && (c.kind == "sigstoreSignatureCheck"
                        || c.kind == "simpleSigningAttestationCheck")
            })
    }
}
