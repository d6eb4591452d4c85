//! realm_guest — a Rust SDK for realm guests: orchestrators that run as one tenant's WebAssembly
//! module inside realm's sandbox and drive the host's models through the realm ABI v1
//! (docs/abi.md; docs/guests-rust.md is the guide).
//!
//! Build for `wasm32-unknown-unknown` (the realm ABI is not WASI: a guest imports module
//! `"realm"` only) as a `cdylib`. The crate has no dependencies and builds with rustc 1.63.
//!
//! ```ignore
//! use realm_guest::{request, Model, Result};
//!
//! fn init() -> Result<()> { Ok(()) }
//! fn generate() -> Result<()> {
//!     let req = request::read_json()?;
//!     let model = Model::open_default()?;
//!     // ... tokenize, session.decode, sample, request::emit ...
//!     Ok(())
//! }
//! realm_guest::export_guest!(init, generate);
//! ```
//!
//! Modules: [`sys`] the raw imports; [`error`] the status codes as [`Error`]; [`model`] models,
//! their info and tokenizer; [`session`] KV-cache sessions and `decode`; [`request`] the request,
//! `emit`, `usage`; [`log`]; [`sample`] greedy and top-k/top-p/min-p/temperature sampling;
//! [`text`] token pieces to valid UTF-8; [`json`] a strict JSON reader and writer.

pub mod error;
pub mod json;
pub mod log;
pub mod model;
pub mod request;
pub mod sample;
pub mod session;
pub mod sys;
pub mod text;

pub use error::{Error, Result};
pub use model::{Model, ModelInfo, TokenizeFlags};
pub use request::Finish;
pub use sample::{Sampler, SamplerParams};
pub use session::Session;
pub use text::{StopFilter, Utf8Stream};

/// The ABI version this crate implements (`REALM_ABI_VERSION`).
pub const ABI_VERSION: i32 = 1;

/// What the exports defined by [`export_guest!`] call; not for direct use.
#[doc(hidden)]
pub mod exports {
    use crate::error::{status_of, Result};
    use std::alloc::{alloc, dealloc, Layout};

    // realm_free gets only the pointer: a header in front of each block keeps its size
    const HEADER: usize = 8;

    fn layout(size: usize) -> Option<Layout> {
        Layout::from_size_align(size.checked_add(HEADER)?, HEADER).ok()
    }

    /// `realm_alloc(size)`: a block of `size` bytes, or null (0) on failure or a negative size.
    pub fn alloc_block(size: i32) -> *mut u8 {
        if size < 0 {
            return core::ptr::null_mut();
        }
        let l = match layout(size as usize) {
            Some(l) => l,
            None => return core::ptr::null_mut(),
        };
        // SAFETY: l has a non-zero size (the header); the size is written inside the block.
        unsafe {
            let p = alloc(l);
            if p.is_null() {
                return p;
            }
            (p as *mut usize).write(size as usize);
            p.add(HEADER)
        }
    }

    /// `realm_free(ptr)`: frees a block of [`alloc_block`]; null is ignored.
    ///
    /// # Safety
    /// `p` must be null or a block from `alloc_block` not freed yet.
    pub unsafe fn free_block(p: *mut u8) {
        if p.is_null() {
            return;
        }
        let base = p.sub(HEADER);
        let size = (base as *const usize).read();
        if let Some(l) = layout(size) {
            dealloc(base, l);
        }
    }

    /// Panics end the call with a trap (wasm32 aborts on panic), which the host reports as the
    /// trap ("unreachable executed in __rust_start_panic"); the hook first logs the panic message
    /// at error level so that the tenant's log says what happened.
    fn install_panic_hook() {
        std::panic::set_hook(Box::new(|info| {
            let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = info.payload().downcast_ref::<String>() {
                s.clone()
            } else {
                "panic".to_string()
            };
            let at = match info.location() {
                Some(l) => format!(" at {}:{}", l.file(), l.line()),
                None => String::new(),
            };
            crate::log::error(&format!("panic: {}{}", msg, at));
        }));
    }

    pub fn init(f: fn() -> Result<()>) -> i32 {
        install_panic_hook();
        status_of(f())
    }

    pub fn generate(f: fn() -> Result<()>) -> i32 {
        status_of(f())
    }
}

/// Defines the exports of a guest: `realm_abi_version`, `realm_alloc`, `realm_free`, and
/// `realm_init` / `realm_generate` calling the given functions (`fn() -> realm_guest::Result<()>`;
/// an `Err` becomes the call's status, so log the reason first, e.g. with [`Error::log`]).
/// Use it once, in the `cdylib` crate of the guest:
///
/// ```ignore
/// realm_guest::export_guest!(init, generate);
/// ```
#[macro_export]
macro_rules! export_guest {
    ($init:path, $generate:path) => {
        #[no_mangle]
        pub extern "C" fn realm_abi_version() -> i32 {
            $crate::ABI_VERSION
        }

        #[no_mangle]
        pub extern "C" fn realm_alloc(size: i32) -> *mut u8 {
            $crate::exports::alloc_block(size)
        }

        /// # Safety
        /// Called by the host with a pointer from `realm_alloc` (or null).
        #[no_mangle]
        pub unsafe extern "C" fn realm_free(p: *mut u8) {
            $crate::exports::free_block(p)
        }

        #[no_mangle]
        pub extern "C" fn realm_init() -> i32 {
            $crate::exports::init($init)
        }

        #[no_mangle]
        pub extern "C" fn realm_generate() -> i32 {
            $crate::exports::generate($generate)
        }
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn alloc_blocks() {
        let p = crate::exports::alloc_block(100);
        assert!(!p.is_null());
        assert_eq!(p as usize % 8, 0);
        unsafe {
            core::ptr::write_bytes(p, 0xab, 100);
            crate::exports::free_block(p);
            crate::exports::free_block(core::ptr::null_mut());
        }
        assert!(crate::exports::alloc_block(-1).is_null());
        let z = crate::exports::alloc_block(0);
        assert!(!z.is_null());
        unsafe { crate::exports::free_block(z) };
    }
}
