//! One sync: ask the source whether anything changed (one conditional
//! request), and if it did, fetch, verify everything, write the new version
//! whole, check it as `policy check` would, make it current, and only then
//! trust the new metadata. Any refusal leaves the current bundle in place.

use std::path::{Path, PathBuf};

use attestgate_node::freshness::Freshness;
use attestgate_registry::oci::{self, RegistryOptions};
use attestgate_registry::source::{self, Failure, Polled, Scratch, Source, SourceError};
use attestgate_registry::tuf::{Trust, Verified};

use crate::versions::{self, Last, State};

/// How a pass ended: what `--once` exits with and the metrics count.
#[derive(Debug)]
pub enum Outcome {
    /// A new version is current.
    Updated {
        version: u64,
        expires: time::OffsetDateTime,
    },
    /// The source has nothing newer than the bundle in force.
    Current { version: u64 },
    /// The source offered something that was refused; the bundle in force
    /// stays.
    Refused {
        reason: &'static str,
        message: String,
    },
    /// The source could not be reached, or the node could not write; the
    /// next poll tries again.
    Failed {
        reason: &'static str,
        message: String,
    },
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Updated { .. } | Outcome::Current { .. } => 0,
            Outcome::Refused { .. } => 1,
            Outcome::Failed { .. } => 2,
        }
    }

    pub fn result(&self) -> &'static str {
        match self {
            Outcome::Updated { .. } => "updated",
            Outcome::Current { .. } => "current",
            Outcome::Refused { .. } => "refused",
            Outcome::Failed { .. } => "unreachable",
        }
    }
}

/// Why a pass did not end with the source's bundle in force.
struct Stop {
    refused: bool,
    reason: &'static str,
    message: String,
}

impl From<SourceError> for Stop {
    fn from(e: SourceError) -> Stop {
        Stop {
            refused: e.failure() == Failure::Refused,
            reason: e.reason(),
            message: e.to_string(),
        }
    }
}

impl From<attestgate_registry::tuf::TufError> for Stop {
    fn from(e: attestgate_registry::tuf::TufError) -> Stop {
        SourceError::from(e).into()
    }
}

fn local(e: anyhow::Error) -> Stop {
    Stop {
        refused: false,
        reason: "local",
        message: format!("{e:#}"),
    }
}

pub struct Syncer {
    pub source_text: String,
    source: Source,
    state: State,
    trust: Trust,
    bundle: PathBuf,
    options: RegistryOptions,
    limits: source::Limits,
    /// What the last pass cost at the registry, for the metrics.
    pub traffic: oci::Traffic,
}

impl Syncer {
    pub fn new(
        source_text: &str,
        state_dir: &Path,
        trust_root: &Path,
        bundle: &Path,
        options: RegistryOptions,
    ) -> anyhow::Result<Syncer> {
        use anyhow::Context as _;
        let source = Source::parse(source_text)?;
        let state = State::open(state_dir)?;
        let root = std::fs::read(trust_root)
            .with_context(|| format!("trust_root {}", trust_root.display()))?;
        let trust = Trust::open(&state.tuf(), &root)
            .with_context(|| format!("trust_root {}", trust_root.display()))?;
        Ok(Syncer {
            source_text: source_text.to_string(),
            source,
            state,
            trust,
            bundle: bundle.to_path_buf(),
            options,
            limits: source::Limits::default(),
            traffic: oci::Traffic::default(),
        })
    }

    pub fn bundle(&self) -> &Path {
        &self.bundle
    }

    pub async fn pass(&mut self) -> Outcome {
        self.traffic = oci::Traffic::default();
        let result = self.try_pass().await;
        // After every pass, whatever its end: a source that serves a new
        // artifact each poll only to have it refused must not fill the
        // disk with its blobs.
        if let Source::Oci(_) = self.source {
            let recent = self
                .state
                .last(&self.source_text)
                .map(|l| l.recent_manifests)
                .unwrap_or_default();
            let keep: Vec<&str> = recent.iter().map(String::as_str).collect();
            if let Err(e) = oci::prune(&self.state.blobs(), &keep).await {
                tracing::warn!(error = %e, "cannot prune the blob cache");
            }
        }
        match result {
            Ok(outcome) => outcome,
            Err(stop) if stop.refused => Outcome::Refused {
                reason: stop.reason,
                message: stop.message,
            },
            Err(stop) => Outcome::Failed {
                reason: stop.reason,
                message: stop.message,
            },
        }
    }

    async fn try_pass(&mut self) -> Result<Outcome, Stop> {
        let last = self.state.last(&self.source_text);
        let current = versions::current(&self.bundle);
        // A validator is worth something only while the version it led to
        // is still the bundle in force (not one pointed at by hand), and
        // was verified under the root trusted now (not one a newly
        // installed trust root has superseded).
        let in_force = current
            .as_ref()
            .filter(|(_, freshness)| freshness.is_some())
            .and_then(|(dir, _)| dir.file_name())
            .map(|name| name.to_string_lossy().into_owned());
        let root_suffix = format!("-r{}", self.trust.root_version());
        let previous = last
            .as_ref()
            .filter(|l| l.version.is_some() && l.version == in_force)
            .filter(|l| {
                l.version
                    .as_deref()
                    .is_some_and(|v| v.ends_with(&root_suffix))
            })
            .and_then(|l| l.validator.clone());
        let mut recent = last.map(|l| l.recent_manifests).unwrap_or_default();
        let staging = self.state.staging().map_err(local)?;
        let blobs = self.state.blobs();
        let scratch = Scratch {
            staging: &staging,
            blobs: &blobs,
        };
        let polled = source::poll(
            &self.source,
            previous.as_deref(),
            &self.trust,
            &scratch,
            &self.options,
            &self.limits,
            &mut self.traffic,
        )
        .await?;
        let (verified, validator) = match polled {
            Polled::Unchanged => return self.unchanged(current),
            Polled::New {
                verified,
                validator,
                manifest,
            } => {
                if let Some(manifest) = manifest {
                    recent.retain(|m| m != &manifest);
                    recent.insert(0, manifest);
                    recent.truncate(versions::KEPT);
                }
                (verified, validator)
            }
        };
        let installed = self.install(verified, current);
        // What was fetched is in the version now, or refused.
        let _ = std::fs::remove_dir_all(&staging);
        let (outcome, version) = installed?;
        // The bundle is in force whatever happens now: a validator not
        // saved costs the next poll a full fetch, nothing more.
        if let Err(e) = self.state.save_last(&Last {
            source: self.source_text.clone(),
            validator: Some(validator),
            version: Some(version),
            recent_manifests: recent,
        }) {
            tracing::warn!(error = %format!("{e:#}"), "cannot keep the source's answer for the next poll");
        }
        Ok(outcome)
    }

    /// The source still serves what is in force: current, unless what is in
    /// force has expired, which a source that keeps serving the same old
    /// metadata (frozen, or held back by someone in the way) must not hide.
    fn unchanged(&self, current: Option<(PathBuf, Option<Freshness>)>) -> Result<Outcome, Stop> {
        let Some((_, Some(freshness))) = current else {
            return Err(Stop {
                refused: false,
                reason: "local",
                message: "no synced bundle in force".into(),
            });
        };
        if let Some(lapsed) = freshness.lapsed(time::OffsetDateTime::now_utc()) {
            return Err(Stop {
                refused: true,
                reason: "expired",
                message: format!(
                    "the source still serves the metadata of version {}, which has expired: {lapsed}; freeze refused",
                    freshness.version
                ),
            });
        }
        Ok(Outcome::Current {
            version: freshness.version,
        })
    }

    /// Writes `verified` as a version, checks it, trusts its metadata,
    /// then makes it current; returns the version's directory name.
    fn install(
        &mut self,
        verified: Verified,
        current: Option<(PathBuf, Option<Freshness>)>,
    ) -> Result<(Outcome, String), Stop> {
        let mut name = format!(
            "v{}-t{}-r{}",
            verified.targets_version, verified.timestamp_version, verified.root_version
        );
        let freshness = Freshness {
            version: verified.targets_version,
            expires: verified.expires,
        };
        let current_name = current
            .as_ref()
            .and_then(|(dir, _)| dir.file_name())
            .map(|n| n.to_string_lossy().into_owned());
        let current_freshness = current.as_ref().and_then(|(_, f)| f.as_ref());
        if current_name.as_deref() == Some(name.as_str()) {
            if current_freshness == Some(&freshness) {
                verified.commit(&mut self.trust)?;
                return Ok((
                    Outcome::Current {
                        version: freshness.version,
                    },
                    name,
                ));
            }
            // The version in force under this name is damaged (its
            // sync.json unreadable): write it anew beside it, never over
            // the directory readers are using.
            let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
            name = format!(
                "v{}-t{}-x{now}-r{}",
                verified.targets_version, verified.timestamp_version, verified.root_version
            );
        }
        // Belt and braces under TUF's own rollback check: never older than
        // what is in force, even if the trusted state was lost.
        if let Some(in_force) = current_freshness
            && freshness.version < in_force.version
        {
            return Err(Stop {
                refused: true,
                reason: "rollback",
                message: format!(
                    "targets version {} is lower than version {} in force: rollback refused",
                    freshness.version, in_force.version
                ),
            });
        }
        let files: Vec<(String, &[u8])> = verified
            .files
            .iter()
            .map(|(path, bytes)| (path.clone(), bytes.as_ref()))
            .collect();
        let dir = self
            .state
            .write_version(&name, &files, &freshness, &self.source_text)
            .map_err(local)?;
        // Signed is not the same as valid: a publisher's mistake must not
        // replace a good policy any more than an attacker's.
        if let Err(e) = attestgate_policy::Bundle::load(&dir) {
            let _ = std::fs::remove_dir_all(&dir);
            let all: Vec<String> = e.errors.iter().map(ToString::to_string).collect();
            return Err(Stop {
                refused: true,
                reason: "policy",
                message: format!(
                    "version {} is signed but not a valid bundle: {}",
                    freshness.version,
                    all.join("; ")
                ),
            });
        }
        // Trust first: trust ahead of the bundle in force is harmless (the
        // next pass finds the same version and makes it current), the
        // other way round would let a lower version in.
        verified.commit(&mut self.trust)?;
        versions::make_current(&self.bundle, &dir).map_err(local)?;
        match self.state.prune(&self.bundle) {
            Ok(removed) => {
                for old in removed {
                    tracing::debug!(version = %old.display(), "removed an old bundle version");
                }
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot prune old bundle versions"),
        }
        Ok((
            Outcome::Updated {
                version: freshness.version,
                expires: freshness.expires,
            },
            name,
        ))
    }
}
