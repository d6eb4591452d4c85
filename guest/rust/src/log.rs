//! Logging to the host (the `log` import): levels 0 debug .. 3 error. The host keeps at most
//! 1024 bytes of a line and replaces control characters; the last line logged during a call is
//! the message the host reports when that call fails. Logging never fails the guest: the
//! import's status is ignored (a line that cannot be logged is dropped).

use crate::sys;

/// `REALM_ABI_LOG_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
}

/// Logs one line at `level`.
pub fn log(level: Level, msg: &str) {
    let n = msg.len().min(i32::MAX as usize) as i32;
    // SAFETY: msg is a live slice of n bytes in linear memory.
    unsafe {
        sys::log(level as i32, msg.as_ptr(), n);
    }
}

pub fn debug(msg: &str) {
    log(Level::Debug, msg)
}
pub fn info(msg: &str) {
    log(Level::Info, msg)
}
pub fn warn(msg: &str) {
    log(Level::Warn, msg)
}
pub fn error(msg: &str) {
    log(Level::Error, msg)
}

/// `realm_log!(Level::Info, "decoded {} tokens", n)`: `format!` then [`log`].
#[macro_export]
macro_rules! realm_log {
    ($level:expr, $($arg:tt)*) => {
        $crate::log::log($level, &::std::format!($($arg)*))
    };
}
