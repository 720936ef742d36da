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
