//! A key-value store over HTTP on port 80:
//!
//! - `PUT /kv/KEY` stores the body (201 when new, 200 when replaced; 507
//!   when the store is full);
//! - `GET /kv/KEY` returns it (404 when absent);
//! - `DELETE /kv/KEY` removes it (204, or 404);
//! - `GET /health`.
//!
//! The store is split in one shard per cpu, each owned by a thread on its
//! cpu (its map lives in that cpu's node). A connection's thread sends
//! each operation to the key's shard as a message on a channel and sleeps
//! for the reply: no lock is shared by the cpus.
//!
//! The store is full when the kernel reports memory pressure
//! (`bravo::memory::pressure()` below the low-water mark) or when memory
//! for a value cannot be had: `PUT` then answers `507 Insufficient
//! Storage`, while `GET` and `DELETE` go on (what a client sent is copied
//! fallibly, so no request can abort the service); deleting keys makes
//! room again.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use bravo::net::{NetError, TcpListener, TcpStream};
use bravo::sync::channel::{self, Receiver, Sender};
use bravo::{println, thread};
use microhttp::{Limits, Request, Response, Status, Transport, TransportError};

bravo::main!(main);

enum Op {
    Get(String),
    Put(String, Vec<u8>),
    Delete(String),
}

enum Outcome {
    Value(Vec<u8>),
    /// The value exists but memory for its copy could not be had.
    NoMemory,
    Created,
    Replaced,
    Deleted,
    Missing,
}

type Message = (Op, Sender<Outcome>);

/// One shard: owns its part of the keys, answers operations in order.
fn shard(requests: Receiver<Message>) {
    let mut map: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    while let Ok((op, reply)) = requests.recv() {
        let outcome = match op {
            Op::Get(key) => match map.get(&key).map(|v| microhttp::try_copy(v)) {
                Some(Ok(value)) => Outcome::Value(value),
                Some(Err(_)) => Outcome::NoMemory,
                None => Outcome::Missing,
            },
            Op::Put(key, value) => match map.insert(key, value) {
                Some(_) => Outcome::Replaced,
                None => Outcome::Created,
            },
            Op::Delete(key) => map.remove(&key).map_or(Outcome::Missing, |_| Outcome::Deleted),
        };
        let _ = reply.send(outcome);
    }
}

/// FNV-1a: which shard owns a key.
fn shard_of(key: &str, shards: usize) -> usize {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    (hash % shards as u64) as usize
}

fn main() -> Result<(), NetError> {
    let cpus = thread::cpu_count();
    let shards: Vec<Sender<Message>> = (0..cpus)
        .map(|cpu| {
            let (send, receive) = channel::channel();
            thread::spawn_on(cpu, move || shard(receive)).expect("every cpu is online");
            send
        })
        .collect();
    let (address, _) = bravo::net::wait_for_address(Duration::from_secs(30))?;
    let listener = TcpListener::bind(80)?;
    println!("kv: serving on http://{address}:80 with {cpus} shard{}", if cpus == 1 { "" } else { "s" });
    loop {
        let Ok((stream, _)) = listener.accept() else { continue };
        let shards = shards.clone();
        // Served where its network stack holds it: no cross-cpu hop.
        let _ = thread::spawn_on(stream.cpu(), move || {
            let mut connection = Connection(stream);
            microhttp::serve(&mut connection, &Limits::default(), |r| route(r, &shards));
        });
    }
}

struct Connection(TcpStream);

impl Transport for Connection {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        self.0.set_read_timeout(Some(Duration::from_secs(30)));
        self.0.read(buf).map_err(|e| {
            if e == NetError::TimedOut {
                TransportError::TimedOut
            } else {
                TransportError::Closed
            }
        })
    }

    fn write_all(&mut self, data: &[u8]) -> Result<(), TransportError> {
        self.0.write_all(data).map_err(|_| TransportError::Closed)
    }

    fn write_last(&mut self, data: &[u8]) -> Result<(), TransportError> {
        self.0.write_last(data).map_err(|_| TransportError::Closed)
    }
}

fn route(request: &Request, shards: &[Sender<Message>]) -> Response {
    if request.path == "/health" {
        return Response::text(Status::Ok, "ok");
    }
    let Some(key) = request.path.strip_prefix("/kv/").filter(|k| !k.is_empty()) else {
        return Response::text(Status::NotFound, "Not Found");
    };
    let Ok(key_copy) = try_string(key) else {
        return Response::text(Status::ServiceUnavailable, "no memory for the key");
    };
    let op = match request.method.as_str() {
        "GET" => Op::Get(key_copy),
        "PUT" => match value_to_store(&request.body) {
            Ok(value) => Op::Put(key_copy, value),
            Err(full) => return full,
        },
        "DELETE" => Op::Delete(key_copy),
        _ => return Response::text(Status::MethodNotAllowed, "Method Not Allowed"),
    };
    let (reply, outcome) = channel::channel();
    let shard = &shards[shard_of(key, shards.len())];
    if shard.send((op, reply)).is_err() {
        return Response::text(Status::ServiceUnavailable, "shard gone");
    }
    match outcome.recv() {
        Ok(Outcome::Value(value)) => Response::new(Status::Ok, "application/octet-stream", value),
        Ok(Outcome::Created) => Response::text(Status::Created, "created"),
        Ok(Outcome::Replaced) => Response::text(Status::Ok, "replaced"),
        Ok(Outcome::Deleted) => Response::new(Status::NoContent, "text/plain", Vec::new()),
        Ok(Outcome::Missing) => Response::text(Status::NotFound, "no such key"),
        Ok(Outcome::NoMemory) => Response::text(Status::ServiceUnavailable, "no memory for the value's copy"),
        Err(_) => Response::text(Status::ServiceUnavailable, "shard gone"),
    }
}

/// The value to store, copied fallibly; or the 507 answer when the store
/// is full (memory under pressure, or no memory for the copy).
fn value_to_store(body: &[u8]) -> Result<Vec<u8>, Response> {
    let full = || Response::text(Status::InsufficientStorage, "store full");
    if !bravo::memory::pressure().is_normal() {
        return Err(full());
    }
    microhttp::try_copy(body).map_err(|_| full())
}

fn try_string(text: &str) -> Result<String, alloc::collections::TryReserveError> {
    let mut copy = String::new();
    copy.try_reserve_exact(text.len())?;
    copy.push_str(text);
    Ok(copy)
}
