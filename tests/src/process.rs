//! Other processes as /proc shows them: the children a supervisor started
//! (to find the proxy it restarts), and what a long-running one holds.

use std::path::Path;

/// The live children of `parent` running `exe`, by /proc/PID/stat's parent
/// field and /proc/PID/exe: a supervisor's child is not ours to wait for,
/// so it is found by looking.
pub fn children(parent: u32, exe: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            stat(pid).is_some_and(|(state, ppid)| ppid == parent && state != 'Z')
                && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == exe)
        })
        .collect()
}

/// Whether `pid` is running (a zombie is not).
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z')
}

/// State and parent from /proc/PID/stat, read past the parenthesised
/// command name, which may itself hold spaces and parentheses.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = text.get(text.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// How many file descriptors `pid` has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
}
