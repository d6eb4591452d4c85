//! The raw imports of module `"realm"` (docs/abi.md has the full contract of each). Every
//! function is `unsafe`: pointers must point into this module's linear memory for the given
//! length. The safe wrappers in the rest of the crate are the intended interface.
//!
//! Outside wasm32 (the crate's native unit tests) the imports do not exist: each stub answers
//! `REALM_E_UNSUPPORTED` (-11), so that code paths reaching the host fail cleanly instead of
//! failing to link.

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "realm")]
extern "C" {
    pub fn model_open(name: *const u8, name_len: i32) -> i32;
    pub fn model_info(model: i32, buf: *mut u8, cap: i32) -> i32;
    pub fn tokenize(
        model: i32,
        text: *const u8,
        text_len: i32,
        flags: i32,
        out: *mut i32,
        out_cap: i32,
    ) -> i32;
    pub fn token_piece(model: i32, token: i32, buf: *mut u8, cap: i32) -> i32;
    pub fn chat_format(model: i32, json: *const u8, len: i32, out: *mut u8, out_cap: i32) -> i32;
    pub fn chat_tokenize(
        model: i32,
        json: *const u8,
        len: i32,
        flags: i32,
        out: *mut i32,
        out_cap: i32,
    ) -> i32;
    pub fn session_open(model: i32, n_ctx: i32) -> i32;
    pub fn session_close(session: i32) -> i32;
    pub fn session_rewind(session: i32, n_keep: i32) -> i32;
    pub fn decode(
        session: i32,
        tokens: *const i32,
        n_tokens: i32,
        logits: *mut f32,
        logits_cap: i32,
    ) -> i32;
    pub fn emit(text: *const u8, len: i32) -> i32;
    pub fn logprobs(model: i32, ids: *const i32, lps: *const f32, n: i32) -> i32;
    pub fn tool_calls(json: *const u8, len: i32) -> i32;
    pub fn request_read(buf: *mut u8, cap: i32) -> i32;
    pub fn log(level: i32, msg: *const u8, len: i32) -> i32;
    pub fn now_ns() -> i64;
    pub fn random_seed() -> i64;
    pub fn usage(prompt_tokens: i32, completion_tokens: i32, finish_reason: i32) -> i32;
    pub fn choice(index: i32) -> i32;
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    #![allow(clippy::missing_safety_doc)]
    const UNSUPPORTED: i32 = -11;
    pub unsafe fn model_open(_: *const u8, _: i32) -> i32 {
        UNSUPPORTED
    }
    pub unsafe fn model_info(_: i32, _: *mut u8, _: i32) -> i32 {
        UNSUPPORTED
    }
    pub unsafe fn tokenize(_: i32, _: *const u8, _: i32, _: i32, _: *mut i32, _: i32) -> i32 {
        UNSUPPORTED
    }
    pub unsafe fn token_piece(_: i32, _: i32, _: *mut u8, _: i32) -> i32 {
        UNSUPPORTED
    }
    pub unsafe fn chat_format(_: i32, _: *const u8, _: i32, _: *mut u8, _: i32) -> i32 {
        UNSUPPORTED
    }
    pub unsafe fn chat_tokenize(_: i32, _: *const u8, _: i32, _: i32, _: *mut i32, _: i32) -> i32 {
        UNSUPPORTED
    }
    pub unsafe fn session_open(_: i32, _: i32) -> i32 {
        UNSUPPORTED
    }
    pub unsafe fn session_close(_: i32) -> i32 {
        UNSUPPORTED
    }
    pub unsafe fn session_rewind(_: i32, _: i32) -> i32 {
        UNSUPPORTED
    }
    pub unsafe fn decode(_: i32, _: *const i32, _: i32, _: *mut f32, _: i32) -> i32 {
        UNSUPPORTED
    }
    pub unsafe fn emit(_: *const u8, _: i32) -> i32 {
        UNSUPPORTED
    }
    pub unsafe fn logprobs(_: i32, _: *const i32, _: *const f32, _: i32) -> i32 {
        UNSUPPORTED
    }
    pub unsafe fn tool_calls(_: *const u8, _: i32) -> i32 {
        UNSUPPORTED
    }
    pub unsafe fn request_read(_: *mut u8, _: i32) -> i32 {
        UNSUPPORTED
    }
    pub unsafe fn log(_: i32, _: *const u8, _: i32) -> i32 {
        UNSUPPORTED
    }
    pub unsafe fn now_ns() -> i64 {
        0
    }
    pub unsafe fn random_seed() -> i64 {
        0x5eed
    }
    pub unsafe fn usage(_: i32, _: i32, _: i32) -> i32 {
        UNSUPPORTED
    }
    pub unsafe fn choice(_: i32) -> i32 {
        UNSUPPORTED
    }
}
#[cfg(not(target_arch = "wasm32"))]
pub use native::*;
