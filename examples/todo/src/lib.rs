//! The todo service's logic, with no kernel dependency (unit-tested on the
//! host): which [`Route`] a request names, the JSON bodies it accepts
//! ([`NewTodo`], [`Replacement`], [`Patch`]) and how they are checked
//! ([`parse`]: 400 when the body is not JSON, 422 when it is JSON of the
//! wrong shape or out of range, 413 over [`MAX_BODY`]), one shard's
//! [`Store`], and the listing's JSON in memory allocated fallibly. `main.rs` runs a store per cpu and serves the routes.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use microhttp::{OutOfMemory, Response, Status};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::error::Category;

/// The longest request body the API reads, in bytes: a todo's largest
/// JSON (200 characters of title, each escaped as `\uXXXX`) fits.
pub const MAX_BODY: usize = 4096;
/// A title's length in characters.
pub const TITLES: core::ops::RangeInclusive<usize> = 1..=200;

/// A todo as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Todo {
    /// Unique across shards; names its shard ([`shard_of`]).
    pub id: u64,
    /// 1 to 200 characters ([`TITLES`]).
    pub title: String,
    /// Whether it is done.
    pub done: bool,
}

/// `POST /todos`: a title, and `done` (false when absent).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTodo {
    /// 1 to 200 characters ([`TITLES`]).
    pub title: String,
    /// Whether it is done (false when absent).
    #[serde(default)]
    pub done: bool,
}

/// `PUT /todos/{id}`: the whole todo but its id.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replacement {
    /// The new title, 1 to 200 characters ([`TITLES`]).
    pub title: String,
    /// Whether it is done.
    pub done: bool,
}

/// `PATCH /todos/{id}`: the fields to change (absent or null: unchanged).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    /// A new title, 1 to 200 characters ([`TITLES`]).
    pub title: Option<String>,
    /// Whether it is done.
    pub done: Option<bool>,
}

/// Checks of a parsed body beyond its shape.
pub trait Validate {
    /// `Err` (422) when a field is out of range.
    fn validate(&self) -> Result<(), ApiError>;
}

fn check_title(title: &str) -> Result<(), ApiError> {
    if TITLES.contains(&title.chars().count()) {
        Ok(())
    } else {
        Err(ApiError::new(Status::UnprocessableContent, "title must be 1 to 200 characters"))
    }
}

impl Validate for NewTodo {
    fn validate(&self) -> Result<(), ApiError> {
        check_title(&self.title)
    }
}

impl Validate for Replacement {
    fn validate(&self) -> Result<(), ApiError> {
        check_title(&self.title)
    }
}

impl Validate for Patch {
    fn validate(&self) -> Result<(), ApiError> {
        self.title.as_deref().map_or(Ok(()), check_title)
    }
}

/// A refused request: its status and what the `{"error": ...}` body says.
#[derive(Debug)]
pub struct ApiError {
    /// The response's status.
    pub status: Status,
    message: Message,
}

#[derive(Debug)]
enum Message {
    Fixed(&'static str),
    /// serde_json's description of what is wrong with the body (its
    /// first [`MESSAGE_LIMIT`] bytes: it may quote the client's field
    /// names).
    Json(serde_json::Error),
}

/// The most bytes of a message the error body carries.
const MESSAGE_LIMIT: usize = 300;

impl ApiError {
    /// A refusal with `status` and a fixed `message`.
    pub fn new(status: Status, message: &'static str) -> Self {
        ApiError { status, message: Message::Fixed(message) }
    }

    /// The error as a JSON response (`{"error": "..."}`); 503 in plain
    /// text when memory for it cannot be had.
    pub fn response(&self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a ApiError,
        }
        json_response(self.status, &Body { error: self })
    }
}

impl Serialize for ApiError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.message {
            Message::Fixed(text) => serializer.serialize_str(text),
            Message::Json(error) => serializer.collect_str(&Truncated(error)),
        }
    }
}

/// At most [`MESSAGE_LIMIT`] bytes of a value's text, cut at a character.
struct Truncated<'a, T>(&'a T);

impl<T: fmt::Display> fmt::Display for Truncated<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        struct Limit<'a, 'b> {
            out: &'a mut fmt::Formatter<'b>,
            left: usize,
        }
        impl fmt::Write for Limit<'_, '_> {
            fn write_str(&mut self, text: &str) -> fmt::Result {
                let mut end = text.len().min(self.left);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                self.left -= end;
                self.out.write_str(&text[..end])
            }
        }
        fmt::write(&mut Limit { out: f, left: MESSAGE_LIMIT }, format_args!("{}", self.0))
    }
}

/// Parses and checks a request body: 413 over [`MAX_BODY`], 400 when it
/// is not JSON (bad syntax, cut short, not UTF-8), 422 when it is JSON
/// of the wrong shape (wrong types, missing or unknown fields) or its
/// values are out of range.
pub fn parse<T: serde::de::DeserializeOwned + Validate>(body: &[u8]) -> Result<T, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::new(Status::PayloadTooLarge, "the body is over 4096 bytes"));
    }
    // First the syntax of the whole body (allocating nothing): a typed
    // parse stops at the first wrong type, before a syntax error later on.
    serde_json::from_slice::<IgnoredAny>(body)
        .map_err(|e| ApiError { status: Status::BadRequest, message: Message::Json(e) })?;
    let value: T = serde_json::from_slice(body).map_err(|e| {
        let status = match e.classify() {
            Category::Data => Status::UnprocessableContent,
            Category::Syntax | Category::Eof | Category::Io => Status::BadRequest,
        };
        ApiError { status, message: Message::Json(e) }
    })?;
    value.validate()?;
    Ok(value)
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /health`.
    Health,
    /// `GET /todos`.
    List,
    /// `POST /todos`.
    Create,
    /// `GET /todos/{id}`.
    Get(u64),
    /// `PUT /todos/{id}`.
    Replace(u64),
    /// `PATCH /todos/{id}`.
    Patch(u64),
    /// `DELETE /todos/{id}`.
    Delete(u64),
}

/// The route of `method` on `path` (a query string is ignored): 404 for
/// an unknown path or id that is not a number, 405 for a method the path
/// does not take.
pub fn route(method: &str, path: &str) -> Result<Route, ApiError> {
    let path = path.split('?').next().unwrap_or(path);
    let not_allowed = || Err(ApiError::new(Status::MethodNotAllowed, "method not allowed on this path"));
    if path == "/health" {
        return if method == "GET" { Ok(Route::Health) } else { not_allowed() };
    }
    if path == "/todos" {
        return match method {
            "GET" => Ok(Route::List),
            "POST" => Ok(Route::Create),
            _ => not_allowed(),
        };
    }
    let id = path.strip_prefix("/todos/").filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
    let Some(id) = id else { return Err(ApiError::new(Status::NotFound, "no such path")) };
    // Digits only: a number too large for an id names no todo.
    let Ok(id) = id.parse::<u64>() else { return Err(ApiError::new(Status::NotFound, "no such todo")) };
    match method {
        "GET" => Ok(Route::Get(id)),
        "PUT" => Ok(Route::Replace(id)),
        "PATCH" => Ok(Route::Patch(id)),
        "DELETE" => Ok(Route::Delete(id)),
        _ => not_allowed(),
    }
}

/// The largest JSON of a todo whose title is `title_len` bytes: every
/// byte escaped as `\u00XX` (6 bytes), a 20-digit id, the punctuation.
pub fn todo_json_bound(title_len: usize) -> usize {
    6 * title_len + 64
}

/// A JSON response of `value`. Only values of a bounded, small size
/// (a todo, an error) go through here: serde_json's `to_vec` (its only
/// writer without `std`) allocates as it goes, not fallibly; the large
/// answer, the listing, is assembled in memory reserved fallibly
/// ([`Store::list_json`], [`join_lists`]).
pub fn json_response<T: Serialize + ?Sized>(status: Status, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => Response::new(status, "application/json", body),
        // Only maps with non-string keys fail, which these types do not have.
        Err(_) => Response::text(Status::InternalServerError, "unserializable answer"),
    }
}

/// Why a store refused an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// No todo has the id.
    NotFound,
    /// It holds its capacity of todos.
    Full,
}

/// One shard's todos. Its ids are `shard + shards * n` for n = 0, 1, ...:
/// unique across shards, and an id names its shard ([`shard_of`]).
pub struct Store {
    next_id: u64,
    shards: u64,
    capacity: usize,
    todos: BTreeMap<u64, Todo>,
}

/// The shard that holds (or would hold) todo `id`.
pub fn shard_of(id: u64, shards: usize) -> usize {
    (id % shards as u64) as usize
}

impl Store {
    /// Shard `shard` of `shards`, holding at most `capacity` todos.
    pub fn new(shard: usize, shards: usize, capacity: usize) -> Self {
        Store { next_id: shard as u64, shards: shards as u64, capacity, todos: BTreeMap::new() }
    }

    /// Adds `new` under the next id of this shard.
    pub fn create(&mut self, new: NewTodo) -> Result<&Todo, StoreError> {
        if self.todos.len() >= self.capacity {
            return Err(StoreError::Full);
        }
        let id = self.next_id;
        self.next_id += self.shards;
        Ok(self.todos.entry(id).or_insert(Todo { id, title: new.title, done: new.done }))
    }

    /// The todo `id`.
    pub fn get(&self, id: u64) -> Result<&Todo, StoreError> {
        self.todos.get(&id).ok_or(StoreError::NotFound)
    }

    /// Sets todo `id`'s title and state.
    pub fn replace(&mut self, id: u64, with: Replacement) -> Result<&Todo, StoreError> {
        let todo = self.todos.get_mut(&id).ok_or(StoreError::NotFound)?;
        (todo.title, todo.done) = (with.title, with.done);
        Ok(todo)
    }

    /// Changes the fields `patch` has in todo `id`.
    pub fn patch(&mut self, id: u64, patch: Patch) -> Result<&Todo, StoreError> {
        let todo = self.todos.get_mut(&id).ok_or(StoreError::NotFound)?;
        if let Some(title) = patch.title {
            todo.title = title;
        }
        if let Some(done) = patch.done {
            todo.done = done;
        }
        Ok(todo)
    }

    /// Removes todo `id`.
    pub fn delete(&mut self, id: u64) -> Result<(), StoreError> {
        self.todos.remove(&id).map(drop).ok_or(StoreError::NotFound)
    }

    /// How many todos the shard holds.
    pub fn len(&self) -> usize {
        self.todos.len()
    }

    /// Whether the shard holds no todo.
    pub fn is_empty(&self) -> bool {
        self.todos.is_empty()
    }

    /// The todos as JSON objects separated by commas (a part of the
    /// listing's array), in id order; allocated fallibly.
    pub fn list_json(&self) -> Result<Vec<u8>, OutOfMemory> {
        let bound = self.todos.values().map(|t| todo_json_bound(t.title.len()) + 1).sum();
        let mut out = Vec::new();
        out.try_reserve_exact(bound).map_err(|_| OutOfMemory)?;
        for (i, todo) in self.todos.values().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // One todo's bytes at a time (small), into the room reserved.
            let json = serde_json::to_vec(todo).map_err(|_| OutOfMemory)?;
            debug_assert!(json.len() <= todo_json_bound(todo.title.len()), "a JSON bound too small");
            out.extend_from_slice(&json);
        }
        Ok(out)
    }
}

/// A todo's JSON response with `status`, or the error's.
pub fn todo_response(status: Status, todo: Result<&Todo, StoreError>) -> Response {
    match todo {
        Ok(todo) => json_response(status, todo),
        Err(e) => store_error(e).response(),
    }
}

/// The API's error for a store's refusal.
pub fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::NotFound => ApiError::new(Status::NotFound, "no such todo"),
        StoreError::Full => ApiError::new(Status::InsufficientStorage, "the store is full"),
    }
}

/// The listing: the shards' parts (from [`Store::list_json`]) in one
/// JSON array, allocated fallibly.
pub fn join_lists(parts: &[Vec<u8>]) -> Result<Vec<u8>, OutOfMemory> {
    let mut out = Vec::new();
    out.try_reserve_exact(2 + parts.iter().map(|p| p.len() + 1).sum::<usize>()).map_err(|_| OutOfMemory)?;
    out.push(b'[');
    for part in parts.iter().filter(|p| !p.is_empty()) {
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(part);
    }
    out.push(b']');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of<T: serde::de::DeserializeOwned + Validate + fmt::Debug>(body: &str) -> u16 {
        match parse::<T>(body.as_bytes()) {
            Ok(_) => 200,
            Err(e) => e.status.code(),
        }
    }

    #[test]
    fn bodies_that_are_not_json_are_400_and_json_of_the_wrong_shape_422() {
        assert_eq!(status_of::<NewTodo>(r#"{"title": "milk"}"#), 200);
        assert_eq!(status_of::<NewTodo>(r#"{"title": "milk", "done": true}"#), 200);
        for not_json in [r#"{"title": "milk""#, "", "{title: 1}", "[1,]", r#"{"title": "a"} x"#] {
            assert_eq!(status_of::<NewTodo>(not_json), 400, "{not_json:?}");
        }
        assert_eq!(parse::<NewTodo>(b"{\"title\": \"\xff\"}").unwrap_err().status, Status::BadRequest);
        let wrong = [
            r#"{"title": 5}"#,
            r#"{"title": "a", "done": "yes"}"#,
            r#"{"done": true}"#,
            r#"{"title": "a", "owner": "me"}"#,
            r#"[]"#,
            r#""title""#,
            r#"{"title": ""}"#,
        ];
        for body in wrong {
            assert_eq!(status_of::<NewTodo>(body), 422, "{body:?}");
        }
        // PUT needs both fields; PATCH none.
        assert_eq!(status_of::<Replacement>(r#"{"title": "a"}"#), 422);
        assert_eq!(status_of::<Replacement>(r#"{"title": "a", "done": false}"#), 200);
        assert_eq!(status_of::<Patch>("{}"), 200);
        assert_eq!(status_of::<Patch>(r#"{"done": null}"#), 200);
        assert_eq!(status_of::<Patch>(r#"{"title": ""}"#), 422);
    }

    #[test]
    fn titles_are_counted_in_characters_and_bodies_are_bounded() {
        let body = |title: &str| alloc::format!(r#"{{"title": "{title}"}}"#);
        assert_eq!(status_of::<NewTodo>(&body(&"é".repeat(200))), 200);
        assert_eq!(status_of::<NewTodo>(&body(&"é".repeat(201))), 422);
        // The largest title, escaped as much as it can be, is under the limit.
        assert_eq!(status_of::<NewTodo>(&body(&"\\u00e9".repeat(200))), 200);
        let huge = body(&"a".repeat(MAX_BODY));
        assert_eq!(status_of::<NewTodo>(&huge), 413);
    }

    #[test]
    fn error_bodies_are_json_and_say_what_is_wrong() {
        let error = parse::<NewTodo>(br#"{"done": 1}"#).unwrap_err();
        let response = error.response();
        assert_eq!((response.status, response.content_type), (Status::UnprocessableContent, "application/json"));
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert!(body["error"].as_str().unwrap().contains("invalid type"), "{body}");
        // A message quoting a long field name is cut, and stays JSON.
        let long = alloc::format!(r#"{{"{}\"": 1}}"#, "ü".repeat(1000));
        let response = parse::<NewTodo>(long.as_bytes()).unwrap_err().response();
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert!(body["error"].as_str().unwrap().len() <= MESSAGE_LIMIT);
    }

    #[test]
    fn routes_by_path_and_method() {
        assert_eq!(route("GET", "/todos").unwrap(), Route::List);
        assert_eq!(route("GET", "/todos?page=2").unwrap(), Route::List);
        assert_eq!(route("POST", "/todos").unwrap(), Route::Create);
        assert_eq!(route("GET", "/todos/42").unwrap(), Route::Get(42));
        assert_eq!(route("PUT", "/todos/42").unwrap(), Route::Replace(42));
        assert_eq!(route("PATCH", "/todos/42").unwrap(), Route::Patch(42));
        assert_eq!(route("DELETE", "/todos/42").unwrap(), Route::Delete(42));
        assert_eq!(route("GET", "/health").unwrap(), Route::Health);
        let status = |m, p| route(m, p).unwrap_err().status.code();
        assert_eq!(status("DELETE", "/todos"), 405);
        assert_eq!(status("POST", "/todos/1"), 405);
        assert_eq!(status("POST", "/health"), 405);
        for path in ["/", "/todo", "/todos/", "/todos/x", "/todos/1/2", "/todos/-1", "/todos/+1"] {
            assert_eq!(status("GET", path), 404, "{path}");
        }
        assert_eq!(status("GET", "/todos/99999999999999999999999"), 404);
    }

    #[test]
    fn shards_hand_out_their_own_ids_and_keep_their_capacity() {
        let new = |title: &str| NewTodo { title: title.into(), done: false };
        let mut stores: Vec<Store> = (0..3).map(|s| Store::new(s, 3, 2)).collect();
        let mut ids = Vec::new();
        for store in &mut stores {
            ids.push(store.create(new("a")).unwrap().id);
            ids.push(store.create(new("b")).unwrap().id);
            assert_eq!(store.create(new("c")).unwrap_err(), StoreError::Full);
        }
        ids.sort();
        assert_eq!(ids, [0, 1, 2, 3, 4, 5]);
        for id in ids {
            assert_eq!(stores[shard_of(id, 3)].get(id).unwrap().id, id);
        }
        let store = &mut stores[1];
        assert_eq!(store.replace(4, Replacement { title: "x".into(), done: true }).unwrap().title, "x");
        let patched = store.patch(4, Patch { title: None, done: Some(false) }).unwrap();
        assert_eq!((patched.title.as_str(), patched.done), ("x", false));
        store.delete(1).unwrap();
        assert_eq!(store.delete(1), Err(StoreError::NotFound));
        assert_eq!(store.get(1), Err(StoreError::NotFound));
        // Room again after a delete, with a new id.
        assert_eq!(store.create(new("d")).unwrap().id, 7);
    }

    #[test]
    fn the_listing_is_one_json_array_of_every_shard() {
        let mut stores: Vec<Store> = (0..3).map(|s| Store::new(s, 3, 10)).collect();
        stores[0].create(NewTodo { title: "quote \" and \u{1}".into(), done: true }).unwrap();
        stores[2].create(NewTodo { title: "two".into(), done: false }).unwrap();
        stores[2].create(NewTodo { title: "three".into(), done: false }).unwrap();
        let parts: Vec<Vec<u8>> = stores.iter().map(|s| s.list_json().unwrap()).collect();
        let listing: serde_json::Value = serde_json::from_slice(&join_lists(&parts).unwrap()).unwrap();
        let ids: Vec<u64> = listing.as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, [0, 2, 5]);
        assert_eq!(listing[0]["title"], "quote \" and \u{1}");
        assert_eq!(join_lists(&[Vec::new(), Vec::new()]).unwrap(), b"[]");
    }

    #[test]
    fn the_listing_bound_holds_for_the_worst_titles() {
        for title in ["\u{1}".repeat(200), "\"".repeat(200), "😀".repeat(200), String::new()] {
            let mut store = Store::new(0, 1, 10);
            for _ in 0..3 {
                store.create(NewTodo { title: title.clone(), done: false }).unwrap();
            }
            let json = store.list_json().unwrap();
            assert_eq!(json.capacity(), 3 * (todo_json_bound(title.len()) + 1), "the buffer grew");
            let one = serde_json::to_vec(&Todo { id: u64::MAX, title: title.clone(), done: false }).unwrap();
            assert!(one.len() <= todo_json_bound(title.len()));
        }
    }
}
