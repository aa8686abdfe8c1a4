//! # microhttp
//!
//! HTTP/1.1 request handling for Bravo services, with no kernel
//! dependency (so it is unit- and property-tested on the host): `httparse`
//! parses request heads; this crate adds bodies by `Content-Length`,
//! limits, keep-alive, pipelining, and the error statuses a service owes
//! its clients — 400 malformed, 408 idle or too slow, 413 body too large,
//! 431 head too large, 501 for transfer codings it does not implement.
//! [`serve`] runs one connection over any [`Transport`].

#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write;

/// Response statuses the services use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Created,
    NoContent,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    PayloadTooLarge,
    HeaderFieldsTooLarge,
    InternalServerError,
    NotImplemented,
    ServiceUnavailable,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::Created => 201,
            Status::NoContent => 204,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::PayloadTooLarge => 413,
            Status::HeaderFieldsTooLarge => 431,
            Status::InternalServerError => 500,
            Status::NotImplemented => 501,
            Status::ServiceUnavailable => 503,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Created => "Created",
            Status::NoContent => "No Content",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::PayloadTooLarge => "Payload Too Large",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::InternalServerError => "Internal Server Error",
            Status::NotImplemented => "Not Implemented",
            Status::ServiceUnavailable => "Service Unavailable",
        }
    }
}

/// How much a client may send.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Request line and headers, in bytes.
    pub max_head: usize,
    /// Body, in bytes.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_head: 8 * 1024, max_body: 1024 * 1024 }
    }
}

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    pub body: Vec<u8>,
}

/// What [`parse`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request, and how many bytes it took.
    Request(Request, usize),
    /// More bytes are needed.
    Incomplete,
    /// The request is unacceptable; answer this and close.
    Error(Status),
}

const MAX_HEADERS: usize = 64;

/// Parses the request at the start of `buf`.
pub fn parse(buf: &[u8], limits: &Limits) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head => return Parsed::Error(Status::HeaderFieldsTooLarge),
        Ok(httparse::Status::Partial) => return Parsed::Incomplete,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Error(Status::HeaderFieldsTooLarge),
        Err(_) => return Parsed::Error(Status::BadRequest),
    };
    if head_len > limits.max_head {
        return Parsed::Error(Status::HeaderFieldsTooLarge);
    }
    let (Some(method), Some(path), Some(version)) = (request.method, request.path, request.version) else {
        return Parsed::Error(Status::BadRequest);
    };
    let mut keep_alive = version == 1;
    let mut content_length: Option<usize> = None;
    for header in request.headers.iter() {
        let value = core::str::from_utf8(header.value).map(str::trim);
        if header.name.eq_ignore_ascii_case("content-length") {
            let Some(length) = value.ok().and_then(|v| v.parse::<usize>().ok()) else {
                return Parsed::Error(Status::BadRequest);
            };
            if content_length.is_some_and(|l| l != length) {
                return Parsed::Error(Status::BadRequest);
            }
            content_length = Some(length);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Error(Status::NotImplemented);
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in value.unwrap_or("").split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > limits.max_body {
        return Parsed::Error(Status::PayloadTooLarge);
    }
    let Some(end) = head_len.checked_add(body_len) else { return Parsed::Error(Status::PayloadTooLarge) };
    if buf.len() < end {
        return Parsed::Incomplete;
    }
    let request = Request { method: method.to_string(), path: path.to_string(), keep_alive, body: buf[head_len..end].to_vec() };
    Parsed::Request(request, end)
}

/// A response to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: Status, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response { status, content_type, body: body.into() }
    }

    /// A plain-text response.
    pub fn text(status: Status, body: &str) -> Self {
        Response::new(status, "text/plain; charset=utf-8", body.as_bytes())
    }

    /// The bytes on the wire, announcing whether the connection stays open.
    pub fn encode(&self, keep_alive: bool) -> Vec<u8> {
        let mut head = String::new();
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\nServer: bravo\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
            self.status.code(),
            self.status.reason(),
            self.content_type,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" }
        );
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Why a transport stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// Nothing arrived within the transport's read timeout.
    TimedOut,
    /// The peer is gone, or the connection broke.
    Closed,
}

/// A byte stream with a read timeout (a TCP connection, or a test double).
pub trait Transport {
    /// Reads some bytes; `Ok(0)` when the peer finished sending.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError>;
    fn write_all(&mut self, data: &[u8]) -> Result<(), TransportError>;
    /// Writes the connection's last bytes; the connection ends after them
    /// (a TCP transport sends its FIN with them).
    fn write_last(&mut self, data: &[u8]) -> Result<(), TransportError> {
        self.write_all(data)
    }
}

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The client closed, or asked to close after a response.
    Closed,
    /// An unacceptable request was answered with this status.
    Rejected(Status),
    /// The client was idle or too slow (answered with 408).
    TimedOut,
    /// The connection broke.
    Broken,
}

/// Serves requests on `transport` until the connection ends: reads,
/// parses (pipelined requests too), calls `handler`, writes responses;
/// answers bad or slow requests with their status and closes.
pub fn serve(transport: &mut impl Transport, limits: &Limits, mut handler: impl FnMut(&Request) -> Response) -> End {
    let mut buffer: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match parse(&buffer, limits) {
            Parsed::Request(request, used) => {
                buffer.drain(..used);
                let response = handler(&request).encode(request.keep_alive);
                if !request.keep_alive {
                    return match transport.write_last(&response) {
                        Ok(()) => End::Closed,
                        Err(_) => End::Broken,
                    };
                }
                if transport.write_all(&response).is_err() {
                    return End::Broken;
                }
            }
            Parsed::Error(status) => {
                let _ = transport.write_last(&Response::text(status, status.reason()).encode(false));
                return End::Rejected(status);
            }
            Parsed::Incomplete => match transport.read(&mut chunk) {
                Ok(0) => return End::Closed,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                Err(TransportError::TimedOut) => {
                    let response = Response::text(Status::RequestTimeout, "Request Timeout");
                    let _ = transport.write_last(&response.encode(false));
                    return End::TimedOut;
                }
                Err(TransportError::Closed) => return End::Broken,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> Limits {
        Limits { max_head: 1024, max_body: 4096 }
    }

    fn request(raw: &str) -> Parsed {
        parse(raw.as_bytes(), &limits())
    }

    #[test]
    fn a_simple_get_keeps_the_connection_by_default() {
        let raw = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        let Parsed::Request(r, used) = request(raw) else { panic!("not parsed") };
        assert_eq!((r.method.as_str(), r.path.as_str(), r.keep_alive, used), ("GET", "/health", true, raw.len()));
    }

    #[test]
    fn connection_close_and_http_1_0_close() {
        let Parsed::Request(r, _) = request("GET / HTTP/1.1\r\nConnection: close\r\n\r\n") else { panic!() };
        assert!(!r.keep_alive);
        let Parsed::Request(r, _) = request("GET / HTTP/1.0\r\n\r\n") else { panic!() };
        assert!(!r.keep_alive);
        let Parsed::Request(r, _) = request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") else { panic!() };
        assert!(r.keep_alive);
    }

    #[test]
    fn bodies_follow_content_length_and_pipelined_requests_split() {
        let raw = b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n";
        let Parsed::Request(r, used) = parse(raw, &limits()) else { panic!() };
        assert_eq!(r.body, b"hello");
        assert!(matches!(parse(&raw[used..], &limits()), Parsed::Request(ref r, _) if r.path == "/"));
        assert_eq!(parse(&raw[..used - 1], &limits()), Parsed::Incomplete);
    }

    #[test]
    fn bad_requests_get_their_status() {
        assert_eq!(request("GARBAGE\r\n\r\n"), Parsed::Error(Status::BadRequest));
        assert_eq!(request("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), Parsed::Error(Status::BadRequest));
        assert_eq!(request("GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), Parsed::Error(Status::BadRequest));
        assert_eq!(request("POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n"), Parsed::Error(Status::PayloadTooLarge));
        assert_eq!(request("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), Parsed::Error(Status::NotImplemented));
        let long = alloc::format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        assert_eq!(request(&long), Parsed::Error(Status::HeaderFieldsTooLarge));
        let unfinished = alloc::format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(2000));
        assert_eq!(request(&unfinished), Parsed::Error(Status::HeaderFieldsTooLarge));
        let many: String = (0..100).map(|i| alloc::format!("H{i}: v\r\n")).collect();
        assert_eq!(request(&alloc::format!("GET / HTTP/1.1\r\n{many}\r\n")), Parsed::Error(Status::HeaderFieldsTooLarge));
    }

    /// A transport fed from a script of reads; records what is written.
    struct Script {
        reads: Vec<Result<Vec<u8>, TransportError>>,
        written: Vec<u8>,
        /// Where the bytes written by `write_last` start.
        last_from: Option<usize>,
    }

    impl Transport for Script {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
            if self.reads.is_empty() {
                return Ok(0);
            }
            let next = self.reads.remove(0)?;
            let n = next.len().min(buf.len());
            buf[..n].copy_from_slice(&next[..n]);
            if n < next.len() {
                self.reads.insert(0, Ok(next[n..].to_vec()));
            }
            Ok(n)
        }

        fn write_all(&mut self, data: &[u8]) -> Result<(), TransportError> {
            assert!(self.last_from.is_none(), "a write after the last one");
            self.written.extend_from_slice(data);
            Ok(())
        }

        fn write_last(&mut self, data: &[u8]) -> Result<(), TransportError> {
            self.write_all(data)?;
            self.last_from = Some(self.written.len() - data.len());
            Ok(())
        }
    }

    fn script(reads: Vec<Result<&[u8], TransportError>>) -> Script {
        Script { reads: reads.into_iter().map(|r| r.map(<[u8]>::to_vec)).collect(), written: Vec::new(), last_from: None }
    }

    fn run(reads: Vec<Result<&[u8], TransportError>>) -> (End, String) {
        let mut t = script(reads);
        let end = serve(&mut t, &limits(), |r| Response::text(Status::Ok, &r.path));
        (end, String::from_utf8_lossy(&t.written).into_owned())
    }

    #[test]
    fn the_response_before_a_close_is_written_as_the_last() {
        let mut t = script(vec![Ok(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n")]);
        assert_eq!(serve(&mut t, &limits(), |r| Response::text(Status::Ok, &r.path)), End::Closed);
        let from = t.last_from.expect("the closing response goes through write_last");
        assert!(String::from_utf8_lossy(&t.written[from..]).starts_with("HTTP/1.1 200 OK"));
        assert!(String::from_utf8_lossy(&t.written[..from]).ends_with("/a"), "the keep-alive response is an ordinary write");
        // A rejected request too.
        let mut t = script(vec![Ok(b"\x00\x01\r\n\r\n")]);
        assert!(matches!(serve(&mut t, &limits(), |_| Response::text(Status::Ok, "")), End::Rejected(_)));
        assert_eq!(t.last_from, Some(0));
        // With keep-alive and the client leaving, nothing is "last".
        let mut t = script(vec![Ok(b"GET /a HTTP/1.1\r\n\r\n")]);
        assert_eq!(serve(&mut t, &limits(), |r| Response::text(Status::Ok, &r.path)), End::Closed);
        assert_eq!(t.last_from, None);
    }

    #[test]
    fn serve_answers_keep_alive_requests_until_close() {
        let (end, out) = run(vec![Ok(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n")]);
        assert_eq!(end, End::Closed);
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2);
        assert!(out.ends_with("Connection: close\r\n\r\n/b"), "{out}");
    }

    #[test]
    fn serve_times_out_idle_and_slow_clients_with_408() {
        let (end, out) = run(vec![Ok(b"GET / HT"), Err(TransportError::TimedOut)]);
        assert_eq!(end, End::TimedOut);
        assert!(out.starts_with("HTTP/1.1 408 Request Timeout"), "{out}");
    }

    #[test]
    fn serve_rejects_garbage_and_closes() {
        let (end, out) = run(vec![Ok(b"\x00\x01\x02\r\n\r\n")]);
        assert_eq!(end, End::Rejected(Status::BadRequest));
        assert!(out.starts_with("HTTP/1.1 400 Bad Request") && out.contains("Connection: close"), "{out}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
            match parse(&bytes, &limits()) {
                Parsed::Request(_, used) => prop_assert!(used <= bytes.len()),
                Parsed::Incomplete => prop_assert!(bytes.len() <= limits().max_head + limits().max_body),
                Parsed::Error(_) => {}
            }
        }

        #[test]
        fn a_request_split_anywhere_parses_the_same(body in proptest::collection::vec(any::<u8>(), 0..300), split in 0usize..400) {
            let mut raw = alloc::format!("POST /echo HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            raw.extend_from_slice(&body);
            // (An empty read means the peer is done, so no empty chunks.)
            let split = split.clamp(1, raw.len() - 1);
            let (end, out) = run(vec![Ok(&raw[..split]), Ok(&raw[split..])]);
            prop_assert_eq!(end, End::Closed);
            prop_assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 1);
        }

        #[test]
        fn mangled_requests_get_an_answer_or_a_clean_close(raw in "[A-Z]{0,8} /[a-z/]{0,20} HTTP/1\\.[01]\r\n([A-Za-z-]{1,12}: [ -~]{0,40}\r\n){0,6}\r\n") {
            let (end, out) = run(vec![Ok(raw.as_bytes())]);
            match end {
                End::Closed => prop_assert!(out.is_empty() || out.starts_with("HTTP/1.1 ")),
                End::Rejected(status) => {
                    let expected = alloc::format!("HTTP/1.1 {}", status.code());
                    prop_assert!(out.starts_with(&expected), "{} does not start with {}", out, expected);
                }
                other => prop_assert!(false, "unexpected end {:?}", other),
            }
        }
    }
}
