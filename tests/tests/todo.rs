//! `examples/todo` from the outside, through QEMU user networking: every
//! route and every error status with its JSON body; a shard filled to its
//! capacity answers 507 and takes todos again after a delete; and several
//! clients at once, each creating, changing, reading and deleting its own
//! todos at random, checked response by response and in the final listing
//! against a model the host keeps.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bravo_tests::http_client::{connect, read_reply, request, start_service, Reply};
use bravo_tests::Running;
use serde::Deserialize;

/// A todo as the service shows it (no other fields allowed).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Todo {
    id: u64,
    title: String,
    done: bool,
}

fn start(cpus: usize) -> (Running, u16) {
    start_service("todo", |m| m.cpus(cpus).memory_mib(128).timeout(Duration::from_secs(300)))
}

fn call(stream: &mut TcpStream, method: &str, path: &str, body: &str) -> Reply {
    request(stream, method, path, body.as_bytes()).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn content_type(reply: &Reply) -> &str {
    reply.headers.lines().find_map(|l| l.strip_prefix("Content-Type: ")).unwrap_or("")
}

/// A reply that must be `status` with a todo as JSON.
#[track_caller]
fn todo_of(reply: Reply, status: u16) -> Todo {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(content_type(&reply), "application/json");
    serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("not a todo ({e}): {}", String::from_utf8_lossy(&reply.body)))
}

/// A reply that must be `status` with `{"error": "..."}`; returns the text.
#[track_caller]
fn error_of(reply: Reply, status: u16) -> String {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(content_type(&reply), "application/json", "{reply:?}");
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Error {
        error: String,
    }
    let error: Error =
        serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("not an error body ({e}): {reply:?}"));
    assert!(!error.error.is_empty());
    error.error
}

#[track_caller]
fn listing(stream: &mut TcpStream) -> Vec<Todo> {
    let reply = call(stream, "GET", "/todos", "");
    assert_eq!((reply.status, content_type(&reply)), (200, "application/json"), "{reply:?}");
    serde_json::from_slice(&reply.body).unwrap()
}

#[test]
fn every_route_answers_and_every_error_has_its_status_and_a_json_body() {
    let (_vm, port) = start(2);
    let mut s = connect(port).unwrap();
    assert_eq!(listing(&mut s), []);

    let milk = todo_of(call(&mut s, "POST", "/todos", r#"{"title": "milk"}"#), 201);
    assert_eq!((milk.title.as_str(), milk.done), ("milk", false));
    let quoted = todo_of(call(&mut s, "POST", "/todos", r#"{"title": "say \"hi\" ✓", "done": true}"#), 201);
    assert_eq!((quoted.title.as_str(), quoted.done), ("say \"hi\" ✓", true));
    assert_ne!(milk.id, quoted.id);
    assert_eq!(todo_of(call(&mut s, "GET", &format!("/todos/{}", milk.id), ""), 200), milk);

    let put =
        todo_of(call(&mut s, "PUT", &format!("/todos/{}", milk.id), r#"{"title": "oat milk", "done": true}"#), 200);
    assert_eq!(put, Todo { id: milk.id, title: "oat milk".into(), done: true });
    let patched = todo_of(call(&mut s, "PATCH", &format!("/todos/{}", milk.id), r#"{"done": false}"#), 200);
    assert_eq!(patched, Todo { id: milk.id, title: "oat milk".into(), done: false });
    let patched = todo_of(call(&mut s, "PATCH", &format!("/todos/{}", milk.id), r#"{"title": "tea"}"#), 200);
    assert_eq!(patched, Todo { id: milk.id, title: "tea".into(), done: false });
    let mut all = listing(&mut s);
    all.sort_by_key(|t| t.id);
    let mut expected = vec![patched.clone(), quoted.clone()];
    expected.sort_by_key(|t| t.id);
    assert_eq!(all, expected);

    let deleted = call(&mut s, "DELETE", &format!("/todos/{}", milk.id), "");
    assert_eq!((deleted.status, deleted.body.len()), (204, 0));
    error_of(call(&mut s, "GET", &format!("/todos/{}", milk.id), ""), 404);
    error_of(call(&mut s, "DELETE", &format!("/todos/{}", milk.id), ""), 404);
    error_of(call(&mut s, "PUT", &format!("/todos/{}", milk.id), r#"{"title": "x", "done": true}"#), 404);
    error_of(call(&mut s, "PATCH", &format!("/todos/{}", milk.id), r#"{"done": true}"#), 404);
    assert_eq!(listing(&mut s), std::slice::from_ref(&quoted));

    // 400: not JSON.
    for body in [r#"{"title": "milk""#, "", "title=milk", r#"[1,]"#, r#"{"title": "a"} {"#] {
        let error = error_of(call(&mut s, "POST", "/todos", body), 400);
        println!("400 for {body:?}: {error}");
    }
    // 422: JSON of the wrong shape or out of range.
    let long = format!(r#"{{"title": "{}"}}"#, "é".repeat(201));
    let full_length = format!(r#"{{"title": "{}"}}"#, "é".repeat(200));
    for body in [
        r#"{"title": 5}"#,
        r#"{"done": true}"#,
        r#"{"title": "a", "done": "no"}"#,
        r#"{"title": ""}"#,
        r#"{"title": "a", "x": 1}"#,
        "[]",
        &long,
    ] {
        let error = error_of(call(&mut s, "POST", "/todos", body), 422);
        println!("422 for {}: {error}", body.chars().take(40).collect::<String>());
    }
    assert_eq!(todo_of(call(&mut s, "POST", "/todos", &full_length), 201).title.chars().count(), 200);
    let at = format!("/todos/{}", quoted.id);
    error_of(call(&mut s, "PUT", &at, r#"{"title": "no done"}"#), 422);
    error_of(call(&mut s, "PATCH", &at, r#"{"done": 1}"#), 422);
    error_of(call(&mut s, "PATCH", &at, "{"), 400);
    // Nothing refused changed anything.
    assert_eq!(todo_of(call(&mut s, "GET", &at, ""), 200), quoted);

    // 404 and 405.
    for path in ["/", "/todo", "/todos/abc", "/todos/", "/todos/1/2", "/todos/99999999999999999999999"] {
        error_of(call(&mut s, "GET", path, ""), 404);
    }
    error_of(call(&mut s, "GET", "/todos/123456789", ""), 404);
    error_of(call(&mut s, "DELETE", "/todos", ""), 405);
    error_of(call(&mut s, "POST", &at, r#"{"title": "a"}"#), 405);
    error_of(call(&mut s, "PUT", "/health", ""), 405);

    // 413: a body over 4 KiB gets the JSON answer on a connection that
    // stays open; one announced over 64 KiB is refused before it is read.
    let big = format!(r#"{{"title": "{}"}}"#, "a".repeat(5000));
    error_of(call(&mut s, "POST", "/todos", &big), 413);
    assert_eq!(todo_of(call(&mut s, "GET", &at, ""), 200), quoted, "the connection goes on after a 413");
    let mut huge = connect(port).unwrap();
    huge.write_all(b"POST /todos HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n").unwrap();
    let reply = read_reply(&mut huge).unwrap();
    assert_eq!(reply.status, 413, "{reply:?}");
}

#[test]
fn a_full_shard_answers_507_and_takes_todos_again_after_a_delete() {
    /// The service's `SHARD_CAPACITY`: one shard with one cpu.
    const CAPACITY: usize = 4096;
    let (_vm, port) = start(1);
    let mut s = connect(port).unwrap();
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..CAPACITY {
        ids.push(todo_of(call(&mut s, "POST", "/todos", &format!(r#"{{"title": "todo {i}"}}"#)), 201).id);
    }
    println!("{CAPACITY} todos created in {:?}", started.elapsed());
    let error = error_of(call(&mut s, "POST", "/todos", r#"{"title": "one too many"}"#), 507);
    println!("507: {error}");
    assert_eq!(listing(&mut s).len(), CAPACITY);
    // Changes to what is stored still work when full.
    let first = format!("/todos/{}", ids[0]);
    todo_of(call(&mut s, "PATCH", &first, r#"{"done": true}"#), 200);
    assert_eq!(call(&mut s, "DELETE", &first, "").status, 204);
    let again = todo_of(call(&mut s, "POST", "/todos", r#"{"title": "room again"}"#), 201);
    assert!(!ids.contains(&again.id), "id {} handed out twice", again.id);
    error_of(call(&mut s, "POST", "/todos", r#"{"title": "full again"}"#), 507);
}

/// One client's view of its own todos.
type Model = BTreeMap<u64, (String, bool)>;

/// Random operations on one client's own todos for `run_for`, each reply
/// checked against `model`; returns the number of operations.
fn random_client(port: u16, client: u64, run_for: Duration, model: &mut Model) -> Result<usize, String> {
    let mut stream = connect(port).map_err(|e| e.to_string())?;
    let mut state = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64
        ^ (client + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        | 1;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut deleted: Vec<u64> = Vec::new();
    let started = Instant::now();
    let mut operations = 0;
    while started.elapsed() < run_for {
        operations += 1;
        let title = format!("c{client} \"{}\" {}", next(1_000_000), "ü".repeat(next(5) as usize));
        let done = next(2) == 1;
        let own = (!model.is_empty()).then(|| *model.keys().nth(next(model.len() as u64) as usize).unwrap());
        let (method, path, body) = match (next(10), own) {
            (0..=2, _) | (_, None) => ("POST", "/todos".to_string(), serde_json::json!({"title": title, "done": done})),
            (3..=4, Some(id)) => ("GET", format!("/todos/{id}"), serde_json::Value::Null),
            (5, Some(id)) => ("PUT", format!("/todos/{id}"), serde_json::json!({"title": title, "done": done})),
            (6, Some(id)) => ("PATCH", format!("/todos/{id}"), serde_json::json!({"done": done})),
            (7, Some(id)) => ("PATCH", format!("/todos/{id}"), serde_json::json!({"title": title})),
            (8, Some(id)) => ("DELETE", format!("/todos/{id}"), serde_json::Value::Null),
            // A todo this client deleted: gone for good.
            _ => match deleted.get(next(deleted.len().max(1) as u64) as usize) {
                Some(id) => ("GET", format!("/todos/{id}"), serde_json::Value::Null),
                None => ("GET", "/todos/18446744073709551615".to_string(), serde_json::Value::Null),
            },
        };
        let body = if body.is_null() { String::new() } else { body.to_string() };
        let reply =
            request(&mut stream, method, &path, body.as_bytes()).map_err(|e| format!("{method} {path}: {e}"))?;
        let what = format!(
            "client {client}: {method} {path} {body} -> {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
        let todo = || serde_json::from_slice::<Todo>(&reply.body).map_err(|e| format!("{what}: {e}"));
        let id: Option<u64> = path.strip_prefix("/todos/").map(|id| id.parse().unwrap());
        match (method, id) {
            ("POST", _) => {
                let todo = todo()?;
                if reply.status != 201 || todo.title != title || todo.done != done || model.contains_key(&todo.id) {
                    return Err(what);
                }
                model.insert(todo.id, (title, done));
            }
            ("GET", Some(id)) => match model.get(&id) {
                Some((title, done))
                    if reply.status == 200 && todo()? == (Todo { id, title: title.clone(), done: *done }) => {}
                None if reply.status == 404 => {}
                _ => return Err(what),
            },
            ("PUT", Some(id)) => {
                if reply.status != 200 || todo()? != (Todo { id, title: title.clone(), done }) {
                    return Err(what);
                }
                model.insert(id, (title, done));
            }
            ("PATCH", Some(id)) => {
                let entry = model.get_mut(&id).ok_or_else(|| what.clone())?;
                if body.contains("\"done\"") {
                    entry.1 = done;
                } else {
                    entry.0 = title;
                }
                if reply.status != 200 || todo()? != (Todo { id, title: entry.0.clone(), done: entry.1 }) {
                    return Err(what);
                }
            }
            ("DELETE", Some(id)) => {
                if reply.status != 204 || model.remove(&id).is_none() {
                    return Err(what);
                }
                deleted.push(id);
            }
            _ => unreachable!("{what}"),
        }
    }
    Ok(operations)
}

#[test]
fn clients_at_once_on_their_own_todos_agree_with_a_model() {
    const CLIENTS: u64 = 4;
    const RUN_FOR: Duration = Duration::from_secs(4);
    let (_vm, port) = start(2);
    let total = AtomicU64::new(0);
    let models: Vec<Model> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let total = &total;
                scope.spawn(move || {
                    let mut model = Model::new();
                    let operations = random_client(port, client, RUN_FOR, &mut model).unwrap_or_else(|e| panic!("{e}"));
                    total.fetch_add(operations as u64, Ordering::Relaxed);
                    model
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let operations = total.load(Ordering::Relaxed);
    println!("{operations} operations by {CLIENTS} clients in {RUN_FOR:?}");
    assert!(operations >= 40 * CLIENTS, "too few operations to prove anything: {operations}");

    let mut expected: Vec<Todo> = Vec::new();
    for model in &models {
        for (id, (title, done)) in model {
            expected.push(Todo { id: *id, title: title.clone(), done: *done });
        }
    }
    expected.sort_by_key(|t| t.id);
    let mut all = listing(&mut connect(port).unwrap());
    all.sort_by_key(|t| t.id);
    assert_eq!(all.len(), expected.len(), "ids handed to two clients, or todos lost");
    assert_eq!(all, expected);
    // Both shards were used: their ids are even and odd.
    assert!(all.iter().any(|t| t.id % 2 == 0) && all.iter().any(|t| t.id % 2 == 1), "one shard only: {all:?}");
}
