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

/// Checks that `url` is a plain `http://host[:port]/path` URL, without credentials.
///
/// Error messages never repeat a `user:password@` part of `url`.
pub(crate) fn parse_url(url: &str) -> Result<Uri, String> {
    let shown = redact_userinfo(url);
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {shown:?}: {e}"))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!(
            "{shown}: the URL has a user name or password (`user:password@` before the host); \
             the tool does not send credentials (they would be printed and forwarded in \
             `Host`): remove them from the URL"
        ));
    }
    let url = shown.as_str();
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{url}: the tool speaks plain HTTP only (to keep it free of a TLS stack); \
                 use the local side of your tunnel, receiver or admin port \
                 (http://127.0.0.1:PORT/...)"
            ))
        }
        _ => return Err(format!("{url}: the URL must start with http://")),
    }
    if uri.host().is_none() {
        return Err(format!("{url}: the URL has no host"));
    }
    Ok(uri)
}

/// `url` with anything before an `@` in its authority replaced by `***`, for messages.
fn redact_userinfo(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
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

/// The header `listen --save` adds to a capture whose body was not read whole (over the body
/// limit, or a read error): what happened and how many bytes were saved. A header of this name
/// sent by the client is not saved, so the marker is always the tool's own.
pub(crate) const TRUNCATED_HEADER: &str = "x-metigan-webhook-truncated";

/// Parses a raw HTTP/1.1 request: request line, headers, a blank line, the body. Line ends may
/// be CRLF or LF (a file edited by hand). The head is read as bytes: header values are kept
/// byte for byte (0x80-0xFF included, as HTTP allows and `listen --save` writes them), only the
/// request line and header names are decoded (lossily) for display. The body is taken by
/// `Content-Length`, de-chunked for `Transfer-Encoding: chunked`, or else is the rest of the
/// file.
pub(crate) fn parse_captured(raw: &[u8]) -> Result<Captured, String> {
    let (head_end, body_start) = find_head_end(raw).ok_or(
        "no blank line ending the headers: not a raw HTTP request (request line, headers, blank \
         line, body)",
    )?;
    let mut lines = raw[..head_end]
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let request_line = String::from_utf8_lossy(lines.next().unwrap_or_default());
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(format!(
            "the first line should look like `POST /path HTTP/1.1`, found {request_line:?}"
        ));
    };
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(format!(
                "a header line without `:`: {:?}",
                String::from_utf8_lossy(line)
            ));
        };
        headers.push((
            String::from_utf8_lossy(&line[..colon]).trim().to_owned(),
            trim_ows(&line[colon + 1..]).to_vec(),
        ));
    }
    let mut captured = Captured {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
        body: Vec::new(),
        notes: Vec::new(),
    };
    if let Some(truncated) = captured.header(TRUNCATED_HEADER) {
        let truncated = String::from_utf8_lossy(truncated).into_owned();
        captured.notes.push(format!(
            "the capture is truncated: `listen` did not read the whole body ({truncated})"
        ));
    }
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

/// `value` without the spaces and tabs around it.
fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("the chunked body is truncated: a chunk size line without CRLF")?;
        let size_line = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_line.split(';').next().unwrap_or_default().trim();
        if size_text.is_empty() || !size_text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "bad chunk size {size_text:?}: not a hexadecimal number"
            ));
        }
        let size = usize::from_str_radix(size_text, 16).map_err(|_| {
            format!(
                "chunk size {size_text:?} is too large (over {} bytes)",
                usize::MAX
            )
        })?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let Some(data) = rest.get(..size) else {
            return Err(format!(
                "the chunked body is truncated: a chunk of {size} bytes, but {} bytes are left \
                 in the file",
                rest.len()
            ));
        };
        let Some(after) = rest[size..].strip_prefix(b"\r\n") else {
            return Err(format!(
                "the {size}-byte chunk is not followed by CRLF: its size line is wrong, or the \
                 file was changed"
            ));
        };
        body.extend_from_slice(data);
        rest = after;
    }
}

/// Writes a request as raw HTTP/1.1, the body with an exact `Content-Length` (a chunked body
/// was already joined), so `verify --request` can read it back. `truncated` (the body was not
/// read whole) is written as a [`TRUNCATED_HEADER`] header; header values are written byte for
/// byte.
pub(crate) fn write_captured(
    method: &http::Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    truncated: Option<&str>,
) -> Vec<u8> {
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut out = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    for (name, value) in headers {
        if name == http::header::CONTENT_LENGTH
            || name == http::header::TRANSFER_ENCODING
            || name == TRUNCATED_HEADER
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(truncated) = truncated {
        // One line: no CR or LF can end the header early.
        let truncated = truncated.replace(['\r', '\n'], " ");
        out.extend_from_slice(format!("{TRUNCATED_HEADER}: {truncated}\r\n").as_bytes());
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
            None,
        );
        let c = parse_captured(&raw).unwrap();
        assert_eq!(c.target, "/webhooks/metigan?x=1");
        assert_eq!(c.body, b"{\"event\":\"e\"}\r\n\r\n");
        assert!(c.notes.is_empty());
        assert!(c.header("transfer-encoding").is_none());
    }

    #[test]
    fn bad_chunk_sizes_are_errors_not_panics() {
        let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (chunks, expected) in [
            (&b"ffffffffffffffff\r\nab\r\n0\r\n\r\n"[..], "truncated"),
            (b"fffffffffffffffe\r\nab\r\n0\r\n\r\n", "truncated"),
            (b"10000000000000000\r\nab\r\n", "too large"),
            (b"+2\r\nab\r\n0\r\n\r\n", "not a hexadecimal number"),
            (b"2\r\nabXY0\r\n\r\n", "not followed by CRLF"),
            (b"2\r\nab", "not followed by CRLF"),
            (b"2\r\nab\r\n", "size line without CRLF"),
        ] {
            let raw = [&head[..], chunks].concat();
            let error = parse_captured(&raw).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
        let raw = [&head[..], b"2;ext=1\r\nab\r\n0\r\n\r\n"].concat();
        assert_eq!(parse_captured(&raw).unwrap().body, b"ab");
    }

    #[test]
    fn header_values_are_bytes() {
        let raw = b"POST /h\xe9 HTTP/1.1\r\nX-A:  caf\xe9\xff \t\r\nX-\xe9: 1\r\n\r\n{}";
        let c = parse_captured(raw).unwrap();
        assert_eq!(c.target, "/h\u{fffd}");
        assert_eq!(c.header("x-a"), Some(&b"caf\xe9\xff"[..]));
        assert_eq!(c.headers[1].0, "X-\u{fffd}");
        assert_eq!(c.body, b"{}");

        // Written by `listen --save` and read back, the same bytes.
        let mut headers = HeaderMap::new();
        headers.insert("x-note", http::HeaderValue::from_bytes(b"caf\xe9").unwrap());
        // A client's own marker is dropped: the marker is the tool's alone.
        headers.insert(TRUNCATED_HEADER, "spoofed".parse().unwrap());
        let raw = write_captured(
            &http::Method::POST,
            &"/".parse().unwrap(),
            &headers,
            b"{}",
            None,
        );
        let c = parse_captured(&raw).unwrap();
        assert_eq!(c.header("x-note"), Some(&b"caf\xe9"[..]));
        assert!(c.header(TRUNCATED_HEADER).is_none());
        assert!(c.notes.is_empty());

        let raw = write_captured(
            &http::Method::POST,
            &"/".parse().unwrap(),
            &headers,
            b"{",
            Some("body_read_error\r\nx: y"),
        );
        let c = parse_captured(&raw).unwrap();
        assert_eq!(
            c.header(TRUNCATED_HEADER),
            Some(&b"body_read_error  x: y"[..])
        );
        assert!(c.notes[0].contains("truncated"), "{:?}", c.notes);
        assert_eq!(c.body, b"{");
    }

    #[test]
    fn only_http_urls() {
        assert!(parse_url("http://127.0.0.1:3000/webhooks/metigan").is_ok());
        assert!(parse_url("https://example.com/")
            .unwrap_err()
            .contains("plain HTTP"));
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("/relative").is_err());
        for url in [
            "http://user:s3cret@127.0.0.1:3000/hook",
            "http://user@127.0.0.1/",
            "http://:s3cret@127.0.0.1/",
            "https://user:s3cret@example.com/",
        ] {
            let error = parse_url(url).unwrap_err();
            assert!(error.contains("user name or password"), "{error}");
            assert!(
                !error.contains("s3cret") && !error.contains("user@"),
                "{error}"
            );
        }
        assert!(!parse_url("http://u:s3cret@bad host/")
            .unwrap_err()
            .contains("s3cret"));
        assert_eq!(
            redact_userinfo("http://127.0.0.1/a@b"),
            "http://127.0.0.1/a@b"
        );
    }
}
