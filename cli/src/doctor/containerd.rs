//! Whether containerd knows attestgate's shim: its config file and the
//! files it imports, read as containerd merges them, for a CRI runtime of
//! type `io.containerd.attestgate.v2`; and whether the shim binary is
//! where containerd looks for it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use super::report::Check;
use super::root::Root;

pub const DEFAULT_CONFIG: &str = "/etc/containerd/config.toml";
pub const RUNTIME_TYPE: &str = "io.containerd.attestgate.v2";
/// The binary containerd derives from the runtime type
/// (`io.containerd.X.vN` → `containerd-shim-X-vN`).
pub const SHIM_BINARY: &str = "containerd-shim-attestgate-v2";

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("no {0}: containerd runs with its built-in defaults, which know no attestgate runtime")]
    Missing(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// A runtime of the CRI plugin, and the file that declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    pub name: String,
    pub runtime_type: String,
    /// The shim binary, when the runtime names one instead of containerd
    /// deriving it from the type.
    pub runtime_path: Option<String>,
    pub file: String,
}

/// What the merged configuration says about the CRI's runtimes.
#[derive(Debug, Default)]
pub struct Runtimes {
    pub runtimes: Vec<Runtime>,
    /// The CRI's default runtime, as `cri_file` sets it.
    pub default: Option<String>,
    /// Every file read, in the order containerd merges them.
    pub files: Vec<String>,
    /// The file whose CRI plugin section is in force.
    pub cri_file: Option<String>,
    /// Files whose CRI plugin section a later file replaced, each with the
    /// file that replaced it: containerd takes a plugin's section from the
    /// last file that has one, whole, so what the earlier one set is gone.
    pub replaced: Vec<(String, String)>,
}

impl Runtimes {
    pub fn attestgate(&self) -> Option<&Runtime> {
        self.runtimes
            .iter()
            .rev()
            .find(|r| r.runtime_type == RUNTIME_TYPE)
    }
}

/// The CRI plugin's table by config version: version 3 (containerd 2.x)
/// split the CRI into plugins and moved the runtimes; 1 had short names.
fn cri_plugin(version: i64) -> Option<&'static str> {
    match version {
        1 => Some("cri"),
        2 => Some("io.containerd.grpc.v1.cri"),
        3 => Some("io.containerd.cri.v1.runtime"),
        _ => None,
    }
}

/// Reads `path` (a node path) and what it imports, as containerd's
/// LoadConfig does: breadth first (a file, then the files it imports, then
/// theirs), each file at most once, each merged over what came before. A
/// plugin's section is not merged key by key: the last file that has one
/// replaces it whole (containerd's mergeConfig), so the CRI's runtimes and
/// default are those of that one file.
pub fn read(root: &Root, path: &str) -> Result<Runtimes, ContainerdError> {
    let mut out = Runtimes::default();
    if !root.path(Path::new(path)).exists() {
        return Err(ContainerdError::Missing(path.to_string()));
    }
    let mut pending = std::collections::VecDeque::from([path.to_string()]);
    let mut cri: Option<(String, toml::Value)> = None;
    while let Some(path) = pending.pop_front() {
        if out.files.contains(&path) {
            continue;
        }
        let (section, imports) = read_file(root, &path)?;
        out.files.push(path.clone());
        if let Some(section) = section {
            if let Some((earlier, _)) = &cri {
                out.replaced.push((earlier.clone(), path.clone()));
            }
            cri = Some((path, section));
        }
        pending.extend(imports);
    }
    if let Some((file, section)) = cri {
        if let Some(containerd) = section.get("containerd") {
            runtimes_of(containerd, &file, &mut out);
        }
        out.cri_file = Some(file);
    }
    Ok(out)
}

fn runtimes_of(containerd: &toml::Value, file: &str, out: &mut Runtimes) {
    if let Some(name) = containerd
        .get("default_runtime_name")
        .and_then(toml::Value::as_str)
    {
        out.default = Some(name.to_string());
    }
    let Some(runtimes) = containerd.get("runtimes").and_then(toml::Value::as_table) else {
        return;
    };
    for (name, runtime) in runtimes {
        let field = |key: &str| {
            runtime
                .get(key)
                .and_then(toml::Value::as_str)
                .map(str::to_string)
        };
        out.runtimes.push(Runtime {
            name: name.clone(),
            runtime_type: field("runtime_type").unwrap_or_default(),
            runtime_path: field("runtime_path").filter(|p| !p.is_empty()),
            file: file.to_string(),
        });
    }
}

/// One file's CRI plugin section, if it has one, and the files it
/// imports, in order.
fn read_file(
    root: &Root,
    path: &str,
) -> Result<(Option<toml::Value>, Vec<String>), ContainerdError> {
    let text = std::fs::read_to_string(root.path(Path::new(path))).map_err(|source| {
        ContainerdError::Read {
            path: path.to_string(),
            source,
        }
    })?;
    let invalid = |message: String| ContainerdError::Invalid {
        path: path.to_string(),
        message,
    };
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let version = match table.get("version") {
        None => 1,
        Some(toml::Value::Integer(v)) => *v,
        Some(other) => return Err(invalid(format!("version {other} is not a number"))),
    };
    let plugin = cri_plugin(version).ok_or_else(|| {
        invalid(format!(
            "config version {version} is not one containerd reads"
        ))
    })?;
    let section = table
        .get_mut("plugins")
        .and_then(toml::Value::as_table_mut)
        .and_then(|plugins| plugins.remove(plugin));
    let imports = match table.get("imports") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(format!("imports: {i} is not a path")))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => return Err(invalid(format!("imports: {other} is not a list"))),
    };
    let dir = Path::new(path).parent().unwrap_or(Path::new("/"));
    let mut found = Vec::new();
    for import in imports {
        // Relative to the importing file's directory, as containerd
        // resolves them.
        let pattern = dir.join(&import).to_string_lossy().into_owned();
        found.extend(expand(root, &pattern).map_err(&invalid)?);
    }
    Ok((section, found))
}

/// The node paths a glob names, sorted (containerd uses Go's
/// `filepath.Glob`): patterns in the file name only, which is where
/// containerd's own examples put them (`conf.d/*.toml`).
fn expand(root: &Root, pattern: &str) -> Result<Vec<String>, String> {
    let path = Path::new(pattern);
    let glob_chars = |s: &str| s.contains(['*', '?', '[']);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(Vec::new());
    };
    let name = name.to_string_lossy();
    if glob_chars(&dir.to_string_lossy()) {
        return Err(format!(
            "imports: {pattern}: a pattern in a directory name is not something doctor can follow"
        ));
    }
    if !glob_chars(&name) {
        // A plain path that is not there is skipped, as Go's Glob does.
        return Ok(root
            .path(path)
            .exists()
            .then(|| pattern.to_string())
            .into_iter()
            .collect());
    }
    if name.contains('[') {
        return Err(format!(
            "imports: {pattern}: character classes are not something doctor can follow"
        ));
    }
    let Ok(entries) = std::fs::read_dir(root.path(dir)) else {
        return Ok(Vec::new());
    };
    let mut found: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| matches(name.as_bytes(), n.as_bytes()))
        .map(|n| dir.join(n).to_string_lossy().into_owned())
        .collect();
    found.sort();
    Ok(found)
}

/// `*` and `?` as Go's `filepath.Match` reads them in one name.
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| matches(rest, &name[skip..])),
        Some((b'?', rest)) => !name.is_empty() && matches(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && matches(rest, &name[1..]),
    }
}

const RUNTIME: &str = "containerd";
const SHIM: &str = "shim";

fn replacement(lost: &str, by: &str) -> String {
    format!(
        "{by}'s CRI plugin section replaces {lost}'s whole (containerd takes a plugin's \
         section from one file, not key by key): what {lost} sets for the CRI (sandbox image, \
         CNI directories, other runtimes) is not in force"
    )
}

pub fn check(root: &Root, config: &str) -> (Check, Option<Runtime>) {
    let read = read(root, config);
    let remedy = format!(
        "add the runtime in /usr/share/doc/attestgate/examples/containerd/attestgate-runtime-v2.toml \
         (containerd 1.x; attestgate-runtime-v3.toml for 2.x) to the CRI plugin's section of {}, \
         then `systemctl restart containerd`",
        read.as_ref()
            .ok()
            .and_then(|r| r.cri_file.as_deref())
            .unwrap_or(config)
    );
    let runtimes = match read {
        Ok(runtimes) => runtimes,
        Err(e) => return (Check::fail(RUNTIME, e.to_string(), remedy), None),
    };
    let replaced = runtimes.replaced.last();
    let Some(runtime) = runtimes.attestgate().cloned() else {
        let known: Vec<String> = runtimes
            .runtimes
            .iter()
            .map(|r| format!("{} ({})", r.name, r.runtime_type))
            .collect();
        let mut detail = format!(
            "no CRI runtime with runtime_type = \"{RUNTIME_TYPE}\" in {} (runtimes: {})",
            runtimes.files.join(", "),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
        if let Some((lost, by)) = replaced {
            detail = format!("{detail}; {}", replacement(lost, by));
        }
        return (Check::fail(RUNTIME, detail, remedy), None);
    };
    if let Some((lost, by)) = replaced {
        return (
            Check::fail(
                RUNTIME,
                replacement(lost, by),
                format!(
                    "keep the CRI plugin's settings in one file: move the attestgate runtime \
                     (and anything else {by} sets for the CRI) into {lost}'s section, and drop \
                     that section from {by}; then `systemctl restart containerd`"
                ),
            ),
            Some(runtime),
        );
    }
    let default = match &runtimes.default {
        Some(name) if *name == runtime.name => {
            "the CRI's default runtime: every pod goes through the shim".to_string()
        }
        Some(name) => format!(
            "not the default runtime ({name}, set in {}): only pods with a RuntimeClass for it go through the shim",
            runtime.file
        ),
        None => "not the default runtime (runc): only pods with a RuntimeClass for it go through the shim".to_string(),
    };
    (
        Check::pass(
            RUNTIME,
            format!(
                "runtime {:?} ({RUNTIME_TYPE}) in {}; {default}",
                runtime.name, runtime.file
            ),
        ),
        Some(runtime),
    )
}

/// The shim where containerd will look: the runtime's `runtime_path`
/// when it names one, else containerd's PATH, which doctor takes to be
/// its own (systemd gives both the same).
pub fn check_shim(root: &Root, runtime: Option<&Runtime>, path_var: &str) -> Check {
    let remedy = format!(
        "install -m 0755 {SHIM_BINARY} /usr/bin/ (next to containerd-shim-runc-v2, on containerd's PATH)"
    );
    if let Some(explicit) = runtime.and_then(|r| r.runtime_path.as_deref()) {
        return if executable(&root.path(Path::new(explicit))) {
            Check::pass(SHIM, format!("{explicit} (the runtime's runtime_path)"))
        } else {
            Check::fail(
                SHIM,
                format!("the runtime's runtime_path {explicit} is not an executable file"),
                format!("install the shim at {explicit}, or drop runtime_path"),
            )
        };
    }
    let dirs: Vec<&str> = path_var.split(':').filter(|d| d.starts_with('/')).collect();
    for dir in &dirs {
        let candidate = PathBuf::from(dir).join(SHIM_BINARY);
        if executable(&root.path(&candidate)) {
            return Check::pass(SHIM, format!("{} on PATH", candidate.display()));
        }
    }
    Check::fail(
        SHIM,
        format!(
            "{SHIM_BINARY} is not an executable on PATH ({})",
            dirs.join(":")
        ),
        remedy,
    )
}

fn executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const V2: &str = include_str!("../../../packaging/containerd/attestgate-runtime-v2.toml");
    const V3: &str = include_str!("../../../packaging/containerd/attestgate-runtime-v3.toml");

    const MAIN_V2: &str = r#"version = 2
imports = ["/etc/containerd/conf.d/*.toml"]
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
"#;

    use crate::doctor::root::laid_out as node;

    #[test]
    fn globs_match_as_go_does_in_one_name() {
        assert!(matches(b"*.toml", b"attestgate.toml"));
        assert!(matches(b"*.toml", b".toml"));
        assert!(!matches(b"*.toml", b"attestgate.toml.bak"));
        assert!(matches(b"a?c*", b"abcdef"));
        assert!(!matches(b"a?c", b"ac"));
    }

    #[test]
    fn an_import_is_the_cri_section_when_the_main_file_has_none() {
        let (_dir, root) = node(&[
            (
                "/etc/containerd/config.toml",
                "version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n",
            ),
            ("/etc/containerd/conf.d/attestgate.toml", V2),
            ("/etc/containerd/conf.d/notes.txt", "not toml ["),
        ]);
        let read = read(&root, DEFAULT_CONFIG).unwrap();
        assert_eq!(
            read.files,
            vec![
                "/etc/containerd/config.toml",
                "/etc/containerd/conf.d/attestgate.toml"
            ]
        );
        let runtime = read.attestgate().unwrap();
        assert_eq!(runtime.name, "attestgate");
        assert_eq!(runtime.file, "/etc/containerd/conf.d/attestgate.toml");
        assert_eq!(read.default.as_deref(), Some("attestgate"));
        assert_eq!(
            read.cri_file.as_deref(),
            Some("/etc/containerd/conf.d/attestgate.toml")
        );
        assert!(read.replaced.is_empty());
        let (check, _) = check(&root, DEFAULT_CONFIG);
        assert!(check.ok, "{check:?}");
        assert!(check.detail.contains("default runtime"), "{}", check.detail);
    }

    #[test]
    fn an_import_s_cri_section_replaces_the_main_file_s_whole() {
        // As containerd 1.6's `config dump` shows it: the main file's runc
        // runtime (and all else it set for the CRI) is gone.
        let (_dir, root) = node(&[
            ("/etc/containerd/config.toml", MAIN_V2),
            ("/etc/containerd/conf.d/attestgate.toml", V2),
        ]);
        let read = read(&root, DEFAULT_CONFIG).unwrap();
        let names: Vec<&str> = read.runtimes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["attestgate"]);
        assert_eq!(
            read.replaced,
            vec![(
                DEFAULT_CONFIG.to_string(),
                "/etc/containerd/conf.d/attestgate.toml".to_string()
            )]
        );
        let (verdict, runtime) = check(&root, DEFAULT_CONFIG);
        assert!(!verdict.ok, "{verdict:?}");
        assert!(verdict.detail.contains("replaces"), "{}", verdict.detail);
        assert!(runtime.is_some(), "the shim check still has a runtime");
        // The runtime merged into the main file's own section is right.
        let merged = format!(
            "{MAIN_V2}  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.attestgate]\n    \
             runtime_type = \"io.containerd.attestgate.v2\"\n"
        )
        .replace("default_runtime_name = \"runc\"", "default_runtime_name = \"attestgate\"");
        let (_dir, root) = node(&[("/etc/containerd/config.toml", &merged)]);
        let (check, _) = check(&root, DEFAULT_CONFIG);
        assert!(check.ok, "{check:?}");
        assert!(check.detail.contains("default runtime"), "{}", check.detail);
    }

    #[test]
    fn imports_merge_breadth_first_as_containerd_loads_them() {
        // containerd 1.6 with these files dumps default_runtime_name = "b":
        // the main file, its imports a and c, then a's import b.
        let file = |imports: &str, default: &str| {
            format!(
                "version = 2\nimports = [{imports}]\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = \"{default}\"\n"
            )
        };
        let main = file("\"a.toml\", \"c.toml\"", "main");
        let a = file("\"b.toml\"", "a");
        let (b, c) = (file("", "b"), file("", "c"));
        let (_dir, root) = node(&[
            ("/etc/containerd/config.toml", &main),
            ("/etc/containerd/a.toml", &a),
            ("/etc/containerd/b.toml", &b),
            ("/etc/containerd/c.toml", &c),
        ]);
        let read = read(&root, DEFAULT_CONFIG).unwrap();
        assert_eq!(
            read.files,
            vec![
                DEFAULT_CONFIG,
                "/etc/containerd/a.toml",
                "/etc/containerd/c.toml",
                "/etc/containerd/b.toml"
            ]
        );
        assert_eq!(read.default.as_deref(), Some("b"));
        assert_eq!(read.cri_file.as_deref(), Some("/etc/containerd/b.toml"));
    }

    #[test]
    fn a_v3_config_keeps_the_runtimes_under_the_split_cri_plugin() {
        let (_dir, root) = node(&[("/etc/containerd/config.toml", V3)]);
        let read = read(&root, DEFAULT_CONFIG).unwrap();
        assert_eq!(read.attestgate().unwrap().name, "attestgate");
        // The same table under version 2's plugin name is not the CRI's
        // in version 3.
        let wrong = V3.replace("io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri");
        let (_dir, root) = node(&[("/etc/containerd/config.toml", &wrong)]);
        assert!(read_attestgate(&root).is_none());
    }

    fn read_attestgate(root: &Root) -> Option<Runtime> {
        read(root, DEFAULT_CONFIG).unwrap().attestgate().cloned()
    }

    #[test]
    fn relative_imports_are_relative_to_the_importing_file_and_nest() {
        let (_dir, root) = node(&[
            (
                "/etc/containerd/config.toml",
                "version = 2\nimports = [\"conf.d/first.toml\"]\n",
            ),
            (
                "/etc/containerd/conf.d/first.toml",
                "version = 2\nimports = [\"../more/*.toml\", \"/etc/containerd/config.toml\"]\n",
            ),
            ("/etc/containerd/more/attestgate.toml", V2),
        ]);
        let read = read(&root, DEFAULT_CONFIG).unwrap();
        assert_eq!(read.files.len(), 3, "{:?}", read.files);
        assert!(read.attestgate().is_some());
    }

    #[test]
    fn a_runtime_of_another_type_or_another_plugin_is_not_ours() {
        let (_dir, root) = node(&[("/etc/containerd/config.toml", MAIN_V2)]);
        assert!(read_attestgate(&root).is_none());
        let (check, _) = check(&root, DEFAULT_CONFIG);
        assert!(!check.ok);
        assert!(
            check.detail.contains("runc (io.containerd.runc.v2)"),
            "{}",
            check.detail
        );
        let (_dir, root) = node(&[(
            "/etc/containerd/config.toml",
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.x]\n\
             runtime_type = \"io.containerd.runc.v2\"\n",
        )]);
        assert!(read_attestgate(&root).is_none());
    }

    #[test]
    fn a_missing_or_broken_config_is_named() {
        let (_dir, root) = node(&[]);
        let e = read(&root, DEFAULT_CONFIG).unwrap_err().to_string();
        assert!(e.contains("defaults"), "{e}");
        let (_dir, root) = node(&[("/etc/containerd/config.toml", "version = 9\n")]);
        assert!(read(&root, DEFAULT_CONFIG).is_err());
        let (_dir, root) = node(&[
            ("/etc/containerd/config.toml", MAIN_V2),
            ("/etc/containerd/conf.d/bad.toml", "version = [\n"),
        ]);
        let e = read(&root, DEFAULT_CONFIG).unwrap_err().to_string();
        assert!(e.contains("conf.d/bad.toml"), "{e}");
    }

    #[test]
    fn the_shim_is_found_on_path_or_at_runtime_path() {
        let (dir, root) = node(&[]);
        let bin = dir.path().join("usr/bin");
        std::fs::create_dir_all(&bin).unwrap();
        assert!(!check_shim(&root, None, "/usr/local/bin:/usr/bin").ok);
        std::fs::write(bin.join(SHIM_BINARY), "").unwrap();
        // Not executable.
        assert!(!check_shim(&root, None, "/usr/local/bin:/usr/bin").ok);
        std::fs::set_permissions(
            bin.join(SHIM_BINARY),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert!(check_shim(&root, None, "/usr/local/bin:/usr/bin").ok);
        let elsewhere = Runtime {
            name: "attestgate".into(),
            runtime_type: RUNTIME_TYPE.into(),
            runtime_path: Some("/opt/shim".into()),
            file: DEFAULT_CONFIG.into(),
        };
        assert!(!check_shim(&root, Some(&elsewhere), "/usr/bin").ok);
    }
}
