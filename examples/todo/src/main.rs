//! A JSON REST API of todos on port 80 (`serde_json` over `microhttp`):
//!
//! - `GET /todos`: every todo, `[{"id": 3, "title": "milk", "done": false}, ...]`
//!   (shard by shard, each in id order);
//! - `POST /todos` with `{"title": "...", "done": false}` (`done` may be
//!   left out): 201 and the new todo;
//! - `GET /todos/{id}`: 200 and the todo;
//! - `PUT /todos/{id}` with both fields: 200 and the replaced todo;
//! - `PATCH /todos/{id}` with either field: 200 and the changed todo;
//! - `DELETE /todos/{id}`: 204;
//! - `GET /health`: `ok`.
//!
//! Refusals carry `{"error": "..."}`: 400 when the body is not JSON, 422
//! when it is JSON of the wrong shape (wrong types, missing or unknown
//! fields) or out of range (a title must have 1 to 200 characters), 404
//! for an unknown path or id, 405 for a method the path does not take,
//! 413 for a body over 4 KiB (bodies over 64 KiB are refused by
//! `microhttp` before they are read, with its plain-text 413 and a
//! close), 507 when the store is full (4,096 todos per shard, or the
//! kernel reports memory pressure), 503 when memory for an answer cannot
//! be had.
//!
//! As in `kv`, the todos are split in one shard per cpu, each owned by a
//! thread on its cpu; a connection's thread sends each operation to its
//! shard as a message and sleeps for the reply. A new todo goes to the
//! shard of the cpu that serves the request, and its id names the shard
//! (`id % cpus`): ids are unique across shards with no shared counter.
//! The logic (routes, parsing, validation, a shard's store) is the
//! `todo_api` library beside this file, unit-tested on the host.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::time::Duration;

use bravo::net::{NetError, TcpListener};
use bravo::sync::channel::{self, Receiver, Sender};
use bravo::{println, thread};
use microhttp::{IoTransport, Limits, Request, Response, Status};
use todo_api::{ApiError, NewTodo, Patch, Replacement, Route, Store};

bravo::main!(main);

/// Todos a shard holds at most.
const SHARD_CAPACITY: usize = 4096;

enum Op {
    List,
    Create(NewTodo),
    Get(u64),
    Replace(u64, Replacement),
    Patch(u64, Patch),
    Delete(u64),
}

enum Reply {
    Answer(Response),
    /// A shard's part of the listing (`None`: no memory for it).
    Part(Option<Vec<u8>>),
}

type Message = (Op, Sender<Reply>);

/// One shard: owns its todos, answers operations in order.
fn shard(index: usize, shards: usize, requests: Receiver<Message>) {
    let mut store = Store::new(index, shards, SHARD_CAPACITY);
    while let Ok((op, reply)) = requests.recv() {
        let answer = match op {
            Op::List => Reply::Part(store.list_json().ok()),
            Op::Create(new) => Reply::Answer(todo_api::todo_response(Status::Created, store.create(new))),
            Op::Get(id) => Reply::Answer(todo_api::todo_response(Status::Ok, store.get(id))),
            Op::Replace(id, with) => Reply::Answer(todo_api::todo_response(Status::Ok, store.replace(id, with))),
            Op::Patch(id, patch) => Reply::Answer(todo_api::todo_response(Status::Ok, store.patch(id, patch))),
            Op::Delete(id) => Reply::Answer(match store.delete(id) {
                Ok(()) => Response::new(Status::NoContent, "application/json", Vec::new()),
                Err(e) => todo_api::store_error(e).response(),
            }),
        };
        let _ = reply.send(answer);
    }
}

fn main() -> Result<(), NetError> {
    let cpus = thread::cpu_count();
    let shards: Vec<Sender<Message>> = (0..cpus)
        .map(|cpu| {
            let (send, receive) = channel::channel();
            thread::spawn_on(cpu, move || shard(cpu, cpus, receive)).expect("every cpu is online");
            send
        })
        .collect();
    let (address, _) = bravo::net::wait_for_address(Duration::from_secs(30))?;
    let listener = TcpListener::bind(80)?;
    println!("todo: serving on http://{address}:80 with {cpus} shard{}", if cpus == 1 { "" } else { "s" });
    let limits = Limits { max_body: 64 * 1024, ..Limits::default() };
    let mut next_cpu = 0;
    loop {
        let Ok((stream, _)) = listener.accept() else { continue };
        next_cpu = (next_cpu + 1) % cpus;
        let shards = shards.clone();
        let _ = thread::spawn_on(next_cpu, move || {
            let mut stream = stream;
            stream.set_read_timeout(Some(Duration::from_secs(30)));
            // The stream through its embedded-io traits.
            microhttp::serve(&mut IoTransport(stream), &limits, |r| handle(r, &shards));
        });
    }
}

fn handle(request: &Request, shards: &[Sender<Message>]) -> Response {
    match operation(request, shards.len()) {
        Ok(None) => Response::text(Status::Ok, "ok"),
        Ok(Some((Op::List, _))) => list(shards),
        Ok(Some((op, shard))) => match ask(&shards[shard], op) {
            Some(Reply::Answer(response)) => response,
            _ => ApiError::new(Status::ServiceUnavailable, "shard gone").response(),
        },
        Err(error) => error.response(),
    }
}

/// The operation a request asks for and the shard that does it (None:
/// `/health`).
fn operation(request: &Request, shards: usize) -> Result<Option<(Op, usize)>, ApiError> {
    let route = todo_api::route(&request.method, &request.path)?;
    if matches!(route, Route::Create | Route::Replace(_) | Route::Patch(_)) && !bravo::memory::pressure().is_normal() {
        return Err(ApiError::new(Status::InsufficientStorage, "memory is short: the store takes no more"));
    }
    let on = |id| todo_api::shard_of(id, shards);
    Ok(Some(match route {
        Route::Health => return Ok(None),
        Route::List => (Op::List, 0),
        Route::Create => (Op::Create(todo_api::parse(&request.body)?), thread::current_cpu() % shards),
        Route::Get(id) => (Op::Get(id), on(id)),
        Route::Replace(id) => (Op::Replace(id, todo_api::parse(&request.body)?), on(id)),
        Route::Patch(id) => (Op::Patch(id, todo_api::parse(&request.body)?), on(id)),
        Route::Delete(id) => (Op::Delete(id), on(id)),
    }))
}

/// Sends `op` to a shard and sleeps for its reply (None: the shard is gone).
fn ask(shard: &Sender<Message>, op: Op) -> Option<Reply> {
    let (reply, answer) = channel::channel();
    shard.send((op, reply)).ok()?;
    answer.recv().ok()
}

/// Every shard's part of the listing, in one array.
fn list(shards: &[Sender<Message>]) -> Response {
    let mut parts = Vec::new();
    if parts.try_reserve_exact(shards.len()).is_err() {
        return ApiError::new(Status::ServiceUnavailable, "no memory for the listing").response();
    }
    for shard in shards {
        match ask(shard, Op::List) {
            Some(Reply::Part(Some(part))) => parts.push(part),
            Some(Reply::Part(None)) => {
                return ApiError::new(Status::ServiceUnavailable, "no memory for the listing").response()
            }
            _ => return ApiError::new(Status::ServiceUnavailable, "shard gone").response(),
        }
    }
    match todo_api::join_lists(&parts) {
        Ok(body) => Response::new(Status::Ok, "application/json", body),
        Err(_) => ApiError::new(Status::ServiceUnavailable, "no memory for the listing").response(),
    }
}
