//! `GET /metrics` over plain HTTP/1.1, as Prometheus would scrape the
//! daemons: one request, the whole body, a short deadline.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("{0} is not an address (HOST:PORT)")]
    Address(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr} answered GET /metrics with {status:?}")]
    Status { addr: SocketAddr, status: String },
}

/// The body of `GET /metrics` at `addr`.
pub fn metrics(addr: &str, timeout: Duration) -> Result<String, ScrapeError> {
    let resolved = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut all| all.next())
        .ok_or_else(|| ScrapeError::Address(addr.to_string()))?;
    let mut stream =
        TcpStream::connect_timeout(&resolved, timeout).map_err(|source| ScrapeError::Connect {
            addr: resolved,
            source,
        })?;
    let io = |source| ScrapeError::Io {
        addr: resolved,
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    // Connection: close, so the body ends where the stream does and no
    // chunked or length framing needs reading.
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut response = Vec::new();
    stream
        .take(16 << 20)
        .read_to_end(&mut response)
        .map_err(io)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    let head = String::from_utf8_lossy(&response[..split]);
    let body = response.get(split + 4..).unwrap_or_default();
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(ScrapeError::Status {
            addr: resolved,
            status: status.to_string(),
        });
    }
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    // Framing is in bytes: the body becomes text only once it is whole.
    Ok(if chunked {
        String::from_utf8_lossy(&dechunk(body)).into_owned()
    } else {
        String::from_utf8_lossy(body).into_owned()
    })
}

/// A chunked body's chunks joined; a server may chunk even a response
/// it closes after.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&body[..end]);
        let size = size.split(';').next().unwrap_or_default().trim();
        let Ok(len) = usize::from_str_radix(size, 16) else {
            break;
        };
        let rest = &body[end + 2..];
        if len == 0 || rest.len() < len {
            out.extend_from_slice(&rest[..len.min(rest.len())]);
            break;
        }
        out.extend_from_slice(&rest[..len]);
        body = &rest[len..];
        body = body.strip_prefix(b"\r\n").unwrap_or(body);
    }
    out
}

/// The value of a sample line `name{labels} value`, by its name (labels
/// ignored), every one found.
pub fn samples<'a>(body: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    body.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once('}')?,
            None if rest.starts_with(' ') => ("", rest),
            None => return None,
        };
        let value = value.split_whitespace().next()?.parse().ok()?;
        Some((labels, value))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn samples_are_read_by_name_with_or_without_labels() {
        let body = "# TYPE x gauge\nx 3\nx_total 9\ny{reason=\"a\"} 4.5\ny{reason=\"b\"} 1\n";
        assert_eq!(samples(body, "x").collect::<Vec<_>>(), vec![("", 3.0)]);
        assert_eq!(
            samples(body, "y").collect::<Vec<_>>(),
            vec![("reason=\"a\"", 4.5), ("reason=\"b\"", 1.0)]
        );
    }

    #[test]
    fn chunks_are_joined() {
        assert_eq!(dechunk(b"4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"), b"abcdefg");
        // A chunk may end inside a character, and a body need not be UTF-8.
        assert_eq!(
            dechunk(b"1\r\n\xc3\r\n2\r\n\xa9\xff\r\n0\r\n\r\n"),
            b"\xc3\xa9\xff"
        );
        assert_eq!(dechunk(b"9\r\nshort"), b"short");
        assert_eq!(dechunk(b"zz\r\nabc"), b"");
    }

    #[test]
    fn a_scrape_reads_the_body_and_refuses_other_statuses() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            for answer in [
                "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nattestgate 1",
                "HTTP/1.1 404 Not Found\r\n\r\n",
            ] {
                let (mut s, _) = listener.accept().unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    let n = s.read(&mut buf).unwrap();
                    assert!(n > 0, "the request ended early");
                    request.extend_from_slice(&buf[..n]);
                }
                s.write_all(answer.as_bytes()).unwrap();
            }
        });
        let timeout = Duration::from_secs(5);
        assert_eq!(metrics(&addr, timeout).unwrap(), "attestgate 1");
        let refused = metrics(&addr, timeout);
        assert!(
            matches!(refused, Err(ScrapeError::Status { .. })),
            "{refused:?}"
        );
        server.join().unwrap();
        assert!(matches!(
            metrics("not an address", timeout),
            Err(ScrapeError::Address(_))
        ));
    }
}
