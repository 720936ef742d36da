//! The proxy's metrics, as a scraper sees them: `--metrics-listen` on a
//! free local port, scraped with curl.

use std::time::Duration;

/// A free port on 127.0.0.1, as `HOST:PORT`.
pub fn free_local_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// One metric sample, scraped now; `None` if the proxy does not answer or
/// has no such sample.
pub fn sample(addr: &str, name: &str) -> Option<f64> {
    let output = std::process::Command::new("curl")
        .arg("-fsS")
        .arg(format!("http://{addr}/metrics"))
        .output()
        .ok()?;
    value(&String::from_utf8_lossy(&output.stdout), name)
}

/// A process's resident memory now and at its peak, in bytes.
pub fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub async fn scrape(addr: &str) -> String {
    let output = std::process::Command::new("curl")
        .arg("-fsS")
        .arg(format!("http://{addr}/metrics"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Waits up to 10 s for `line` to be one of the metrics' lines; the last
/// scrape if it never is.
pub async fn await_metric(addr: &str, line: &str) -> Result<(), String> {
    let mut text = String::new();
    for _ in 0..100 {
        text = scrape(addr).await;
        if text.lines().any(|l| l == line) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(text)
}

/// The value of the sample named exactly `name` (labels included), if
/// there is one.
pub fn value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}
