//! The network pieces of the tool: a one-request HTTP/1.1 client, and the reader and writer of
//! captured requests (`listen --save`, `verify --request`).

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Why a request could not be sent or answered.
#[derive(Debug)]
pub(crate) struct NetError(pub(crate) String);

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks that `url` is a plain `http://host[:port]/path` URL.
pub(crate) fn parse_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{url}: `send` speaks plain HTTP only (to keep the tool free of a TLS stack); \
                 send to the local side of your tunnel or receiver (http://127.0.0.1:PORT/...)"
            ))
        }
        _ => return Err(format!("{url}: the URL must start with http://")),
    }
    if uri.host().is_none() {
        return Err(format!("{url}: the URL has no host"));
    }
    Ok(uri)
}

/// Sends one request to `target` (an absolute `http://` URL: where to connect) on a new
/// connection and reads the whole answer, all within `timeout`.
pub(crate) async fn send(
    target: &Uri,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<(Response<()>, Bytes), NetError> {
    tokio::time::timeout(timeout, send_inner(target, request))
        .await
        .map_err(|_| NetError(format!("no answer within {} s", timeout.as_secs_f32())))?
}

async fn send_inner(
    uri: &Uri,
    request: Request<Full<Bytes>>,
) -> Result<(Response<()>, Bytes), NetError> {
    let host = uri.host().unwrap_or("127.0.0.1");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| NetError(format!("cannot connect to {host}:{port}: {e}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| NetError(format!("HTTP handshake with {host}:{port} failed: {e}")))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| NetError(format!("request to {uri} failed: {e}")))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| NetError(format!("reading the answer of {uri} failed: {e}")))?
        .to_bytes();
    driver.abort();
    Ok((Response::from_parts(parts, ()), body))
}

/// A request read back from a file: what `verify --request` checks.
#[derive(Debug, Clone)]
pub(crate) struct Captured {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) body: Vec<u8>,
    /// Remarks about the file (extra bytes after the body, a short body, ...).
    pub(crate) notes: Vec<String>,
}

impl Captured {
    /// The first header named `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// Parses a raw HTTP/1.1 request: request line, headers, a blank line, the body. Line ends may
/// be CRLF or LF (a file edited by hand). The body is taken by `Content-Length`, de-chunked for
/// `Transfer-Encoding: chunked`, or else is the rest of the file.
pub(crate) fn parse_captured(raw: &[u8]) -> Result<Captured, String> {
    let (head_end, body_start) = find_head_end(raw).ok_or(
        "no blank line ending the headers: not a raw HTTP request (request line, headers, blank \
         line, body)",
    )?;
    let head = std::str::from_utf8(&raw[..head_end])
        .map_err(|_| "the request head is not UTF-8 text".to_owned())?;
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(format!(
            "the first line should look like `POST /path HTTP/1.1`, found {request_line:?}"
        ));
    };
    let mut headers = Vec::new();
    for line in lines {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("a header line without `:`: {line:?}"));
        };
        headers.push((
            name.trim().to_owned(),
            value.trim_matches([' ', '\t']).as_bytes().to_vec(),
        ));
    }
    let mut captured = Captured {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
        body: Vec::new(),
        notes: Vec::new(),
    };
    let rest = &raw[body_start..];
    let chunked = captured.header("transfer-encoding").is_some_and(|v| {
        String::from_utf8_lossy(v)
            .to_ascii_lowercase()
            .contains("chunked")
    });
    if chunked {
        captured.body = dechunk(rest)?;
    } else if let Some(length) = captured.header("content-length") {
        let length: usize = std::str::from_utf8(length)
            .ok()
            .and_then(|l| l.trim().parse().ok())
            .ok_or("Content-Length is not a number")?;
        if rest.len() < length {
            captured.notes.push(format!(
                "the file holds {} body bytes but Content-Length says {length}: the capture is \
                 truncated",
                rest.len()
            ));
            captured.body = rest.to_vec();
        } else {
            if rest.len() > length {
                captured.notes.push(format!(
                    "{} bytes after the Content-Length body were ignored (an editor's trailing \
                     newline?)",
                    rest.len() - length
                ));
            }
            captured.body = rest[..length].to_vec();
        }
    } else {
        captured.body = rest.to_vec();
    }
    Ok(captured)
}

fn find_head_end(raw: &[u8]) -> Option<(usize, usize)> {
    let crlf = raw.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = raw.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(c), Some(l)) if l < c => Some((l, l + 2)),
        (Some(c), _) => Some((c, c + 4)),
        (None, Some(l)) => Some((l, l + 2)),
        (None, None) => None,
    }
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk size line without CRLF")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err("the chunked body is truncated".into());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Writes a request as raw HTTP/1.1, the body with an exact `Content-Length` (a chunked body
/// was already joined), so `verify --request` can read it back.
pub(crate) fn write_captured(
    method: &http::Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Vec<u8> {
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut out = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    for (name, value) in headers {
        if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_crlf_lf_chunked_and_trailing_bytes() {
        let c = parse_captured(
            b"POST /hook HTTP/1.1\r\nX-Webhook-Signature: t=1,v1=ab\r\nContent-Length: 2\r\n\r\n{}\n",
        )
        .unwrap();
        assert_eq!(c.method, "POST");
        assert_eq!(c.target, "/hook");
        assert_eq!(c.header("x-webhook-signature"), Some(&b"t=1,v1=ab"[..]));
        assert_eq!(c.body, b"{}");
        assert_eq!(c.notes.len(), 1);

        let c = parse_captured(b"POST / HTTP/1.1\nA: b\n\n{\"x\":1}").unwrap();
        assert_eq!(c.body, b"{\"x\":1}");

        let c = parse_captured(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(c.body, b"{\"a\":1}");

        assert!(parse_captured(b"no head here").is_err());
    }

    #[test]
    fn written_requests_read_back() {
        let mut headers = HeaderMap::new();
        headers.insert("x-webhook-signature", "t=5,v1=00".parse().unwrap());
        headers.insert("transfer-encoding", "chunked".parse().unwrap());
        let raw = write_captured(
            &http::Method::POST,
            &"/webhooks/metigan?x=1".parse().unwrap(),
            &headers,
            b"{\"event\":\"e\"}\r\n\r\n",
        );
        let c = parse_captured(&raw).unwrap();
        assert_eq!(c.target, "/webhooks/metigan?x=1");
        assert_eq!(c.body, b"{\"event\":\"e\"}\r\n\r\n");
        assert!(c.notes.is_empty());
        assert!(c.header("transfer-encoding").is_none());
    }

    #[test]
    fn only_http_urls() {
        assert!(parse_url("http://127.0.0.1:3000/webhooks/metigan").is_ok());
        assert!(parse_url("https://example.com/")
            .unwrap_err()
            .contains("plain HTTP"));
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("/relative").is_err());
    }
}
