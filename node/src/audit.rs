//! The audit log: one JSON line per decision, appended, written before the
//! response goes back. Each line is one `write` on an `O_APPEND` file, so
//! lines from concurrent decisions never interleave, and `copytruncate`
//! rotation works; SIGHUP reopens the file for move-and-create rotation. A
//! line a full disk cut short is ended before the next record is written,
//! and a log deleted under us is created again.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{FileExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct AuditLog {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

fn open(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

impl AuditLog {
    /// Opens (creating) the log; failing here is fatal at start-up.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        let file = open(path)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(Some(file)),
        })
    }

    /// A log at `path` opened on the first append, for a program that
    /// writes one record and must record even why it could not open it.
    pub fn at(path: &Path) -> AuditLog {
        AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record. On failure the file is reopened once (it may have
    /// been rotated away or the disk remounted) and the write retried.
    pub fn append(&self, record: &str) -> std::io::Result<()> {
        let mut guard = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(file) = guard.as_mut()
            && !unlinked(file)
            && append_to(file, record).is_ok()
        {
            return Ok(());
        }
        let file = open(&self.path)?;
        let result = append_to(&file, record);
        *guard = Some(file);
        result
    }

    /// Reopens the file by path (after logrotate moved it).
    /// If that fails the old file is let go too: records must reach the
    /// configured path, not a rotated-away file nobody reads, so writes
    /// fail (and the fail mode applies) until the path works again.
    pub fn reopen(&self) -> std::io::Result<()> {
        let reopened = open(&self.path);
        let mut guard = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match reopened {
            Ok(file) => {
                *guard = Some(file);
                Ok(())
            }
            Err(e) => {
                *guard = None;
                Err(e)
            }
        }
    }
}

/// Whether the log was deleted under us (its directory cleaned out, say):
/// records written to it would reach no one, so it is opened again.
fn unlinked(file: &File) -> bool {
    file.metadata().is_ok_and(|meta| meta.nlink() == 0)
}

fn append_to(mut file: &File, record: &str) -> std::io::Result<()> {
    file.write_all(&line_after(last_byte(file), record))
}

/// What to write to append `record` (one JSON line, no newline) after a
/// log whose last byte is `last_byte`. A write that ran out of space (ours,
/// or that of another process appending to the same log) can leave the log
/// mid-line; the record then starts on a line of its own instead of being
/// glued to the fragment, where no reader could find it.
fn line_after(last_byte: Option<u8>, record: &str) -> Vec<u8> {
    let mut line = Vec::with_capacity(record.len() + 2);
    if last_byte.is_some_and(|b| b != b'\n') {
        line.push(b'\n');
    }
    line.extend_from_slice(record.as_bytes());
    line.push(b'\n');
    line
}

/// The log's last byte, if it is a regular file that has one. Read through
/// a read-only open of the same file (`/proc/self/fd`), so the log itself
/// stays open for appending only: a log the writer may append to but not
/// read, or a FIFO, behaves as before. Best effort: a log truncated under
/// us (`copytruncate`) or unreadable just gets no fresh line.
fn last_byte(log: &File) -> Option<u8> {
    use std::os::fd::AsRawFd as _;
    let meta = log.metadata().ok()?;
    let end = meta.len().checked_sub(1).filter(|_| meta.is_file())?;
    let reader = File::open(format!("/proc/self/fd/{}", log.as_raw_fd())).ok()?;
    let mut byte = [0u8];
    reader.read_exact_at(&mut byte, end).ok()?;
    Some(byte[0])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_audit_line_starts_afresh_after_a_torn_one() {
        assert_eq!(line_after(None, "{}"), b"{}\n");
        assert_eq!(line_after(Some(b'\n'), "{}"), b"{}\n");
        assert_eq!(line_after(Some(b'"'), "{}"), b"\n{}\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.append("{}").unwrap();
        std::fs::write(&path, "{}\n{\"ti").unwrap();
        log.append("{}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}\n{\"ti\n{}\n");
        log.append("{}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{}\n{\"ti\n{}\n{}\n"
        );
    }

    #[test]
    fn lines_are_appended_across_reopen_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.append("{\"n\":1}").unwrap();
        drop(log);
        let log = AuditLog::open(&path).unwrap();
        log.append("{\"n\":2}").unwrap();
        std::fs::rename(&path, dir.path().join("rotated")).unwrap();
        log.reopen().unwrap();
        log.append("{\"n\":3}").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("rotated")).unwrap(),
            "{\"n\":1}\n{\"n\":2}\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":3}\n");
    }
}

#[cfg(test)]
mod reopen_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_log_deleted_under_us_is_created_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.append("{\"n\":1}").unwrap();
        std::fs::remove_dir_all(dir.path().join("log")).unwrap();
        log.append("{\"n\":2}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":2}\n");
    }

    #[test]
    fn writes_fail_after_a_failed_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.append("{}").unwrap();
        std::fs::rename(&path, dir.path().join("rotated")).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(log.reopen().is_err());
        assert!(log.append("{}").is_err());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("rotated")).unwrap(),
            "{}\n"
        );
    }
}
