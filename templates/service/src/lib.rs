//! {{name}}'s routes: what the service answers to each request. No kernel
//! dependency, so that the unit tests below run on the host
//! (`cargo test-host`); src/main.rs serves these routes in the VM.

#![cfg_attr(any(not(test), target_os = "none"), no_std)]

// `cargo test` builds for the unikernel target (.cargo/config.toml), which
// has no test harness: say where the tests run instead.
#[cfg(all(test, target_os = "none"))]
compile_error!("these unit tests run on the host: `cargo test-host` (cargo test --lib --target x86_64-unknown-linux-gnu)");

extern crate alloc;

use alloc::format;

use microhttp::{Request, Response, Status};

/// The longest name `/hello/NAME` greets.
pub const MAX_NAME: usize = 64;

/// The response to `request`.
pub fn route(request: &Request) -> Response {
    let method = request.method.as_str();
    match (request.path.as_str(), method) {
        ("/", "GET") => Response::text(Status::Ok, concat!(env!("CARGO_PKG_NAME"), ": a Bravo service. Try /hello/NAME\n")),
        ("/health", "GET") => Response::text(Status::Ok, "ok\n"),
        (path, "GET") if path.starts_with("/hello/") => hello(&path["/hello/".len()..]),
        ("/" | "/health", _) => Response::text(Status::MethodNotAllowed, "Method Not Allowed\n"),
        (path, _) if path.starts_with("/hello/") => Response::text(Status::MethodNotAllowed, "Method Not Allowed\n"),
        _ => Response::text(Status::NotFound, "Not Found\n"),
    }
}

/// A greeting for `name`, or 400 when it is not a name.
fn hello(name: &str) -> Response {
    let valid = (1..=MAX_NAME).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        let why = format!("a name is 1 to {MAX_NAME} letters, digits, '-' or '_'\n");
        return Response::text(Status::BadRequest, &why);
    }
    Response::text(Status::Ok, &format!("Hello, {name}!\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use microhttp::{parse, Limits, Parsed};

    /// The response to a request as it comes off the wire.
    fn answer(wire: &str) -> (u16, String) {
        let Parsed::Request(request, _) = parse(wire.as_bytes(), &Limits::default()) else { panic!("not a request: {wire:?}") };
        let response = route(&request);
        (response.status.code(), String::from_utf8(response.body).expect("text body"))
    }

    fn get(path: &str) -> (u16, String) {
        answer(&format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"))
    }

    #[test]
    fn greets_by_name() {
        assert_eq!(get("/hello/ada"), (200, "Hello, ada!\n".into()));
        assert_eq!(get("/hello/x_1-y"), (200, "Hello, x_1-y!\n".into()));
    }

    #[test]
    fn refuses_what_is_not_a_name() {
        for path in ["/hello/", "/hello/a%20b", "/hello/a/b", "/hello/<script>"] {
            assert_eq!(get(path).0, 400, "{path}");
        }
        assert_eq!(get(&format!("/hello/{}", "a".repeat(MAX_NAME))).0, 200);
        assert_eq!(get(&format!("/hello/{}", "a".repeat(MAX_NAME + 1))).0, 400);
    }

    #[test]
    fn health_index_and_the_rest() {
        assert_eq!(get("/health"), (200, "ok\n".into()));
        assert!(get("/").1.contains("Try /hello/NAME"));
        assert_eq!(get("/nothing").0, 404);
        assert_eq!(answer("POST /hello/ada HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n").0, 405);
        assert_eq!(answer("DELETE / HTTP/1.1\r\nHost: test\r\n\r\n").0, 405);
    }
}
