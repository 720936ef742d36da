//! The audit log and the files logrotate rotated it into, oldest first, and
//! their lines.
//!
//! logrotate names rotations beside the log: `audit.jsonl.1`,
//! `audit.jsonl.2.gz`, … (higher is older), or with `dateext`
//! `audit.jsonl-20261201[.gz]` (later is newer). Compression is recognised
//! by content, not by name, so `delaycompress` and other extensions need
//! nothing special.

use std::cmp::Ordering;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context as _, Result, bail};
use flate2::read::MultiGzDecoder;

/// Where a rotated file sits in logrotate's order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rotation {
    /// `.N`: the higher, the older.
    Numbered(u64),
    /// `-DATE`: the date's digit groups, compared as numbers.
    Dated(Vec<u64>),
}

/// The rotation a file name stands for, if it is one of `log_name`'s.
fn rotation_of(log_name: &str, file_name: &str) -> Option<Rotation> {
    let rest = file_name.strip_prefix(log_name)?;
    // One extension at most after the number or date: `.gz`, `.xz`, …
    let strip_extension = |s: &'_ str| -> String {
        match s.split_once('.') {
            Some((stem, ext))
                if !ext.is_empty() && ext.chars().all(|c| c.is_ascii_alphanumeric()) =>
            {
                stem.to_string()
            }
            _ => s.to_string(),
        }
    };
    if let Some(numbered) = rest.strip_prefix('.') {
        let stem = strip_extension(numbered);
        if stem.is_empty() || !stem.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        return stem.parse().ok().map(Rotation::Numbered);
    }
    let dated = rest.strip_prefix('-')?;
    let stem = strip_extension(dated);
    if !stem.starts_with(|c: char| c.is_ascii_digit())
        || !stem
            .chars()
            .all(|c| c.is_ascii_digit() || c == '-' || c == '_')
    {
        return None;
    }
    let groups = stem
        .split(['-', '_'])
        .filter(|g| !g.is_empty())
        .map(str::parse)
        .collect::<Result<Vec<u64>, _>>()
        .ok()?;
    Some(Rotation::Dated(groups))
}

/// Oldest first within one naming scheme.
fn older_first(a: &Rotation, b: &Rotation) -> Ordering {
    match (a, b) {
        (Rotation::Numbered(a), Rotation::Numbered(b)) => b.cmp(a),
        (Rotation::Dated(a), Rotation::Dated(b)) => a.cmp(b),
        (Rotation::Numbered(_), Rotation::Dated(_)) => Ordering::Less,
        (Rotation::Dated(_), Rotation::Numbered(_)) => Ordering::Greater,
    }
}

struct Rotated {
    path: PathBuf,
    rotation: Rotation,
    modified: Option<SystemTime>,
}

/// Orders rotated files oldest first. Both schemes are present only when
/// `dateext` was turned on or off; logrotate then leaves the old scheme's
/// files alone, so the scheme whose newest file is older comes first.
fn order(mut rotated: Vec<Rotated>) -> Vec<PathBuf> {
    let newest = |numbered: bool| {
        rotated
            .iter()
            .filter(|r| matches!(r.rotation, Rotation::Numbered(_)) == numbered)
            .filter_map(|r| r.modified)
            .max()
    };
    let numbered_first = match (newest(true), newest(false)) {
        (Some(numbered), Some(dated)) => numbered <= dated,
        _ => true,
    };
    rotated.sort_by(|a, b| {
        let scheme = |r: &Rotated| matches!(r.rotation, Rotation::Numbered(_)) != numbered_first;
        scheme(a)
            .cmp(&scheme(b))
            .then_with(|| older_first(&a.rotation, &b.rotation))
            .then_with(|| a.path.cmp(&b.path))
    });
    rotated.into_iter().map(|r| r.path).collect()
}

/// The log's rotated files and the log itself, oldest first. A missing log
/// is an error only when nothing was rotated from it either.
pub fn log_files(log: &Path) -> Result<Vec<PathBuf>> {
    let log_name = log
        .file_name()
        .and_then(OsStr::to_str)
        .with_context(|| format!("audit log {}: not a file name", log.display()))?;
    let dir = match log.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut rotated = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
                let name = entry.file_name();
                let Some(rotation) = name.to_str().and_then(|n| rotation_of(log_name, n)) else {
                    continue;
                };
                let meta = entry.metadata().ok();
                if meta.as_ref().is_some_and(|m| m.is_dir()) {
                    continue;
                }
                rotated.push(Rotated {
                    path: entry.path(),
                    rotation,
                    modified: meta.and_then(|m| m.modified().ok()),
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    }
    let mut files = order(rotated);
    match std::fs::metadata(log) {
        Ok(meta) if meta.is_dir() => bail!("audit log {}: is a directory", log.display()),
        Ok(_) => files.push(log.to_path_buf()),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !files.is_empty() => {}
        Err(e) => return Err(e).with_context(|| format!("audit log {}", log.display())),
    }
    Ok(files)
}

/// The file's content, inflated if it is gzip. Other compressions
/// logrotate can be told to use are refused by name rather than read as
/// garbage.
pub fn open(path: &Path) -> Result<Box<dyn Read>> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 6];
    let mut seen = 0;
    while seen < magic.len() {
        let n = file
            .read(&mut magic[seen..])
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        seen += n;
    }
    let head = io::Cursor::new(magic[..seen].to_vec());
    let compression = match &magic[..seen] {
        [0x1f, 0x8b, ..] => Some("gzip"),
        [0xfd, b'7', b'z', b'X', b'Z', 0] => Some("xz"),
        [b'B', b'Z', b'h', ..] => Some("bzip2"),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Some("zstd"),
        _ => None,
    };
    let whole = head.chain(file);
    match compression {
        None => Ok(Box::new(whole)),
        Some("gzip") => Ok(Box::new(MultiGzDecoder::new(whole))),
        Some(other) => bail!(
            "{}: {other}-compressed; only gzip rotations can be read (logrotate's default)",
            path.display()
        ),
    }
}

/// The longest line handed out whole. The node's records are a few KiB at
/// most (an image reference, a pod, one verdict per attestor); a line far
/// past that is not a record, such as the run of NULs a crash can leave in
/// a file, and must not be read into memory whole.
pub const MAX_LINE: usize = 1 << 20;

/// One line of a file, without its newline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    Whole(&'a [u8]),
    /// Longer than [`MAX_LINE`]: skipped up to its newline unread, so that
    /// its bytes are never held.
    TooLong,
}

/// Calls `each_line` with every line of `reader`, in order; the last one
/// even if no newline ends it. Lines are handed out of one buffer of
/// fixed size, never copied one by one. `each_line` returns false to stop
/// early.
pub fn for_each_line(
    mut reader: impl Read,
    mut each_line: impl FnMut(Line<'_>) -> bool,
) -> io::Result<()> {
    // Room for a line of `MAX_LINE` bytes and its newline; the buffer never
    // grows, so memory stays bounded whatever the file holds.
    let mut buf = vec![0u8; MAX_LINE + 1];
    // Bytes of an unfinished line at the front of `buf`.
    let mut kept = 0;
    // Inside an over-long line, already reported: bytes up to the next
    // newline are read over and dropped.
    let mut skipping = false;
    loop {
        if kept == buf.len() {
            // A full buffer without a newline: the line is too long.
            // Report it now and drop what was kept of it.
            if !each_line(Line::TooLong) {
                return Ok(());
            }
            skipping = true;
            kept = 0;
        }
        let n = match reader.read(&mut buf[kept..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            if kept > 0 {
                each_line(Line::Whole(&buf[..kept]));
            }
            return Ok(());
        }
        let filled = kept + n;
        // Where the lines still to hand out begin.
        let mut start = 0;
        if skipping {
            // `kept` is 0 while skipping: the whole buffer is new bytes.
            let Some(newline) = memchr::memchr(b'\n', &buf[..filled]) else {
                continue;
            };
            skipping = false;
            start = newline + 1;
        }
        // Only the new bytes can hold the first newline after `kept`.
        let from = start.max(kept);
        let Some(last_newline) = memchr::memrchr(b'\n', &buf[from..filled]).map(|i| from + i)
        else {
            buf.copy_within(start..filled, 0);
            kept = filled - start;
            continue;
        };
        let first = start;
        for end in memchr::memchr_iter(b'\n', &buf[first..=last_newline]).map(|i| first + i) {
            if !each_line(Line::Whole(&buf[start..end])) {
                return Ok(());
            }
            start = end + 1;
        }
        buf.copy_within(last_newline + 1..filled, 0);
        kept = filled - last_newline - 1;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rotated_names_are_recognised() {
        let log = "audit.jsonl";
        assert_eq!(
            rotation_of(log, "audit.jsonl.1"),
            Some(Rotation::Numbered(1))
        );
        assert_eq!(
            rotation_of(log, "audit.jsonl.12.gz"),
            Some(Rotation::Numbered(12))
        );
        assert_eq!(
            rotation_of(log, "audit.jsonl-20261201"),
            Some(Rotation::Dated(vec![20261201]))
        );
        assert_eq!(
            rotation_of(log, "audit.jsonl-20261201.gz"),
            Some(Rotation::Dated(vec![20261201]))
        );
        assert_eq!(
            rotation_of(log, "audit.jsonl-2026-12-01_1764547200.xz"),
            Some(Rotation::Dated(vec![2026, 12, 1, 1764547200]))
        );
        for other in [
            "audit.jsonl",
            "audit.jsonl.gz",
            "audit.jsonl.bak",
            "audit.jsonl.1.tar.gz",
            "audit.jsonl-old",
            "audit.jsonl-",
            "audit.jsonl.",
            "audit.json.1",
            "other.jsonl.1",
            "audit.jsonl.1.",
        ] {
            assert_eq!(rotation_of(log, other), None, "{other}");
        }
    }

    fn rotated(name: &str, modified_secs: u64) -> Rotated {
        Rotated {
            path: PathBuf::from(name),
            rotation: rotation_of("audit.jsonl", name).unwrap(),
            modified: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(modified_secs)),
        }
    }

    fn names(paths: Vec<PathBuf>) -> Vec<String> {
        paths
            .into_iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn rotations_are_read_oldest_first() {
        let numbered = vec![
            rotated("audit.jsonl.1", 30),
            rotated("audit.jsonl.10.gz", 1),
            rotated("audit.jsonl.2.gz", 20),
            rotated("audit.jsonl.9.gz", 2),
        ];
        assert_eq!(
            names(order(numbered)),
            [
                "audit.jsonl.10.gz",
                "audit.jsonl.9.gz",
                "audit.jsonl.2.gz",
                "audit.jsonl.1"
            ]
        );
        let dated = vec![
            rotated("audit.jsonl-20261201", 30),
            rotated("audit.jsonl-20261130.gz", 20),
            rotated("audit.jsonl-20250101.gz", 10),
        ];
        assert_eq!(
            names(order(dated)),
            [
                "audit.jsonl-20250101.gz",
                "audit.jsonl-20261130.gz",
                "audit.jsonl-20261201"
            ]
        );
    }

    #[test]
    fn a_change_of_naming_scheme_keeps_time_order() {
        // dateext turned on after numbered rotations: the numbered ones are older.
        let switched_on = vec![
            rotated("audit.jsonl-20261201.gz", 100),
            rotated("audit.jsonl.1.gz", 50),
            rotated("audit.jsonl.2.gz", 40),
        ];
        assert_eq!(
            names(order(switched_on)),
            [
                "audit.jsonl.2.gz",
                "audit.jsonl.1.gz",
                "audit.jsonl-20261201.gz"
            ]
        );
        let switched_off = vec![
            rotated("audit.jsonl-20261201.gz", 10),
            rotated("audit.jsonl.1.gz", 50),
        ];
        assert_eq!(
            names(order(switched_off)),
            ["audit.jsonl-20261201.gz", "audit.jsonl.1.gz"]
        );
    }

    /// Each line, or `None` for one too long to be handed out.
    fn lines_of(input: &[u8], chunked: bool) -> Vec<Option<Vec<u8>>> {
        let mut lines = Vec::new();
        // A reader that hands out one byte at a time puts every line
        // across chunk boundaries.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let Some((first, rest)) = self.0.split_first() else {
                    return Ok(0);
                };
                buf[0] = *first;
                self.0 = rest;
                Ok(1)
            }
        }
        let collect = |line: Line<'_>| {
            lines.push(match line {
                Line::Whole(line) => Some(line.to_vec()),
                Line::TooLong => None,
            });
            true
        };
        if chunked {
            for_each_line(Trickle(input), collect).unwrap();
        } else {
            for_each_line(input, collect).unwrap();
        }
        lines
    }

    fn whole(lines: &[&[u8]]) -> Vec<Option<Vec<u8>>> {
        lines.iter().map(|l| Some(l.to_vec())).collect()
    }

    #[test]
    fn lines_are_split_across_reads_and_a_last_line_without_newline_is_kept() {
        for chunked in [false, true] {
            assert_eq!(
                lines_of(b"a\nbb\n\nccc", chunked),
                whole(&[b"a", b"bb", b"", b"ccc"])
            );
            assert_eq!(lines_of(b"a\n", chunked), whole(&[b"a"]));
            assert!(lines_of(b"", chunked).is_empty());
        }
        // The longest line there may be, with a line after it in the same read.
        let longest = vec![b'x'; MAX_LINE];
        let mut input = longest.clone();
        input.extend_from_slice(b"\nend\n");
        assert_eq!(
            lines_of(&input, false),
            [Some(longest.clone()), Some(b"end".to_vec())]
        );
        input.truncate(MAX_LINE);
        assert_eq!(lines_of(&input, false), [Some(longest)]);
    }

    #[test]
    fn an_over_long_line_is_skipped_to_its_newline() {
        for chunked in [false, true] {
            for length in [MAX_LINE + 1, 3 * MAX_LINE + 5] {
                let mut input = b"first\n".to_vec();
                input.resize(input.len() + length, 0);
                input.extend_from_slice(b"\nlast\n");
                assert_eq!(
                    lines_of(&input, chunked),
                    [Some(b"first".to_vec()), None, Some(b"last".to_vec())],
                    "{length} bytes, chunked {chunked}"
                );
                // Cut short by the end of the file, it is still one line.
                input.truncate(input.len() - b"\nlast\n".len());
                assert_eq!(
                    lines_of(&input, chunked),
                    [Some(b"first".to_vec()), None],
                    "{length} bytes, chunked {chunked}"
                );
            }
        }
    }

    #[test]
    fn files_are_found_beside_the_log_and_the_log_comes_last() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        for name in ["audit.jsonl.2.gz", "audit.jsonl.1", "unrelated.1"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        std::fs::create_dir(dir.path().join("audit.jsonl.3")).unwrap();
        let found = |log: &Path| {
            log_files(log)
                .unwrap()
                .into_iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(found(&log), ["audit.jsonl.2.gz", "audit.jsonl.1"]);
        std::fs::write(&log, "").unwrap();
        assert_eq!(
            found(&log),
            ["audit.jsonl.2.gz", "audit.jsonl.1", "audit.jsonl"]
        );
        let error = format!("{:#}", log_files(dir.path()).unwrap_err());
        assert!(error.ends_with("is a directory"), "{error}");
        let missing = dir.path().join("none.jsonl");
        let error = format!("{:#}", log_files(&missing).unwrap_err());
        assert!(error.contains(&missing.display().to_string()), "{error}");
    }
}
