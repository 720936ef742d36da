//! Where kubelet sends its CRI calls, worked out as systemd and kubelet
//! would: kubelet.service and its drop-ins (ExecStart, Environment=,
//! EnvironmentFile=, as kubeadm writes them), the flags that gives, and
//! the KubeletConfiguration file `--config` names with its `--config-dir`
//! drop-ins. A flag wins over the file, as in kubelet.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::endpoint;
use super::report::Check;
use super::root::Root;

const NAME: &str = "kubelet";

/// Where systemd finds kubelet.service, the first one found winning.
const UNIT_FILES: &[&str] = &[
    "/etc/systemd/system/kubelet.service",
    "/run/systemd/system/kubelet.service",
    "/usr/lib/systemd/system/kubelet.service",
    "/lib/systemd/system/kubelet.service",
];

/// Where systemd finds drop-ins for it; a drop-in of the same name in an
/// earlier directory hides the later one.
const DROP_IN_DIRS: &[&str] = &[
    "/etc/systemd/system/kubelet.service.d",
    "/run/systemd/system/kubelet.service.d",
    "/usr/lib/systemd/system/kubelet.service.d",
    "/lib/systemd/system/kubelet.service.d",
];

/// kubelet's own default when neither a flag nor the file names one
/// (KubeletConfiguration v1beta1, Kubernetes 1.27 on).
pub const DEFAULT_RUNTIME_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("no kubelet unit: none of {}", UNIT_FILES.join(", "))]
    NoUnit,
    #[error("kubelet.service is masked ({0} links to /dev/null)")]
    Masked(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the kubelet unit has no ExecStart (read {0})")]
    NoExecStart(String),
    #[error("{path}: not a KubeletConfiguration: {message}")]
    Config { path: String, message: String },
}

/// One endpoint as kubelet will use it, and what set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    pub from: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub runtime: Setting,
    pub image: Setting,
}

/// A word of the command line and the file it came from (the ExecStart
/// line's, or the one that set the variable it was expanded from).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    text: String,
    from: String,
}

/// The [Service] settings that make kubelet's command line, applied in
/// the order systemd reads the files.
#[derive(Debug, Default)]
struct Service {
    exec_start: Vec<(String, String)>,
    environment: Vec<(String, String, String)>,
    environment_files: Vec<(String, String)>,
}

impl Service {
    fn apply(&mut self, text: &str, file: &str) {
        for (key, value) in directives(text) {
            match key.as_str() {
                // An empty assignment resets the list, as a drop-in that
                // replaces ExecStart writes `ExecStart=` first.
                "ExecStart" if value.is_empty() => self.exec_start.clear(),
                "ExecStart" => self.exec_start.push((value, file.to_string())),
                "Environment" if value.is_empty() => self.environment.clear(),
                "Environment" => {
                    for assignment in split_words(&value) {
                        if let Some((name, value)) = assignment.split_once('=') {
                            self.environment.push((
                                name.to_string(),
                                value.to_string(),
                                file.to_string(),
                            ));
                        }
                    }
                }
                "EnvironmentFile" if value.is_empty() => self.environment_files.clear(),
                "EnvironmentFile" => self.environment_files.push((value, file.to_string())),
                _ => {}
            }
        }
    }
}

/// The `[Service]` section's `Key=Value` lines, continuation lines joined.
fn directives(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if pending.is_empty() && (line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        let line = format!("{pending}{line}");
        pending.clear();
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        if section != "Service" {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            out.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    out
}

/// Words as systemd splits them: at whitespace, with double and single
/// quotes grouping and backslash escaping.
fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"') | None, '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// An environment file's `KEY=VALUE` lines, as systemd reads them.
fn environment_file(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for raw in text.lines() {
        if let Some(head) = raw.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        let line = format!("{pending}{raw}");
        pending.clear();
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = match value.chars().next() {
            Some('"' | '\'') => split_words(value).join(" "),
            _ => value.to_string(),
        };
        out.push((key.trim().to_string(), value));
    }
    out
}

/// The environment kubelet starts with: `Environment=` in order, then the
/// environment files in order, which systemd lets override it.
fn environment(
    root: &Root,
    service: &Service,
) -> Result<BTreeMap<String, (String, String)>, KubeletError> {
    let mut env = BTreeMap::new();
    for (name, value, file) in &service.environment {
        env.insert(name.clone(), (value.clone(), file.clone()));
    }
    for (spec, _) in &service.environment_files {
        let (optional, path) = match spec.strip_prefix('-') {
            Some(path) => (true, path),
            None => (false, spec.as_str()),
        };
        let text = match std::fs::read_to_string(root.path(Path::new(path))) {
            Ok(text) => text,
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(KubeletError::Read {
                    path: path.to_string(),
                    source,
                });
            }
        };
        for (name, value) in environment_file(&text) {
            env.insert(name, (value, path.to_string()));
        }
    }
    Ok(env)
}

/// The command line: `$NAME` alone splits into words, `${NAME}` is
/// replaced inside its word, as systemd expands them.
fn command_line(
    exec_start: &str,
    file: &str,
    env: &BTreeMap<String, (String, String)>,
) -> Vec<Word> {
    let line = exec_start.trim_start_matches(['-', '@', ':', '+', '!']);
    let mut out = Vec::new();
    for word in split_words(line) {
        if let Some(name) = word.strip_prefix('$').filter(|n| is_name(n)) {
            if let Some((value, from)) = env.get(name) {
                out.extend(split_words(value).into_iter().map(|text| Word {
                    text,
                    from: from.clone(),
                }));
            }
            continue;
        }
        let mut text = String::new();
        let mut from = file.to_string();
        let mut rest = word.as_str();
        while let Some(start) = rest.find("${") {
            text.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            match after.find('}') {
                Some(end) => {
                    if let Some((value, set_in)) = env.get(&after[..end]) {
                        text.push_str(value);
                        from = set_in.clone();
                    }
                    rest = &after[end + 1..];
                }
                None => {
                    text.push_str(&rest[start..]);
                    rest = "";
                }
            }
        }
        text.push_str(rest);
        out.push(Word { text, from });
    }
    out
}

fn is_name(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The flags of ours on a kubelet command line, the last of each winning
/// as in kubelet's flag parser.
fn flags(words: &[Word]) -> BTreeMap<&'static str, Setting> {
    const WANTED: &[&str] = &[
        "container-runtime-endpoint",
        "image-service-endpoint",
        "config",
        "config-dir",
    ];
    let mut found = BTreeMap::new();
    let mut i = 1; // past the program
    while i < words.len() {
        let text = words[i].text.as_str();
        let origin = words[i].from.clone();
        if text == "--" {
            break;
        }
        if let Some(flag) = text.strip_prefix("--") {
            let (name, inline) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (flag, None),
            };
            if let Some(wanted) = WANTED.iter().find(|w| **w == name) {
                let value = match inline {
                    Some(value) => Some(value),
                    None => {
                        i += 1;
                        words.get(i).map(|w| w.text.clone())
                    }
                };
                if let Some(value) = value {
                    found.insert(
                        *wanted,
                        Setting {
                            value,
                            from: format!("--{wanted} in {origin}"),
                        },
                    );
                }
            }
        }
        i += 1;
    }
    found
}

/// The endpoint keys of a KubeletConfiguration; the rest is kubelet's.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct KubeletConfiguration {
    container_runtime_endpoint: Option<String>,
    image_service_endpoint: Option<String>,
}

fn read_configuration(root: &Root, path: &str) -> Result<KubeletConfiguration, KubeletError> {
    let text = std::fs::read_to_string(root.path(Path::new(path))).map_err(|source| {
        KubeletError::Read {
            path: path.to_string(),
            source,
        }
    })?;
    if text.trim().is_empty() {
        return Ok(KubeletConfiguration::default());
    }
    serde_saphyr::from_str::<Option<KubeletConfiguration>>(&text)
        .map(Option::unwrap_or_default)
        .map_err(|e| KubeletError::Config {
            path: path.to_string(),
            message: e.to_string(),
        })
}

/// The endpoints the KubeletConfiguration files set: the `--config` file,
/// then the `--config-dir` drop-ins (`*.conf`, in name order), each later
/// one overriding.
fn configured(
    root: &Root,
    config: Option<&str>,
    config_dir: Option<&str>,
) -> Result<(Option<Setting>, Option<Setting>), KubeletError> {
    let mut files: Vec<String> = config.map(str::to_string).into_iter().collect();
    if let Some(dir) = config_dir {
        let mut names: Vec<String> = match std::fs::read_dir(root.path(Path::new(dir))) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".conf"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(KubeletError::Read {
                    path: dir.to_string(),
                    source,
                });
            }
        };
        names.sort();
        files.extend(
            names
                .into_iter()
                .map(|n| Path::new(dir).join(n).to_string_lossy().into_owned()),
        );
    }
    let (mut runtime, mut image) = (None, None);
    for file in files {
        let read = read_configuration(root, &file)?;
        let setting = |value: String, key: &str| Setting {
            value,
            from: format!("{key} in {file}"),
        };
        if let Some(value) = read.container_runtime_endpoint {
            runtime = Some(setting(value, "containerRuntimeEndpoint"));
        }
        if let Some(value) = read.image_service_endpoint {
            image = Some(setting(value, "imageServiceEndpoint"));
        }
    }
    Ok((runtime, image))
}

/// The endpoints kubelet uses on this node, and where each was set.
pub fn discover(root: &Root) -> Result<Endpoints, KubeletError> {
    let unit = UNIT_FILES
        .iter()
        .find(|p| std::fs::symlink_metadata(root.path(Path::new(p))).is_ok())
        .ok_or(KubeletError::NoUnit)?;
    if std::fs::read_link(root.path(Path::new(unit))).is_ok_and(|t| t == Path::new("/dev/null")) {
        return Err(KubeletError::Masked(unit.to_string()));
    }
    let mut read = vec![unit.to_string()];
    let mut drop_ins: BTreeMap<String, String> = BTreeMap::new();
    for dir in DROP_IN_DIRS {
        let Ok(entries) = std::fs::read_dir(root.path(Path::new(dir))) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".conf") {
                drop_ins
                    .entry(name.clone())
                    .or_insert_with(|| format!("{dir}/{name}"));
            }
        }
    }
    read.extend(drop_ins.into_values());
    let mut service = Service::default();
    for file in &read {
        let text = std::fs::read_to_string(root.follow(Path::new(file))).map_err(|source| {
            KubeletError::Read {
                path: file.clone(),
                source,
            }
        })?;
        service.apply(&text, file);
    }
    let env = environment(root, &service)?;
    let (exec_start, file) = service
        .exec_start
        .last()
        .ok_or_else(|| KubeletError::NoExecStart(read.join(", ")))?;
    let words = command_line(exec_start, file, &env);
    let mut flags = flags(&words);
    let (runtime_file, image_file) = configured(
        root,
        flags.get("config").map(|s| s.value.as_str()),
        flags.get("config-dir").map(|s| s.value.as_str()),
    )?;
    let runtime = flags
        .remove("container-runtime-endpoint")
        .or(runtime_file)
        .unwrap_or_else(|| Setting {
            value: DEFAULT_RUNTIME_ENDPOINT.to_string(),
            from: "kubelet's default: no flag or config file sets it".into(),
        });
    let image = flags
        .remove("image-service-endpoint")
        .or(image_file)
        .unwrap_or_else(|| Setting {
            value: runtime.value.clone(),
            from: "the runtime endpoint, as nothing sets it".into(),
        });
    Ok(Endpoints { runtime, image })
}

/// The kubelet running now, if one is: its pid and the command line it
/// was started with, from /proc. A drop-in installed since changes the
/// units, not the process, until kubelet is restarted.
fn running(root: &Root) -> Option<(u32, Vec<Word>)> {
    let entries = std::fs::read_dir(root.path(Path::new("/proc"))).ok()?;
    for entry in entries.filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        if comm.trim_end() != "kubelet" {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let from = format!("the running kubelet's command line (pid {pid})");
        let words = cmdline
            .split(|b| *b == 0)
            .filter(|w| !w.is_empty())
            .map(|w| Word {
                text: String::from_utf8_lossy(w).into_owned(),
                from: from.clone(),
            })
            .collect();
        return Some((pid, words));
    }
    None
}

pub fn check(root: &Root, listen: &Path, runtime_endpoint: &str) -> Check {
    let remedy = format!(
        "point kubelet at the proxy: install \
         /usr/share/doc/attestgate/examples/kubelet/20-attestgate.conf as \
         /etc/systemd/system/kubelet.service.d/20-attestgate.conf (or set containerRuntimeEndpoint \
         and imageServiceEndpoint to unix://{0} in kubelet's config file, which flags \
         override), then \
         `systemctl daemon-reload && systemctl restart kubelet`",
        listen.display()
    );
    let endpoints = match discover(root) {
        Ok(endpoints) => endpoints,
        Err(e) => return Check::fail(NAME, e.to_string(), remedy),
    };
    let mut wrong = Vec::new();
    for (what, setting) in [("runtime", &endpoints.runtime), ("image", &endpoints.image)] {
        if !endpoint::same_socket(&setting.value, listen) {
            let direct = if endpoint::same_socket(&setting.value, Path::new(runtime_endpoint)) {
                ": kubelet talks to the runtime directly, past the proxy"
            } else {
                ""
            };
            wrong.push(format!(
                "{what} endpoint {} ({}) is not the proxy's listen {}{direct}",
                setting.value,
                setting.from,
                listen.display()
            ));
        }
    }
    if wrong.is_empty()
        && let Some((pid, words)) = running(root)
    {
        let started_with = flags(&words);
        let stale: Vec<String> = ["container-runtime-endpoint", "image-service-endpoint"]
            .iter()
            .filter_map(|name| {
                let setting = started_with.get(name)?;
                (!endpoint::same_socket(&setting.value, listen))
                    .then(|| format!("--{name}={}", setting.value))
            })
            .collect();
        if !stale.is_empty() {
            return Check::fail(
                NAME,
                format!(
                    "kubelet's units point it at the proxy's {}, but the kubelet running (pid {pid}) \
                     was started with {}: it has not been restarted since",
                    listen.display(),
                    stale.join(" ")
                ),
                "`systemctl daemon-reload && systemctl restart kubelet`",
            );
        }
    }
    if wrong.is_empty() {
        Check::pass(
            NAME,
            format!(
                "runtime and image endpoints are the proxy's {} (runtime: {}; image: {})",
                listen.display(),
                endpoints.runtime.from,
                endpoints.image.from
            ),
        )
    } else {
        Check::fail(NAME, wrong.join("; "), remedy)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const KUBEADM_UNIT: &str = "[Unit]\nDescription=kubelet\n\n[Service]\n\
        ExecStart=/usr/bin/kubelet\nRestart=always\n";

    /// kubeadm's own drop-in, as its Debian package installs it.
    const KUBEADM_DROP_IN: &str = r#"# Note: This dropin only works with kubeadm and kubelet v1.11+
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
# This is a file that "kubeadm init" and "kubeadm join" generates at runtime
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
"#;

    const KUBEADM_FLAGS: &str = "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock --pod-infra-container-image=registry.k8s.io/pause:3.9\"\n";

    const ATTESTGATE_DROP_IN: &str = include_str!("../../../packaging/kubelet/20-attestgate.conf");

    use crate::doctor::root::laid_out as node;

    /// A kubeadm node (its unit, its drop-in and the flags file `kubeadm
    /// init` writes) with `more` laid out beside it.
    fn kubeadm_node(more: &[(&str, &str)]) -> (tempfile::TempDir, Root) {
        let mut files = vec![
            ("/lib/systemd/system/kubelet.service", KUBEADM_UNIT),
            (
                "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
                KUBEADM_DROP_IN,
            ),
            ("/var/lib/kubelet/kubeadm-flags.env", KUBEADM_FLAGS),
        ];
        files.extend_from_slice(more);
        node(&files)
    }

    #[test]
    fn systemd_words_group_quotes_and_escapes() {
        assert_eq!(
            split_words(r#"a "b c" 'd e' f\ g "h\"i" "x=1 2"y"#),
            vec!["a", "b c", "d e", "f g", "h\"i", "x=1 2y"]
        );
        assert!(split_words("   ").is_empty());
        assert_eq!(split_words(r#""""#), vec![""]);
    }

    #[test]
    fn only_the_service_section_counts_and_continuations_join() {
        let text = "[Unit]\nExecStart=/not/this\n[Service]\n# ExecStart=/commented\n\
                    ExecStart=/usr/bin/kubelet \\\n  --v=2\n";
        assert_eq!(
            directives(text),
            vec![(
                "ExecStart".to_string(),
                "/usr/bin/kubelet  --v=2".to_string()
            )]
        );
    }

    #[test]
    fn environment_files_unquote_and_skip_comments() {
        let env = environment_file(
            "# comment\nA=1\nB=\"two words\"\nexport C='x y'\n\nD = spaced \nE=\"cont \\\nmore\"\n",
        );
        assert_eq!(
            env,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x y".into()),
                ("D".into(), "spaced".into()),
                ("E".into(), "cont more".into()),
            ]
        );
    }

    #[test]
    fn kubeadm_flags_file_sets_the_endpoint_when_nothing_overrides_it() {
        let (_dir, root) = kubeadm_node(&[(
            "/var/lib/kubelet/config.yaml",
            "kind: KubeletConfiguration\n",
        )]);
        let found = discover(&root).unwrap();
        assert_eq!(
            found.runtime.value,
            "unix:///var/run/containerd/containerd.sock"
        );
        assert!(
            found
                .runtime
                .from
                .contains("/var/lib/kubelet/kubeadm-flags.env"),
            "{found:?}"
        );
        // The image endpoint follows the runtime's.
        assert_eq!(found.image.value, found.runtime.value);
        let check = check(
            &root,
            Path::new("/run/attestgate/cri.sock"),
            "/run/containerd/containerd.sock",
        );
        assert!(!check.ok);
        assert!(check.detail.contains("directly"), "{}", check.detail);
    }

    #[test]
    fn attestgate_drop_in_wins_over_kubeadm_flags() {
        let (_dir, root) = kubeadm_node(&[
            (
                "/etc/systemd/system/kubelet.service.d/20-attestgate.conf",
                ATTESTGATE_DROP_IN,
            ),
            (
                "/var/lib/kubelet/config.yaml",
                "kind: KubeletConfiguration\n",
            ),
        ]);
        let found = discover(&root).unwrap();
        assert_eq!(found.runtime.value, "unix:///run/attestgate/cri.sock");
        assert_eq!(found.image.value, "unix:///run/attestgate/cri.sock");
        assert!(
            found.runtime.from.contains("20-attestgate.conf"),
            "{found:?}"
        );
        let check = check(
            &root,
            Path::new("/run/attestgate/cri.sock"),
            "/run/containerd/containerd.sock",
        );
        assert!(check.ok, "{check:?}");
    }

    #[test]
    fn a_kubelet_not_restarted_since_the_drop_in_is_named() {
        let files = [
            (
                "/etc/systemd/system/kubelet.service.d/20-attestgate.conf",
                ATTESTGATE_DROP_IN,
            ),
            (
                "/var/lib/kubelet/config.yaml",
                "kind: KubeletConfiguration\n",
            ),
            ("/proc/4242/comm", "kubelet\n"),
            (
                "/proc/4242/cmdline",
                "/usr/bin/kubelet\0--config=/var/lib/kubelet/config.yaml\0\
                 --container-runtime-endpoint=unix:///var/run/containerd/containerd.sock\0",
            ),
            ("/proc/77/comm", "containerd\n"),
            ("/proc/77/cmdline", "containerd\0"),
        ];
        let proxy = Path::new("/run/attestgate/cri.sock");
        let containerd = "/run/containerd/containerd.sock";
        let (_dir, root) = kubeadm_node(&files);
        let verdict = check(&root, proxy, containerd);
        assert!(!verdict.ok, "{verdict:?}");
        assert!(
            verdict.detail.contains("pid 4242")
                && verdict.detail.contains("containerd.sock")
                && verdict.detail.contains("not been restarted"),
            "{}",
            verdict.detail
        );
        // Restarted with the drop-in's flags, it passes.
        let mut restarted = files;
        restarted[3].1 = "/usr/bin/kubelet\0--container-runtime-endpoint=unix:///run/attestgate/cri.sock\0\
                          --image-service-endpoint=unix:///run/attestgate/cri.sock\0";
        let (_dir, root) = kubeadm_node(&restarted);
        assert!(check(&root, proxy, containerd).ok);
    }

    #[test]
    fn an_environment_file_overrides_environment_whatever_the_order() {
        // /etc/default/kubelet, as the kubelet package ships it, empties
        // KUBELET_EXTRA_ARGS: systemd lets the file win over Environment=.
        let (_dir, root) = kubeadm_node(&[
            (
                "/etc/systemd/system/kubelet.service.d/20-attestgate.conf",
                "[Service]\nEnvironment=\"KUBELET_EXTRA_ARGS=--container-runtime-endpoint=unix:///run/attestgate/cri.sock\"\n",
            ),
            ("/etc/default/kubelet", "KUBELET_EXTRA_ARGS=\n"),
            (
                "/var/lib/kubelet/config.yaml",
                "kind: KubeletConfiguration\n",
            ),
        ]);
        let found = discover(&root).unwrap();
        assert_eq!(
            found.runtime.value,
            "unix:///var/run/containerd/containerd.sock"
        );
    }

    #[test]
    fn the_packaged_drop_in_holds_against_an_emptying_environment_file() {
        let (_dir, root) = kubeadm_node(&[
            (
                "/etc/systemd/system/kubelet.service.d/20-attestgate.conf",
                ATTESTGATE_DROP_IN,
            ),
            ("/etc/default/kubelet", "KUBELET_EXTRA_ARGS=\n"),
            (
                "/var/lib/kubelet/config.yaml",
                "kind: KubeletConfiguration\ncontainerRuntimeEndpoint: unix:///run/containerd/containerd.sock\n",
            ),
        ]);
        let found = discover(&root).unwrap();
        assert_eq!(found.runtime.value, "unix:///run/attestgate/cri.sock");
        assert_eq!(found.image.value, "unix:///run/attestgate/cri.sock");
    }

    #[test]
    fn the_config_file_sets_endpoints_and_flags_win_over_it() {
        let yaml = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
                    cgroupDriver: cgroupfs\ncontainerRuntimeEndpoint: unix:///run/attestgate/cri.sock\n\
                    imageServiceEndpoint: unix:///run/other.sock\n";
        let (_dir, root) = node(&[
            (
                "/etc/systemd/system/kubelet.service",
                "[Service]\nExecStart=/usr/bin/kubelet --config /etc/kubelet.yaml\n",
            ),
            ("/etc/kubelet.yaml", yaml),
        ]);
        let found = discover(&root).unwrap();
        assert_eq!(found.runtime.value, "unix:///run/attestgate/cri.sock");
        assert_eq!(
            found.runtime.from,
            "containerRuntimeEndpoint in /etc/kubelet.yaml"
        );
        assert_eq!(found.image.value, "unix:///run/other.sock");

        let (_dir, root) = node(&[
            (
                "/etc/systemd/system/kubelet.service",
                "[Service]\nExecStart=/usr/bin/kubelet --config=/etc/kubelet.yaml \
                 --image-service-endpoint=/run/attestgate/cri.sock\n",
            ),
            ("/etc/kubelet.yaml", yaml),
        ]);
        let found = discover(&root).unwrap();
        assert_eq!(found.image.value, "/run/attestgate/cri.sock");
        assert!(found.image.from.starts_with("--image-service-endpoint"));
    }

    #[test]
    fn config_dir_drop_ins_override_the_config_file() {
        let (_dir, root) = node(&[
            (
                "/etc/systemd/system/kubelet.service",
                "[Service]\nExecStart=/usr/bin/kubelet --config=/var/lib/kubelet/config.yaml \
                 --config-dir=/etc/kubernetes/kubelet.conf.d\n",
            ),
            (
                "/var/lib/kubelet/config.yaml",
                "containerRuntimeEndpoint: unix:///run/containerd/containerd.sock\n",
            ),
            (
                "/etc/kubernetes/kubelet.conf.d/50-attestgate.conf",
                "containerRuntimeEndpoint: unix:///run/attestgate/cri.sock\n",
            ),
        ]);
        let found = discover(&root).unwrap();
        assert_eq!(found.runtime.value, "unix:///run/attestgate/cri.sock");
        assert_eq!(found.image.value, "unix:///run/attestgate/cri.sock");
    }

    #[test]
    fn without_flags_or_file_kubelet_takes_its_default() {
        let (_dir, root) = node(&[(
            "/lib/systemd/system/kubelet.service",
            "[Service]\nExecStart=/usr/bin/kubelet\n",
        )]);
        let found = discover(&root).unwrap();
        assert_eq!(found.runtime.value, DEFAULT_RUNTIME_ENDPOINT);
    }

    #[test]
    fn mistakes_in_the_files_are_named() {
        let (_dir, root) = node(&[]);
        assert!(matches!(discover(&root), Err(KubeletError::NoUnit)));
        let (_dir, root) = node(&[(
            "/lib/systemd/system/kubelet.service",
            "[Service]\nExecStart=/usr/bin/kubelet --config=/etc/k.yaml\n",
        )]);
        let e = discover(&root).unwrap_err().to_string();
        assert!(e.contains("/etc/k.yaml"), "{e}");
        let (_dir, root) = node(&[
            (
                "/lib/systemd/system/kubelet.service",
                "[Service]\nExecStart=/usr/bin/kubelet --config=/etc/k.yaml\n",
            ),
            ("/etc/k.yaml", "containerRuntimeEndpoint: [1, 2]\n"),
        ]);
        let e = discover(&root).unwrap_err().to_string();
        assert!(
            e.contains("/etc/k.yaml") && e.contains("KubeletConfiguration"),
            "{e}"
        );
        let (_dir, root) = node(&[(
            "/lib/systemd/system/kubelet.service",
            "[Service]\nEnvironmentFile=/etc/missing\nExecStart=/usr/bin/kubelet\n",
        )]);
        assert!(
            discover(&root)
                .unwrap_err()
                .to_string()
                .contains("/etc/missing")
        );
    }
}
