//! Errors of the policy crate. Every problem with an input file is a
//! [`FieldError`]: it names the file, the line and column when the format
//! has them, and the field path, so an operator can go straight to it.

use std::fmt;
use std::path::PathBuf;

/// Where in a document a value sits (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    pub line: u64,
    pub column: u64,
}

/// One problem with one field of one input file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FieldError {
    pub file: Option<PathBuf>,
    pub location: Option<Location>,
    /// Dotted field path, e.g. `defaultAdmissionRule.evaluationMode` or
    /// `[3].attestation.signatures[0].signature`; empty for the whole document.
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(
        path: impl Into<String>,
        location: Option<Location>,
        message: impl Into<String>,
    ) -> Self {
        FieldError {
            file: None,
            location,
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn in_file(mut self, file: &std::path::Path) -> Self {
        self.file = Some(file.to_path_buf());
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}:", file.display())?;
            if let Some(loc) = self.location {
                write!(f, "{}:{}:", loc.line, loc.column)?;
            }
            f.write_str(" ")?;
        } else if let Some(loc) = self.location {
            write!(f, "{}:{}: ", loc.line, loc.column)?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// A bundle directory could not be loaded. Holds every error found, not
/// only the first, so one `policy check` run shows them all.
#[derive(Debug, Clone, thiserror::Error)]
pub struct BundleError {
    pub errors: Vec<FieldError>,
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errors.as_slice() {
            [] => f.write_str("invalid bundle"),
            [one] => write!(f, "invalid bundle: {one}"),
            [first, rest @ ..] => write!(f, "invalid bundle: {first} (and {} more)", rest.len()),
        }
    }
}

impl From<FieldError> for BundleError {
    fn from(e: FieldError) -> Self {
        BundleError { errors: vec![e] }
    }
}
