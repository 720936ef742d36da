//! Whether the node can write its audit log: a record that cannot be
//! written closes the decision (SPEC §6), so an unwritable log refuses
//! every container. Checked without writing a record.

use std::path::Path;

use rustix::fs::Access;

use super::report::Check;
use super::root::Root;

const NAME: &str = "audit_log";

pub fn check(root: &Root, log: &Path) -> Check {
    let shown = log.display();
    let Some(dir) = log.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Check::fail(
            NAME,
            format!("{shown} has no directory"),
            "set audit_log to an absolute path",
        );
    };
    let dir_shown = dir.display();
    let real_dir = root.path(dir);
    match std::fs::metadata(&real_dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Check::fail(
                NAME,
                format!("{dir_shown} is not a directory"),
                format!("move {dir_shown} away, then `install -d -m 0750 {dir_shown}`"),
            );
        }
        Err(e) => {
            return Check::fail(
                NAME,
                format!("{dir_shown}: {e}"),
                format!(
                    "`install -d -m 0750 {dir_shown}` (attestgate-proxy.service's LogsDirectory= makes /var/log/attestgate)"
                ),
            );
        }
    }
    // access(2) asks the kernel, which also knows a read-only mount; the
    // directory must take new files for logrotate's reopen.
    if let Err(e) = rustix::fs::access(&real_dir, Access::WRITE_OK | Access::EXEC_OK) {
        return Check::fail(
            NAME,
            format!("{dir_shown} is not writable: {e}"),
            format!(
                "make {dir_shown} writable by root (a read-only mount? ReadWritePaths= in the unit?)"
            ),
        );
    }
    let real_log = root.path(log);
    match std::fs::symlink_metadata(&real_log) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Check::pass(
                NAME,
                format!("{dir_shown} is writable; {shown} will be created at the first decision"),
            );
        }
        Err(e) => {
            return Check::fail(NAME, format!("{shown}: {e}"), format!("check {dir_shown}"));
        }
        Ok(meta) if !meta.is_file() => {
            return Check::fail(
                NAME,
                format!("{shown} is not a regular file"),
                format!("move {shown} away; the node creates the file itself"),
            );
        }
        Ok(_) => {}
    }
    // Opened for append and closed: what the node does, minus the record.
    match std::fs::OpenOptions::new().append(true).open(&real_log) {
        Ok(_) => Check::pass(NAME, format!("{shown} is appendable, {dir_shown} writable")),
        Err(e) => Check::fail(
            NAME,
            format!("{shown} cannot be opened for append: {e}"),
            format!("make {shown} writable by root (`lsattr {shown}`: not immutable)"),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_missing_directory_a_directory_for_a_file_and_a_good_log() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().to_path_buf());
        let log = Path::new("/var/log/attestgate/audit.jsonl");
        let check_ = check(&root, log);
        assert!(
            !check_.ok && check_.detail.contains("/var/log/attestgate"),
            "{check_:?}"
        );
        std::fs::create_dir_all(dir.path().join("var/log/attestgate")).unwrap();
        assert!(check(&root, log).ok);
        std::fs::create_dir(dir.path().join("var/log/attestgate/audit.jsonl")).unwrap();
        assert!(!check(&root, log).ok);
        std::fs::remove_dir(dir.path().join("var/log/attestgate/audit.jsonl")).unwrap();
        std::fs::write(dir.path().join("var/log/attestgate/audit.jsonl"), "{}\n").unwrap();
        let good = check(&root, log);
        assert!(good.ok && good.detail.contains("appendable"), "{good:?}");
        // Nothing was written.
        assert_eq!(
            std::fs::read(dir.path().join("var/log/attestgate/audit.jsonl")).unwrap(),
            b"{}\n"
        );
    }
}
