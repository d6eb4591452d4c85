// Re-export every #[no_mangle] symbol of the Wasmtime C API into one static archive.
pub use wasmtime_c_api::*;
