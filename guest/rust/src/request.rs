//! The current request, valid only inside `realm_generate` (elsewhere these answer
//! `Error::State`): reading it, streaming the answer, reporting usage, and the instance-wide
//! clock and random seed.

use crate::error::{check, fail, Error, Result};
use crate::json::{self, Value};
use crate::sys;

/// Why generation ended, for [`usage`] (`REALM_ABI_FINISH_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-generation token or a stop string.
    Stop = 0,
    /// `max_tokens` or the context length.
    Length = 1,
}

/// The request's JSON text as the host passed it (for `realm run` and the server: the object of
/// docs/abi.md "Request JSON"; other callers may send anything a guest agrees on).
pub fn read() -> Result<Vec<u8>> {
    crate::model::fill::<u8>(4096, |p, cap| unsafe { sys::request_read(p, cap) })
}

/// The request parsed as JSON. A malformed request is `Error::Invalid`, with the parser's
/// message logged (the host reports it to the client).
pub fn read_json() -> Result<Value> {
    let text = read()?;
    match json::parse_bytes(&text) {
        Ok(v) => Ok(v),
        Err(e) => fail(Error::Invalid, &format!("request: {}", e)),
    }
}

/// Streams bytes to the client. `Limit` once the request's output cap would be exceeded
/// (nothing of this call is sent), `Cancelled` if the client is gone.
pub fn emit(bytes: &[u8]) -> Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    if bytes.len() > i32::MAX as usize {
        return Err(Error::Limit);
    }
    // SAFETY: bytes is live for its length.
    check(unsafe { sys::emit(bytes.as_ptr(), bytes.len() as i32) }).map(|_| ())
}

/// [`emit`] of a string.
pub fn emit_str(s: &str) -> Result<()> {
    emit(s.as_bytes())
}

/// Reports usage for display (the host charges what it measured; this never lowers it).
pub fn usage(prompt_tokens: usize, completion_tokens: usize, finish: Finish) -> Result<()> {
    let p = prompt_tokens.min(i32::MAX as usize) as i32;
    let c = completion_tokens.min(i32::MAX as usize) as i32;
    check(unsafe { sys::usage(p, c, finish as i32) }).map(|_| ())
}

/// Makes `index` the choice (of the request's `n`) that the following emit, logprobs and usage
/// calls belong to. `Range` outside 0..n.
pub fn choice(index: usize) -> Result<()> {
    if index > i32::MAX as usize {
        return Err(Error::Range);
    }
    check(unsafe { sys::choice(index as i32) }).map(|_| ())
}

/// Answers the request with tool calls: a JSON array of `{"name", "arguments": JSON text}`, at
/// most once per request (docs/abi.md, "Tool calls").
pub fn tool_calls(json_array: &str) -> Result<()> {
    if json_array.len() > i32::MAX as usize {
        return Err(Error::Limit);
    }
    check(unsafe { sys::tool_calls(json_array.as_ptr(), json_array.len() as i32) }).map(|_| ())
}

/// The host's monotonic clock in nanoseconds.
pub fn now_ns() -> i64 {
    unsafe { sys::now_ns() }
}

/// 63 random bits from the host, for unseeded sampling.
pub fn random_seed() -> u64 {
    unsafe { sys::random_seed() as u64 }
}
