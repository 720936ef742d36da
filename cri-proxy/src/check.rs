//! `attestgate-proxy --check-config`: the configuration in force, flags and
//! defaults applied, written back as the TOML the file takes, and what it
//! names checked the way the daemon will use it, so that a node
//! administrator learns of a missing bundle or an unwritable audit
//! directory before kubelet does.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use attestgate_node::FailMode;
use attestgate_node::freshness::Freshness;
use attestgate_policy::{Bundle, RegistryAttestors};
use attestgate_registry::access::Registries;

use crate::config::{Config, CvAction};

/// The configuration as a file that, read back, gives the same
/// configuration: every key the proxy reads, with its effective value;
/// keys without one (no cluster, no metrics) are left out, as they would
/// be from the file.
pub fn effective_toml(config: &Config) -> String {
    let mut table = toml::Table::new();
    let mut put = |key: &str, value: toml::Value| {
        table.insert(key.to_string(), value);
    };
    let path = |p: &Path| toml::Value::String(p.display().to_string());
    let node = &config.node;
    put("listen", path(&config.listen));
    put("runtime_endpoint", path(&config.runtime_endpoint));
    put("image_endpoint", path(&config.image_endpoint));
    put("bundle", path(&node.bundle));
    if let Some(cluster) = &node.evaluation.cluster {
        put("cluster", cluster.as_str().into());
    }
    put("audit_log", path(&node.audit_log));
    if let Some(addr) = config.metrics_listen {
        put("metrics_listen", addr.to_string().into());
    }
    let fail_mode = match node.fail_mode {
        FailMode::Closed => "closed",
        FailMode::Open => "open",
    };
    put("fail_mode", fail_mode.into());
    put(
        "system_images",
        strings(node.evaluation.system_images.iter().map(|p| p.as_str())),
    );
    put(
        "strict_repository",
        node.evaluation.strict_repository.into(),
    );
    put(
        "platform_policy_enforce",
        node.evaluation.platform_policy_enforce.into(),
    );
    put(
        "log_format",
        if config.log_json { "json" } else { "text" }.into(),
    );
    put(
        "max_connections",
        i64::try_from(config.max_connections)
            .unwrap_or(i64::MAX)
            .into(),
    );
    put("handshake_timeout", span(config.handshake_timeout).into());
    put("pull_timeout", span(config.pull_timeout).into());
    put("memory_budget", size(config.memory_budget as u64).into());
    put("cv_interval", span(config.cv_interval).into());
    let cv_action = match config.cv_action {
        CvAction::Log => "log",
        CvAction::Stop => "stop",
        CvAction::Off => "off",
    };
    put("cv_action", cv_action.into());
    let attestors: Vec<&str> = match &node.evaluation.registry_attestors {
        RegistryAttestors::None => Vec::new(),
        RegistryAttestors::All => vec!["*"],
        RegistryAttestors::Named(names) => names.iter().map(String::as_str).collect(),
    };
    put("registry_attestors", strings(attestors.into_iter()));
    put("attestation_cache", path(&node.attestation_cache));
    put("registry_timeout", span(node.registries.timeout).into());
    if let Some(credentials) = &node.registries.credentials {
        put("registry_credentials", path(credentials));
    }
    let mut registries: std::collections::BTreeMap<&str, toml::Table> = Default::default();
    for host in &node.registries.plain_http {
        registries
            .entry(host)
            .or_default()
            .insert("plain_http".into(), true.into());
    }
    for (host, ca_file) in &node.registries.extra_ca {
        registries
            .entry(host)
            .or_default()
            .insert("ca_file".into(), path(ca_file));
    }
    if !registries.is_empty() {
        let registries = registries
            .into_iter()
            .map(|(host, entry)| (host.to_string(), toml::Value::Table(entry)))
            .collect();
        put("registries", toml::Value::Table(registries));
    }
    let mut out = String::from("# attestgate-proxy: the configuration in force\n");
    match &config.file {
        Some(file) => {
            let _ = writeln!(out, "# read from {}, flags applied", file.display());
        }
        None => out.push_str("# no configuration file: defaults, flags applied\n"),
    }
    out.push_str(&toml::to_string(&table).unwrap_or_default());
    out
}

fn strings<'s>(items: impl Iterator<Item = &'s str>) -> toml::Value {
    toml::Value::Array(items.map(toml::Value::from).collect())
}

/// A duration as the file writes it, in the largest unit that holds it
/// whole (`90s`, `5m`, `1h`, `7d`).
pub fn span(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let units = [("d", 86_400), ("h", 3600), ("m", 60)];
    match units
        .iter()
        .find(|(_, scale)| seconds != 0 && seconds.is_multiple_of(*scale))
    {
        Some((unit, scale)) => format!("{}{unit}", seconds / scale),
        None => format!("{seconds}s"),
    }
}

/// A size as the file writes it (the file takes whole KiB only).
pub fn size(bytes: u64) -> String {
    let units = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    match units.iter().find(|(_, scale)| bytes.is_multiple_of(*scale)) {
        Some((unit, scale)) => format!("{}{unit}", bytes / scale),
        None => format!("{}KiB", bytes.div_ceil(1 << 10)),
    }
}

/// What would stop the daemon from starting or from deciding, each a
/// sentence naming the key and what to do; empty when none.
pub fn problems(config: &Config) -> Vec<String> {
    let node = &config.node;
    let mut found = Vec::new();
    if let Err(problem) = bundle_loads(&node.bundle) {
        found.push(problem);
    }
    if let Err(problem) = writable_file("audit_log", &node.audit_log) {
        found.push(problem);
    }
    if let Err(problem) = creatable_dir("listen", &config.listen) {
        found.push(problem);
    }
    for (key, socket) in [
        ("runtime_endpoint", &config.runtime_endpoint),
        ("image_endpoint", &config.image_endpoint),
    ] {
        if key == "image_endpoint" && config.image_endpoint == config.runtime_endpoint {
            continue;
        }
        let dir = socket.parent().unwrap_or(Path::new("/"));
        if !dir.is_dir() {
            found.push(format!(
                "{key} {}: its directory {} does not exist (is containerd installed, and is this its socket?)",
                socket.display(),
                dir.display()
            ));
        }
    }
    if let Err(problem) = creatable_dir("attestation_cache", &node.attestation_cache.join("entry"))
    {
        found.push(problem);
    }
    let access = &node.registries;
    if let Err(e) = Registries::load(
        access.plain_http.clone(),
        &access.extra_ca,
        access.credentials.clone(),
        access.timeout,
    ) {
        let consequence = if node.evaluation.registry_attestors.is_none() {
            "the proxy starts, but looks up no registry signatures"
        } else {
            "the proxy will not start while registry_attestors is set"
        };
        found.push(format!("registries: {e} ({consequence})"));
    }
    found
}

fn bundle_loads(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        return Err(format!(
            "bundle {}: no such directory; every decision would fail (put policy.yaml, attestors/ and attestations/ there, or configure attestgate-sync)",
            dir.display()
        ));
    }
    let resolved = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    Bundle::load(&resolved).map_err(|e| {
        format!(
            "bundle {}: invalid, every decision would fail (see `attestgate policy check {}`): {e}",
            dir.display(),
            dir.display()
        )
    })?;
    match Freshness::of(&resolved) {
        Ok(Some(freshness)) => match freshness.lapsed(time::OffsetDateTime::now_utc()) {
            Some(why) => Err(format!("bundle {}: {why}", dir.display())),
            None => Ok(()),
        },
        Ok(None) => Ok(()),
        Err(e) => Err(format!("bundle {}: {e}", dir.display())),
    }
}

/// A file the daemon appends to: its directory must exist (or be
/// creatable) and let us write, and the file, if there, be writable.
fn writable_file(key: &str, file: &Path) -> Result<(), String> {
    creatable_dir(key, file)?;
    if file.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(file)
            .map_err(|e| format!("{key} {}: cannot be appended to: {e}", file.display()))?;
    }
    Ok(())
}

/// `path`'s directory exists and can be written, or the nearest directory
/// above it that does exist can, so the daemon can make the rest.
fn creatable_dir(key: &str, path: &Path) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut existing: PathBuf = dir.to_path_buf();
    while !existing.exists() {
        match existing.parent() {
            Some(parent) => existing = parent.to_path_buf(),
            None => break,
        }
    }
    if !existing.is_dir() {
        return Err(format!(
            "{key} {}: {} is not a directory",
            path.display(),
            existing.display()
        ));
    }
    if let Err(e) = rustix::fs::access(&existing, rustix::fs::Access::WRITE_OK) {
        let what = if existing == dir {
            "its directory"
        } else {
            "the directory that would hold it"
        };
        return Err(format!(
            "{key} {}: {what} {} is not writable: {e}",
            path.display(),
            existing.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Flags;

    fn load(text: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, text).unwrap();
        let config = Config::load(Flags {
            config: Some(file),
            ..Flags::default()
        })
        .unwrap();
        (dir, config)
    }

    #[test]
    fn the_effective_configuration_reads_back_as_itself() {
        let (dir, config) = load(
            "cluster = \"us-east1-b.prod\"\nfail_mode = \"open\"\nmemory_budget = \"1GiB\"\n\
             handshake_timeout = \"90s\"\ncv_interval = \"2h\"\ncv_action = \"stop\"\n\
             registry_attestors = [\"projects/p/attestors/a\"]\nmetrics_listen = \"127.0.0.1:9464\"\n\
             [registries.\"reg.test:5000\"]\nplain_http = true\n\
             [registries.\"reg.example\"]\nca_file = \"/etc/ca.pem\"\n",
        );
        let text = effective_toml(&config);
        for line in [
            "cluster = \"us-east1-b.prod\"",
            "fail_mode = \"open\"",
            "memory_budget = \"1GiB\"",
            "handshake_timeout = \"90s\"",
            "cv_interval = \"2h\"",
            "cv_action = \"stop\"",
            "pull_timeout = \"30m\"",
            "listen = \"/run/attestgate/cri.sock\"",
            "system_images = [\"registry.k8s.io/pause*\"]",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        let again = dir.path().join("again.toml");
        std::fs::write(&again, &text).unwrap();
        let reread = Config::load(Flags {
            config: Some(again),
            ..Flags::default()
        })
        .unwrap();
        let strip = |t: &str| t.lines().skip(2).collect::<Vec<_>>().join("\n");
        assert_eq!(strip(&effective_toml(&reread)), strip(&text));
        assert!(text.contains("[registries.\"reg.test:5000\"]\nplain_http = true"));
        assert!(text.contains("ca_file = \"/etc/ca.pem\""));
    }

    #[test]
    fn durations_and_sizes_are_written_in_the_largest_whole_unit() {
        assert_eq!(span(Duration::from_secs(90)), "90s");
        assert_eq!(span(Duration::from_secs(300)), "5m");
        assert_eq!(span(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(span(Duration::ZERO), "0s");
        assert_eq!(size(64 << 20), "64MiB");
        assert_eq!(size(3 << 29), "1536MiB");
        assert_eq!(size(1 << 30), "1GiB");
    }

    #[test]
    fn what_the_configuration_names_is_checked() {
        let root = tempfile::tempdir().unwrap();
        let missing = root.path().join("nowhere/bundle");
        let (_dir, config) = load(&format!(
            "bundle = \"{}\"\naudit_log = \"{}/sub/audit.jsonl\"\nruntime_endpoint = \"{}/gone/c.sock\"\n\
             listen = \"{}/run/a/cri.sock\"\nattestation_cache = \"{}/cache\"\n",
            missing.display(),
            root.path().display(),
            root.path().display(),
            root.path().display(),
            root.path().display(),
        ));
        let found = problems(&config);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found[0].starts_with("bundle ") && found[0].contains("no such directory"));
        assert!(found[1].starts_with("runtime_endpoint ") && found[1].contains("does not exist"));

        let bundle = root.path().join("bundle");
        std::fs::create_dir(&bundle).unwrap();
        std::fs::write(
            bundle.join("policy.yaml"),
            "defaultAdmissionRule: [nonsense\n",
        )
        .unwrap();
        let (_dir, config) = load(&format!(
            "bundle = \"{}\"\naudit_log = \"{}/audit.jsonl\"\n",
            bundle.display(),
            root.path().display()
        ));
        let found = problems(&config);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("bundle ") && p.contains("invalid")),
            "{found:#?}"
        );
        std::fs::write(
            bundle.join("policy.yaml"),
            "defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n",
        )
        .unwrap();
        let found = problems(&config);
        assert!(
            !found.iter().any(|p| p.starts_with("bundle ")),
            "{found:#?}"
        );
    }
}
