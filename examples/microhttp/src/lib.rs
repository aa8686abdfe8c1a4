//! # microhttp
//!
//! HTTP/1.1 request handling for Bravo services, with no kernel
//! dependency (so it is unit- and property-tested on the host): `httparse`
//! parses request heads; this crate adds bodies by `Content-Length`,
//! limits, keep-alive, pipelining, and the error statuses a service owes
//! its clients — 400 malformed, 408 idle or too slow, 413 body too large,
//! 431 head too large, 501 for transfer codings it does not implement,
//! and 503 when memory for a request or its answer cannot be had: what a
//! client sends decides what is allocated, so all of it (the head buffer,
//! the body, the request's fields, the response's bytes) is allocated
//! fallibly (`try_reserve`), and error answers are built on the stack.
//! [`serve`] runs one connection over any [`Transport`] ([`IoTransport`]:
//! any `embedded-io` stream).

#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

/// Response statuses the services use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// 200 OK.
    Ok,
    /// 201 Created.
    Created,
    /// 204 No Content.
    NoContent,
    /// 400 Bad Request: the request could not be parsed.
    BadRequest,
    /// 404 Not Found.
    NotFound,
    /// 405 Method Not Allowed.
    MethodNotAllowed,
    /// 408 Request Timeout: the request did not arrive in time.
    RequestTimeout,
    /// 413 Content Too Large.
    PayloadTooLarge,
    /// Well-formed content with the wrong meaning (wrong types, missing
    /// fields, values out of range).
    UnprocessableContent,
    /// 431 Request Header Fields Too Large.
    HeaderFieldsTooLarge,
    /// 500 Internal Server Error.
    InternalServerError,
    /// 501 Not Implemented.
    NotImplemented,
    /// 503 Service Unavailable.
    ServiceUnavailable,
    /// 507 Insufficient Storage: no memory for the request.
    InsufficientStorage,
}

impl Status {
    /// The numeric status code (`200` for `Ok`).
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
            Status::UnprocessableContent => 422,
            Status::HeaderFieldsTooLarge => 431,
            Status::InternalServerError => 500,
            Status::NotImplemented => 501,
            Status::ServiceUnavailable => 503,
            Status::InsufficientStorage => 507,
        }
    }

    /// The reason phrase of the status line (`"OK"` for `Ok`).
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
            Status::UnprocessableContent => "Unprocessable Content",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::InternalServerError => "Internal Server Error",
            Status::NotImplemented => "Not Implemented",
            Status::ServiceUnavailable => "Service Unavailable",
            Status::InsufficientStorage => "Insufficient Storage",
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
    /// The method, as sent (`GET`).
    pub method: String,
    /// The request target, as sent (`/todos/3`).
    pub path: String,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// The body (`Content-Length` bytes; empty without one).
    pub body: Vec<u8>,
}

/// What [`parse`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request, and how many bytes it took.
    Request(Request, usize),
    /// More bytes are needed.
    Incomplete,
    /// The request is unacceptable (or, with 503, memory for it could not
    /// be had); answer this and close.
    Error(Status),
}

/// Memory for a request's or a response's bytes could not be had: the
/// allocator refused it (the kernel does so under memory pressure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfMemory;

/// A copy of `bytes`, allocated fallibly.
pub fn try_copy(bytes: &[u8]) -> Result<Vec<u8>, OutOfMemory> {
    let mut copy = Vec::new();
    copy.try_reserve_exact(bytes.len()).map_err(|_| OutOfMemory)?;
    copy.extend_from_slice(bytes);
    Ok(copy)
}

fn try_string(text: &str) -> Result<String, OutOfMemory> {
    let mut copy = String::new();
    copy.try_reserve_exact(text.len()).map_err(|_| OutOfMemory)?;
    copy.push_str(text);
    Ok(copy)
}

const MAX_HEADERS: usize = 64;

/// A parsed request head, borrowing from the buffer.
struct Head<'a> {
    method: &'a str,
    path: &'a str,
    keep_alive: bool,
    head_len: usize,
    body_len: usize,
}

impl Head<'_> {
    /// Where the request ends (checked against overflow by `parse_head`).
    fn end(&self) -> usize {
        self.head_len + self.body_len
    }
}

enum HeadParse<'a> {
    Complete(Head<'a>),
    Partial,
    Error(Status),
}

/// Parses the request head at the start of `buf` and checks its framing
/// against `limits`; allocates nothing.
fn parse_head<'a>(buf: &'a [u8], limits: &Limits) -> HeadParse<'a> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head => {
            return HeadParse::Error(Status::HeaderFieldsTooLarge)
        }
        Ok(httparse::Status::Partial) => return HeadParse::Partial,
        Err(httparse::Error::TooManyHeaders) => return HeadParse::Error(Status::HeaderFieldsTooLarge),
        Err(_) => return HeadParse::Error(Status::BadRequest),
    };
    if head_len > limits.max_head {
        return HeadParse::Error(Status::HeaderFieldsTooLarge);
    }
    let (Some(method), Some(path), Some(version)) = (request.method, request.path, request.version) else {
        return HeadParse::Error(Status::BadRequest);
    };
    let mut keep_alive = version == 1;
    let mut content_length: Option<usize> = None;
    for header in request.headers.iter() {
        let value = core::str::from_utf8(header.value).map(str::trim);
        if header.name.eq_ignore_ascii_case("content-length") {
            let Some(length) = value.ok().and_then(|v| v.parse::<usize>().ok()) else {
                return HeadParse::Error(Status::BadRequest);
            };
            if content_length.is_some_and(|l| l != length) {
                return HeadParse::Error(Status::BadRequest);
            }
            content_length = Some(length);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return HeadParse::Error(Status::NotImplemented);
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
    if body_len > limits.max_body || head_len.checked_add(body_len).is_none() {
        return HeadParse::Error(Status::PayloadTooLarge);
    }
    HeadParse::Complete(Head { method, path, keep_alive, head_len, body_len })
}

/// Parses the request at the start of `buf` (copying its fields out; 503
/// when memory for them could not be had).
pub fn parse(buf: &[u8], limits: &Limits) -> Parsed {
    match parse_head(buf, limits) {
        HeadParse::Partial => Parsed::Incomplete,
        HeadParse::Error(status) => Parsed::Error(status),
        HeadParse::Complete(head) if buf.len() < head.end() => Parsed::Incomplete,
        HeadParse::Complete(head) => {
            let fields = (try_string(head.method), try_string(head.path), try_copy(&buf[head.head_len..head.end()]));
            let (Ok(method), Ok(path), Ok(body)) = fields else { return Parsed::Error(Status::ServiceUnavailable) };
            Parsed::Request(Request { method, path, keep_alive: head.keep_alive, body }, head.end())
        }
    }
}

/// A response to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status line's status.
    pub status: Status,
    /// The `Content-Type` header's value.
    pub content_type: &'static str,
    /// The body (its length goes in `Content-Length`).
    pub body: Vec<u8>,
}

/// Bodies up to this size go out in one buffer with their head; larger
/// ones are written after it, without a copy.
const COALESCE: usize = 16 * 1024;

impl Response {
    /// A response with `status`, `content_type` and `body`.
    pub fn new(status: Status, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response { status, content_type, body: body.into() }
    }

    /// A plain-text response.
    pub fn text(status: Status, body: &str) -> Self {
        Response::new(status, "text/plain; charset=utf-8", body.as_bytes())
    }

    /// A response with a copy of `body`, allocated fallibly (for bodies a
    /// client's request decides the size of).
    pub fn try_copy(status: Status, content_type: &'static str, body: &[u8]) -> Result<Self, OutOfMemory> {
        Ok(Response { status, content_type, body: try_copy(body)? })
    }

    /// Writes the head (status line and headers) to `out`.
    fn write_head(&self, keep_alive: bool, out: &mut impl Write) -> core::fmt::Result {
        write!(
            out,
            "HTTP/1.1 {} {}\r\nServer: bravo\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
            self.status.code(),
            self.status.reason(),
            self.content_type,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" }
        )
    }

    /// The head, then `body` if asked, in one buffer allocated fallibly.
    fn encode_with(&self, keep_alive: bool, with_body: bool) -> Result<Vec<u8>, OutOfMemory> {
        // The head's fixed text, status, reason and a 20-digit length take
        // fewer than 160 bytes.
        let body = if with_body { self.body.len() } else { 0 };
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(160 + self.content_type.len() + body).map_err(|_| OutOfMemory)?;
        self.write_head(keep_alive, &mut Bounded(&mut bytes)).map_err(|_| OutOfMemory)?;
        if with_body {
            bytes.extend_from_slice(&self.body);
        }
        Ok(bytes)
    }

    /// The bytes on the wire, announcing whether the connection stays
    /// open; `OutOfMemory` when the allocator refuses the buffer.
    pub fn try_encode(&self, keep_alive: bool) -> Result<Vec<u8>, OutOfMemory> {
        self.encode_with(keep_alive, true)
    }
}

/// Writes into a vector's spare capacity only: never reallocates (an
/// error when the text does not fit).
struct Bounded<'a>(&'a mut Vec<u8>);

impl Write for Bounded<'_> {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        if self.0.capacity() - self.0.len() < text.len() {
            return Err(core::fmt::Error);
        }
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }
}

/// A short response built on the stack: for answers that must go out
/// when memory is short (errors, 503).
struct StackResponse {
    bytes: [u8; 256],
    len: usize,
}

impl Write for StackResponse {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        let room = self.bytes.len() - self.len;
        if room < text.len() {
            return Err(core::fmt::Error);
        }
        self.bytes[self.len..self.len + text.len()].copy_from_slice(text.as_bytes());
        self.len += text.len();
        Ok(())
    }
}

/// Answers `status` (its reason as the body) and ends the connection,
/// allocating nothing.
fn answer_and_close(transport: &mut impl Transport, status: Status) {
    let mut out = StackResponse { bytes: [0; 256], len: 0 };
    let written = write!(
        out,
        "HTTP/1.1 {} {}\r\nServer: bravo\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        status.code(),
        status.reason(),
        status.reason().len(),
        status.reason()
    );
    // (Every status's answer fits: the longest is under 200 bytes.)
    if written.is_ok() && transport.write_last(&out.bytes[..out.len]).is_ok() {
        transport.answered(status);
    }
}

/// Reads and drops up to `bytes` bytes (the rest of a refused request),
/// until the peer stops sending or the transport times out.
fn discard(transport: &mut impl Transport, chunk: &mut [u8], mut bytes: usize) {
    while bytes > 0 {
        let want = bytes.min(chunk.len());
        match transport.read(&mut chunk[..want]) {
            Ok(0) | Err(_) => return,
            Ok(n) => bytes -= n.min(bytes),
        }
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
    /// Writes all of `data`, or fails.
    fn write_all(&mut self, data: &[u8]) -> Result<(), TransportError>;
    /// Writes the connection's last bytes; the connection ends after them
    /// (a TCP transport sends its FIN with them).
    fn write_last(&mut self, data: &[u8]) -> Result<(), TransportError> {
        self.write_all(data)
    }

    /// Called once for every response written whole, after its last byte:
    /// the handler's, or one [`serve`] made itself (400, 408, 413, 431,
    /// 501, 503). For services that count what they answer; does nothing
    /// by default.
    fn answered(&mut self, _status: Status) {}
}

/// A [`Transport`] over any `embedded-io` stream (a Bravo `TcpStream`):
/// a read error of kind `TimedOut` is the client's idleness (408), any
/// other error a broken connection. The stream's own read timeout
/// applies.
pub struct IoTransport<S>(pub S);

impl<S: embedded_io::Read + embedded_io::Write> Transport for IoTransport<S> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        self.0.read(buf).map_err(|e| match embedded_io::Error::kind(&e) {
            embedded_io::ErrorKind::TimedOut => TransportError::TimedOut,
            _ => TransportError::Closed,
        })
    }

    fn write_all(&mut self, data: &[u8]) -> Result<(), TransportError> {
        self.0.write_all(data).map_err(|_| TransportError::Closed)
    }
}

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The client closed, or asked to close after a response.
    Closed,
    /// An unacceptable request was answered with this status (503: memory
    /// for the request or its response could not be had).
    Rejected(Status),
    /// The client was idle or too slow (answered with 408).
    TimedOut,
    /// The connection broke.
    Broken,
}

/// Bodies at least this large leave the read buffer by moving it, not by
/// a copy, when nothing follows them.
const MOVE_BODY: usize = 16 * 1024;
/// An empty read buffer bigger than this is released between requests.
const KEEP_BUFFER: usize = 64 * 1024;

/// What the buffer holds next.
enum Next {
    Request(Request),
    /// More bytes are needed; the request ends here when known.
    Read(Option<usize>),
    Reject(Status),
}

/// Takes the request at the start of `buffer` out of it (fallibly).
fn next_request(buffer: &mut Vec<u8>, limits: &Limits) -> Next {
    let (method, path, keep_alive, head_len, end) = match parse_head(buffer, limits) {
        HeadParse::Partial => return Next::Read(None),
        HeadParse::Error(status) => return Next::Reject(status),
        HeadParse::Complete(head) if buffer.len() < head.end() => return Next::Read(Some(head.end())),
        HeadParse::Complete(head) => match (try_string(head.method), try_string(head.path)) {
            (Ok(method), Ok(path)) => (method, path, head.keep_alive, head.head_len, head.end()),
            _ => return Next::Reject(Status::ServiceUnavailable),
        },
    };
    let body = if end == buffer.len() && end - head_len >= MOVE_BODY {
        let mut body = core::mem::take(buffer);
        body.drain(..head_len);
        body
    } else {
        let Ok(body) = try_copy(&buffer[head_len..end]) else { return Next::Reject(Status::ServiceUnavailable) };
        buffer.drain(..end);
        body
    };
    if buffer.is_empty() && buffer.capacity() > KEEP_BUFFER {
        *buffer = Vec::new();
    }
    Next::Request(Request { method, path, keep_alive, body })
}

/// Sends `response`; `Err(None)` when the connection broke, `Err(Some(503))`
/// when memory for its bytes could not be had (answered, and closed).
fn send(transport: &mut impl Transport, response: &Response, keep_alive: bool) -> Result<(), Option<Status>> {
    let coalesce = response.body.len() <= COALESCE;
    let Ok(bytes) = response.encode_with(keep_alive, coalesce) else {
        answer_and_close(transport, Status::ServiceUnavailable);
        return Err(Some(Status::ServiceUnavailable));
    };
    let written = match (coalesce, keep_alive) {
        (true, true) => transport.write_all(&bytes),
        (true, false) => transport.write_last(&bytes),
        (false, true) => transport.write_all(&bytes).and_then(|()| transport.write_all(&response.body)),
        (false, false) => transport.write_all(&bytes).and_then(|()| transport.write_last(&response.body)),
    };
    written.map_err(|_| None)
}

/// The most body bytes read at once, straight into the request's buffer.
const BODY_READ: usize = 64 * 1024;

/// Serves requests on `transport` until the connection ends: reads,
/// parses (pipelined requests too), calls `handler`, writes responses;
/// answers bad or slow requests with their status and closes. Memory for
/// what the client sends (the head, the body) and for the response's
/// bytes is allocated fallibly: when the allocator refuses it, the client
/// gets 503 and the connection is closed.
pub fn serve(transport: &mut impl Transport, limits: &Limits, mut handler: impl FnMut(&Request) -> Response) -> End {
    let mut buffer: Vec<u8> = Vec::new();
    // Heads are read through a small chunk on the stack (a connection
    // waiting for its next request then holds one page of stack); bodies
    // of known length straight into the buffer.
    let mut chunk = [0u8; 1024];
    loop {
        match next_request(&mut buffer, limits) {
            Next::Request(request) => {
                let keep_alive = request.keep_alive;
                let response = handler(&request);
                drop(request);
                let sent = send(transport, &response, keep_alive);
                if sent.is_ok() {
                    transport.answered(response.status);
                }
                match sent {
                    Ok(()) if keep_alive => {
                        // A connection waiting for its next request keeps no
                        // buffer.
                        if buffer.is_empty() {
                            buffer = Vec::new();
                        }
                    }
                    Ok(()) => return End::Closed,
                    Err(Some(status)) => return End::Rejected(status),
                    Err(None) => return End::Broken,
                }
            }
            Next::Reject(status) => {
                answer_and_close(transport, status);
                return End::Rejected(status);
            }
            Next::Read(end) => {
                // Room for the whole request at once when its length is known.
                let room = end.map_or(0, |end| end - buffer.len());
                if buffer.try_reserve_exact(room).is_err() {
                    answer_and_close(transport, Status::ServiceUnavailable);
                    // The client may still be sending the body: take it (into
                    // the stack) so that it reads the answer, not a reset.
                    discard(transport, &mut chunk, room);
                    return End::Rejected(Status::ServiceUnavailable);
                }
                let read = if room > chunk.len() {
                    // Reserved above: no allocation.
                    let start = buffer.len();
                    buffer.resize(start + room.min(BODY_READ), 0);
                    let read = transport.read(&mut buffer[start..]);
                    buffer.truncate(start + *read.as_ref().unwrap_or(&0));
                    read
                } else {
                    let read = transport.read(&mut chunk);
                    if let Ok(n) = read {
                        if buffer.try_reserve(n).is_err() {
                            answer_and_close(transport, Status::ServiceUnavailable);
                            return End::Rejected(Status::ServiceUnavailable);
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                    }
                    read
                };
                match read {
                    Ok(0) => return End::Closed,
                    Ok(_) => {}
                    Err(TransportError::TimedOut) => {
                        answer_and_close(transport, Status::RequestTimeout);
                        return End::TimedOut;
                    }
                    Err(TransportError::Closed) => return End::Broken,
                }
            }
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
        assert_eq!(
            request("GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Parsed::Error(Status::BadRequest)
        );
        assert_eq!(request("POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n"), Parsed::Error(Status::PayloadTooLarge));
        assert_eq!(
            request("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Parsed::Error(Status::NotImplemented)
        );
        let long = alloc::format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        assert_eq!(request(&long), Parsed::Error(Status::HeaderFieldsTooLarge));
        let unfinished = alloc::format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(2000));
        assert_eq!(request(&unfinished), Parsed::Error(Status::HeaderFieldsTooLarge));
        let many: String = (0..100).map(|i| alloc::format!("H{i}: v\r\n")).collect();
        assert_eq!(
            request(&alloc::format!("GET / HTTP/1.1\r\n{many}\r\n")),
            Parsed::Error(Status::HeaderFieldsTooLarge)
        );
    }

    /// A transport fed from a script of reads; records what is written.
    /// (Reading allocates nothing, and `written` has its room up front, so
    /// that tests can refuse the service's allocations without the
    /// script's failing.)
    struct Script {
        reads: Vec<Result<Vec<u8>, TransportError>>,
        /// The next read and how much of it was read.
        next: usize,
        offset: usize,
        written: Vec<u8>,
        /// Where the bytes written by `write_last` start.
        last_from: Option<usize>,
        /// The statuses reported answered, in order.
        answered: Vec<Status>,
    }

    impl Transport for Script {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
            let Some(next) = self.reads.get(self.next) else { return Ok(0) };
            let next = next.as_ref().map_err(|e| *e)?;
            let n = (next.len() - self.offset).min(buf.len());
            buf[..n].copy_from_slice(&next[self.offset..self.offset + n]);
            self.offset += n;
            if self.offset == next.len() {
                (self.next, self.offset) = (self.next + 1, 0);
            }
            Ok(n)
        }

        fn write_all(&mut self, data: &[u8]) -> Result<(), TransportError> {
            assert!(self.last_from.is_none(), "a write after the last one");
            assert!(
                self.written.capacity() - self.written.len() >= data.len(),
                "the script's room for writes is too small"
            );
            self.written.extend_from_slice(data);
            Ok(())
        }

        fn write_last(&mut self, data: &[u8]) -> Result<(), TransportError> {
            self.write_all(data)?;
            self.last_from = Some(self.written.len() - data.len());
            Ok(())
        }

        fn answered(&mut self, status: Status) {
            self.answered.push(status);
        }
    }

    fn script(reads: Vec<Result<&[u8], TransportError>>) -> Script {
        let reads = reads.into_iter().map(|r| r.map(<[u8]>::to_vec)).collect();
        Script {
            reads,
            next: 0,
            offset: 0,
            written: Vec::with_capacity(1 << 20),
            last_from: None,
            answered: Vec::new(),
        }
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
        assert!(
            String::from_utf8_lossy(&t.written[..from]).ends_with("/a"),
            "the keep-alive response is an ordinary write"
        );
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
    fn every_response_written_is_reported_answered_once() {
        // Two answered by the handler, then one refused by serve.
        let mut t = script(vec![Ok(b"GET /a HTTP/1.1\r\n\r\nGET /missing HTTP/1.1\r\n\r\n\x00\x01\r\n\r\n")]);
        let end = serve(&mut t, &limits(), |r| match r.path.as_str() {
            "/a" => Response::text(Status::Ok, "a"),
            _ => Response::text(Status::NotFound, "no"),
        });
        assert_eq!(end, End::Rejected(Status::BadRequest));
        assert_eq!(t.answered, [Status::Ok, Status::NotFound, Status::BadRequest]);
        // A response memory could not be had for: only its 503 is.
        let mut t = script(vec![Ok(b"GET /big HTTP/1.1\r\n\r\n")]);
        let mut answer = Some(Response::new(Status::Ok, "text/plain", vec![b'a'; 12 * 1024]));
        let end = refusing_over(8 * 1024, || serve(&mut t, &limits(), |_| answer.take().expect("one request served")));
        assert_eq!(end, End::Rejected(Status::ServiceUnavailable));
        assert_eq!(t.answered, [Status::ServiceUnavailable]);
        // An idle client's 408 too; nothing for a connection that broke.
        let (mut idle, mut broken) =
            (script(vec![Err(TransportError::TimedOut)]), script(vec![Err(TransportError::Closed)]));
        serve(&mut idle, &limits(), |_| Response::text(Status::Ok, ""));
        serve(&mut broken, &limits(), |_| Response::text(Status::Ok, ""));
        assert_eq!((idle.answered.as_slice(), broken.answered.as_slice()), (&[Status::RequestTimeout][..], &[][..]));
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

    /// A global allocator for this test binary that refuses, on threads
    /// that ask for it, every allocation larger than a limit: memory
    /// exhaustion as `serve` meets it in the kernel (a null from the
    /// allocator), on the host.
    mod refusing {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static LARGEST: Cell<usize> = const { Cell::new(usize::MAX) };
        }

        fn refused(size: usize) -> bool {
            LARGEST.try_with(|largest| size > largest.get()).unwrap_or(false)
        }

        pub struct Refusing;

        // SAFETY: every call is passed to the system allocator unchanged,
        // or answered with null (a valid answer of `alloc`/`realloc`).
        unsafe impl GlobalAlloc for Refusing {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                if refused(layout.size()) {
                    std::ptr::null_mut()
                } else {
                    // SAFETY: the caller's contract, passed on.
                    unsafe { System.alloc(layout) }
                }
            }

            unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                if refused(layout.size()) {
                    std::ptr::null_mut()
                } else {
                    // SAFETY: the caller's contract, passed on.
                    unsafe { System.alloc_zeroed(layout) }
                }
            }

            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                if refused(new_size) {
                    std::ptr::null_mut()
                } else {
                    // SAFETY: the caller's contract, passed on.
                    unsafe { System.realloc(ptr, layout, new_size) }
                }
            }

            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                // SAFETY: as above.
                unsafe { System.dealloc(ptr, layout) }
            }
        }

        #[global_allocator]
        static ALLOCATOR: Refusing = Refusing;

        /// Runs `f` with allocations over `largest` bytes refused on this
        /// thread.
        pub fn refusing_over<R>(largest: usize, f: impl FnOnce() -> R) -> R {
            LARGEST.with(|l| l.set(largest));
            let result = f();
            LARGEST.with(|l| l.set(usize::MAX));
            result
        }
    }

    use refusing::refusing_over;

    fn post(path: &str, body: &[u8]) -> Vec<u8> {
        let mut raw = alloc::format!("POST {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        raw.extend_from_slice(body);
        raw
    }

    fn big_limits() -> Limits {
        Limits { max_head: 16 * 1024, max_body: 1 << 20 }
    }

    /// Serves `raw` with allocations over `largest` refused; the handler
    /// answers with the body's length.
    fn serve_refusing(raw: &[u8], largest: usize) -> (End, String) {
        let mut t = script(vec![Ok(raw)]);
        let end = refusing_over(largest, || {
            serve(&mut t, &big_limits(), |r| Response::new(Status::Ok, "text/plain", r.body.len().to_string()))
        });
        (end, String::from_utf8_lossy(&t.written).into_owned())
    }

    #[test]
    fn a_body_the_allocator_refuses_gets_503_and_a_close() {
        let raw = post("/put", &[7u8; 100_000]);
        // The same request is served when memory allows.
        let (end, out) = serve_refusing(&raw, usize::MAX);
        assert_eq!(end, End::Closed);
        assert!(out.starts_with("HTTP/1.1 200 OK") && out.ends_with("100000"), "{out}");
        let (end, out) = serve_refusing(&raw, 32 * 1024);
        assert_eq!(end, End::Rejected(Status::ServiceUnavailable));
        assert!(out.starts_with("HTTP/1.1 503 Service Unavailable") && out.contains("Connection: close"), "{out}");
        // The rest of the body was read (and dropped), so that the client
        // gets the answer rather than a reset.
        let mut t = script(vec![Ok(&raw[..5000]), Ok(&raw[5000..])]);
        let end = refusing_over(32 * 1024, || serve(&mut t, &big_limits(), |_| Response::text(Status::Ok, "")));
        assert_eq!(end, End::Rejected(Status::ServiceUnavailable));
        assert_eq!(t.next, 2, "the body was not read to its end");
    }

    #[test]
    fn request_fields_the_allocator_refuses_get_503() {
        let long_path = alloc::format!("GET /{} HTTP/1.1\r\n\r\n", "p".repeat(10_000));
        let (end, out) = serve_refusing(long_path.as_bytes(), 4096);
        assert_eq!(end, End::Rejected(Status::ServiceUnavailable), "{out}");
        // parse() says the same.
        let parsed = refusing_over(4096, || parse(long_path.as_bytes(), &big_limits()));
        assert_eq!(parsed, Parsed::Error(Status::ServiceUnavailable));
        let body = post("/x", &[1u8; 8000]);
        assert_eq!(refusing_over(4096, || parse(&body, &big_limits())), Parsed::Error(Status::ServiceUnavailable));
        assert!(matches!(parse(&body, &big_limits()), Parsed::Request(ref r, _) if r.body.len() == 8000));
    }

    #[test]
    fn a_response_the_allocator_refuses_gets_503() {
        // A 12 KiB answer is encoded with its head in one buffer: refused
        // over 8 KiB.
        let mut t = script(vec![Ok(b"GET /big HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n")]);
        let mut answer = Some(Response::new(Status::Ok, "text/plain", vec![b'a'; 12 * 1024]));
        let end = refusing_over(8 * 1024, || serve(&mut t, &limits(), |_| answer.take().expect("one request served")));
        assert_eq!(end, End::Rejected(Status::ServiceUnavailable));
        let out = String::from_utf8_lossy(&t.written);
        assert!(out.starts_with("HTTP/1.1 503 Service Unavailable") && out.contains("Connection: close"), "{out}");
        assert_eq!(t.last_from, Some(0));
    }

    #[test]
    fn a_large_response_goes_out_without_a_copy() {
        // 200 KiB after its head: no allocation near its size is needed.
        let body: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
        let mut t = script(vec![Ok(b"GET /big HTTP/1.1\r\nConnection: close\r\n\r\n")]);
        let mut answer = Some(Response::new(Status::Ok, "application/octet-stream", body.clone()));
        let end = refusing_over(4096, || serve(&mut t, &limits(), |_| answer.take().expect("one request served")));
        assert_eq!(end, End::Closed);
        let head = alloc::format!("HTTP/1.1 200 OK\r\nServer: bravo\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
        assert_eq!(&t.written[..head.len()], head.as_bytes());
        assert_eq!(&t.written[head.len()..], &body[..]);
        assert_eq!(t.last_from, Some(head.len()), "the body is the last write");
    }

    #[test]
    fn a_large_body_reaches_the_handler_intact_and_pipelining_still_works() {
        let body: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 256) as u8).collect();
        for pipelined in [false, true] {
            let mut bytes = post("/a", &body);
            if pipelined {
                bytes.extend_from_slice(b"GET /b HTTP/1.1\r\nConnection: close\r\n\r\n");
            }
            // Split in uneven reads.
            let reads: Vec<Result<&[u8], TransportError>> = bytes.chunks(7000).map(Ok).collect();
            let mut t = script(reads);
            let mut seen = Vec::new();
            let end = serve(&mut t, &big_limits(), |r| {
                seen.push((r.path.clone(), r.body == body));
                Response::text(Status::Ok, "ok")
            });
            assert_eq!(end, End::Closed);
            let expected: Vec<(String, bool)> =
                if pipelined { vec![("/a".into(), true), ("/b".into(), false)] } else { vec![("/a".into(), true)] };
            assert_eq!(seen, expected);
        }
    }

    /// A stream of `embedded-io` whose reads time out after its data.
    struct Idle(&'static [u8], Vec<u8>);

    impl embedded_io::ErrorType for Idle {
        type Error = embedded_io::ErrorKind;
    }

    impl embedded_io::Read for Idle {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, embedded_io::ErrorKind> {
            if self.0.is_empty() {
                return Err(embedded_io::ErrorKind::TimedOut);
            }
            let n = self.0.len().min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    impl embedded_io::Write for Idle {
        fn write(&mut self, data: &[u8]) -> Result<usize, embedded_io::ErrorKind> {
            self.1.extend_from_slice(data);
            Ok(data.len())
        }

        fn flush(&mut self) -> Result<(), embedded_io::ErrorKind> {
            Ok(())
        }
    }

    #[test]
    fn an_embedded_io_stream_serves_and_its_timeout_is_a_408() {
        let mut t = IoTransport(Idle(b"GET /a HTTP/1.1\r\n\r\n", Vec::new()));
        assert_eq!(serve(&mut t, &limits(), |r| Response::text(Status::Ok, &r.path)), End::TimedOut);
        let out = String::from_utf8_lossy(&t.0 .1).into_owned();
        assert!(out.starts_with("HTTP/1.1 200 OK") && out.contains("\r\n\r\n/aHTTP/1.1 408 Request Timeout"), "{out}");
    }

    #[test]
    fn insufficient_storage_is_507() {
        assert_eq!(
            (Status::InsufficientStorage.code(), Status::InsufficientStorage.reason()),
            (507, "Insufficient Storage")
        );
        let bytes = Response::text(Status::InsufficientStorage, "full").try_encode(true).unwrap();
        assert!(String::from_utf8_lossy(&bytes).starts_with("HTTP/1.1 507 Insufficient Storage\r\n"));
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
