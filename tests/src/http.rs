//! A minimal HTTP/1.0 GET over a plain `TcpStream`, with one deadline for the whole exchange.
//! Enough to ask an nginx "which node are you?"; run it inside a namespace with
//! [`crate::Lab::http_get`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::addr::require_test_address;
use crate::error::{LabError, Result};

/// Responses larger than this are cut off with an error: the lab only serves short pages.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Status and body of an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code (200, 404, ...).
    pub status: u16,
    /// The body, lossily decoded.
    pub body: String,
}

/// GETs `http://addr/path` from the current thread's namespace, all within `timeout`.
/// `addr` must be in the test range.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<HttpResponse> {
    let fail = |reason: String| LabError::Http {
        addr,
        path: path.to_owned(),
        reason,
    };
    require_test_address(addr.ip())?;
    if !path.starts_with('/')
        || path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(fail(
            "path must start with '/' and contain no whitespace".to_owned(),
        ));
    }
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| fail(format!("no complete response within {timeout:?}")))
    };

    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|err| fail(format!("connect: {err}")))?;
    stream
        .set_write_timeout(Some(remaining()?))
        .map_err(|err| fail(format!("set timeout: {err}")))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|err| fail(format!("send: {err}")))?;

    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        stream
            .set_read_timeout(Some(remaining()?))
            .map_err(|err| fail(format!("set timeout: {err}")))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&chunk[..n]);
                if response.len() > MAX_RESPONSE_BYTES {
                    return Err(fail(format!(
                        "response larger than {MAX_RESPONSE_BYTES} bytes"
                    )));
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(fail(format!("receive: {err}"))),
        }
    }
    parse_response(&response).map_err(fail)
}

fn parse_response(response: &[u8]) -> std::result::Result<HttpResponse, String> {
    let header_end = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {} bytes", response.len()))?;
    let head = String::from_utf8_lossy(&response[..header_end]);
    let status_line = head.lines().next().unwrap_or_default();
    let mut words = status_line.split_whitespace();
    let version = words.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 status line: {status_line:?}"));
    }
    let status = words
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("no status code in {status_line:?}"))?;
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&response[header_end + 4..]).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let response = parse_response(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nnode lb1\n").unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, "node lb1\n");
        let empty = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\n").unwrap();
        assert_eq!(empty.status, 404);
        assert_eq!(empty.body, "");
    }

    #[test]
    fn rejects_what_is_not_http() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"SSH-2.0-x\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }

    #[test]
    fn refuses_addresses_outside_the_test_range() {
        let err = http_get(
            "127.0.0.1:80".parse().unwrap(),
            "/",
            Duration::from_millis(10),
        )
        .unwrap_err();
        assert!(matches!(err, LabError::AddressOutsideTestRange(_)), "{err}");
    }
}
