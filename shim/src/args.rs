//! The command line containerd gives a runtime v2 shim, parsed as Go's
//! `flag` package does for the runc shim's flag set: `-name value`,
//! `-name=value`, `--name value`, boolean flags alone, and the action as the
//! first argument that is not a flag.

use std::ffi::OsString;

/// What containerd asked of the shim binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create (or join) the shim for a new container: the gate.
    Start,
    /// The forwarder process `start` runs in forward mode.
    Forward,
    /// Every other use (`delete`, `-v`, `-info`, the server itself): handed
    /// to the runc shim untouched.
    Other,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    pub namespace: Option<String>,
    pub id: Option<String>,
    /// containerd's gRPC socket (a path, or `unix://path` from 2.x).
    pub address: Option<String>,
    pub bundle: Option<String>,
    pub version: bool,
    pub action: Option<String>,
    /// Arguments after the action (the forwarder's own).
    pub rest: Vec<String>,
}

/// The action word the forwarder process is started with.
pub const SERVE_ACTION: &str = "attestgate-forward";

/// The runc shim's flags that take a value; every other flag is boolean.
const VALUE_FLAGS: &[&str] = &[
    "namespace",
    "id",
    "socket",
    "bundle",
    "address",
    "publish-binary",
];

impl Invocation {
    pub fn parse(args: &[OsString]) -> Invocation {
        let mut invocation = Invocation::default();
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let arg = arg.to_string_lossy();
            if arg == "--" {
                invocation.action = rest.next().map(|a| a.to_string_lossy().into_owned());
                break;
            }
            let Some(flag) = arg
                .strip_prefix("--")
                .or_else(|| arg.strip_prefix('-'))
                .filter(|f| !f.is_empty())
            else {
                invocation.action = Some(arg.into_owned());
                break;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (flag, None),
            };
            let value = if VALUE_FLAGS.contains(&name) {
                inline.or_else(|| rest.next().map(|v| v.to_string_lossy().into_owned()))
            } else {
                inline
            };
            match name {
                "namespace" => invocation.namespace = value,
                "id" => invocation.id = value,
                "address" => invocation.address = value,
                "bundle" => invocation.bundle = value,
                "v" | "version" => invocation.version = value.is_none_or(|v| v != "false"),
                _ => {}
            }
        }
        invocation.rest = rest.map(|a| a.to_string_lossy().into_owned()).collect();
        invocation
    }

    pub fn action(&self) -> Action {
        match self.action.as_deref() {
            Some("start") => Action::Start,
            Some(SERVE_ACTION) => Action::Forward,
            _ => Action::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Invocation {
        Invocation::parse(&args.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn containerd_1_6_start() {
        let i = parse(&[
            "-namespace",
            "k8s.io",
            "-address",
            "/run/containerd/containerd.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "abc",
            "-debug",
            "start",
        ]);
        assert_eq!(i.namespace.as_deref(), Some("k8s.io"));
        assert_eq!(
            i.address.as_deref(),
            Some("/run/containerd/containerd.sock")
        );
        assert_eq!(i.id.as_deref(), Some("abc"));
        assert_eq!(i.action(), Action::Start);
    }

    #[test]
    fn go_flag_spellings() {
        let i = parse(&[
            "--namespace=default",
            "-id=x",
            "-bundle",
            "/b",
            "-debug=true",
            "delete",
        ]);
        assert_eq!(i.namespace.as_deref(), Some("default"));
        assert_eq!(i.id.as_deref(), Some("x"));
        assert_eq!(i.bundle.as_deref(), Some("/b"));
        assert_eq!(i.action(), Action::Other);
        assert_eq!(i.action.as_deref(), Some("delete"));
        assert!(parse(&["-v"]).version);
        assert_eq!(
            parse(&["-id", "start"]).action,
            None,
            "start is -id's value"
        );
        assert_eq!(parse(&["-id", "x", "--", "start"]).action(), Action::Start);
    }
}
