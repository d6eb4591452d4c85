//! The realm status enum (include/realm/status.h) as a Rust error type. The numbers are part of
//! ABI v1 and mean the same on both sides of the sandbox; the texts are the host's
//! (`realm_status_text`), so that a guest's message and the host's report use the same words.

use core::fmt;

/// A `REALM_E_*` status. `Other` keeps a negative code this crate does not know (a newer host);
/// it is passed back unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    Invalid,
    NoMem,
    Format,
    Range,
    Limit,
    Cancelled,
    Io,
    NotFound,
    BadHandle,
    KvFull,
    Unsupported,
    ContextFull,
    Busy,
    Timeout,
    Trap,
    Internal,
    Permission,
    TooSmall,
    State,
    Other(i32),
}

/// `Result` with the realm error.
pub type Result<T> = core::result::Result<T, Error>;

const TABLE: [(Error, i32, &str); 19] = [
    (Error::Invalid, -1, "invalid argument"),
    (Error::NoMem, -2, "out of memory"),
    (Error::Format, -3, "malformed data"),
    (Error::Range, -4, "out of range"),
    (Error::Limit, -5, "limit exceeded"),
    (Error::Cancelled, -6, "cancelled"),
    (Error::Io, -7, "I/O error"),
    (Error::NotFound, -8, "not found"),
    (Error::BadHandle, -9, "bad handle"),
    (Error::KvFull, -10, "KV cache full"),
    (Error::Unsupported, -11, "unsupported"),
    (Error::ContextFull, -12, "context length exceeded"),
    (Error::Busy, -13, "busy"),
    (Error::Timeout, -14, "timed out"),
    (Error::Trap, -15, "guest trapped"),
    (Error::Internal, -16, "internal error"),
    (Error::Permission, -17, "permission denied"),
    (Error::TooSmall, -18, "buffer too small"),
    (Error::State, -19, "invalid state"),
];

impl Error {
    /// The error of a negative status code. A non-negative code is no error: `Internal`
    /// (callers go through [`check`], which never passes one).
    pub fn from_code(code: i32) -> Error {
        if code >= 0 {
            return Error::Internal;
        }
        for &(e, c, _) in TABLE.iter() {
            if c == code {
                return e;
            }
        }
        Error::Other(code)
    }

    /// The `REALM_E_*` number (negative).
    pub fn code(self) -> i32 {
        if let Error::Other(c) = self {
            return c;
        }
        for &(e, c, _) in TABLE.iter() {
            if e == self {
                return c;
            }
        }
        -16
    }

    /// The host's text for the code ("bad handle" ...).
    pub fn text(self) -> &'static str {
        for &(e, _, t) in TABLE.iter() {
            if e == self {
                return t;
            }
        }
        "unknown error"
    }

    /// Logs `context: <text>` at error level and returns the error, so that the host's report of
    /// a failed call carries the context (the last line logged during a call is its message):
    /// `session.decode(..).map_err(|e| e.log("decode prompt"))?`.
    pub fn log(self, context: &str) -> Error {
        crate::log::error(&format!("{}: {}", context, self.text()));
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

impl std::error::Error for Error {}

/// An import's result: non-negative values are counts or `REALM_OK`, negative ones errors.
pub fn check(rc: i32) -> Result<i32> {
    if rc < 0 {
        Err(Error::from_code(rc))
    } else {
        Ok(rc)
    }
}

/// The status a guest export returns for a result.
pub fn status_of(r: Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => e.code(),
    }
}

/// Logs `msg` at error level and returns `Err(e)`: the usual way to fail with a reason.
pub fn fail<T>(e: Error, msg: &str) -> Result<T> {
    crate::log::error(msg);
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in -19..=-1 {
            let e = Error::from_code(code);
            assert_ne!(e, Error::Other(code));
            assert_eq!(e.code(), code);
        }
        assert_eq!(Error::from_code(-9), Error::BadHandle);
        assert_eq!(Error::BadHandle.text(), "bad handle");
        assert_eq!(Error::from_code(-77), Error::Other(-77));
        assert_eq!(Error::Other(-77).code(), -77);
        assert_eq!(Error::Other(-77).text(), "unknown error");
        assert_eq!(check(5), Ok(5));
        assert_eq!(check(-12), Err(Error::ContextFull));
        assert_eq!(status_of(Ok(())), 0);
        assert_eq!(status_of(Err(Error::Timeout)), -14);
    }

    /// The table says what include/realm/status.h says: same numbers, same texts.
    #[test]
    fn table_matches_status_h() {
        let h = include_str!("../../../include/realm/status.h");
        let lines: Vec<&str> = h.lines().map(|l| l.trim()).collect();
        let mut seen = 0;
        for (i, l) in lines.iter().enumerate() {
            if !l.starts_with("case REALM_E_") {
                continue;
            }
            let name = &l["case ".len()..l.len() - 1];
            let text = lines[i + 1].trim_start_matches("return \"").trim_end_matches("\";");
            let decl =
                lines.iter().find(|d| d.starts_with(&format!("{} = ", name))).expect("enum entry");
            let num: i32 = decl[name.len() + 3..].split(',').next().unwrap().parse().unwrap();
            let e = Error::from_code(num);
            assert_ne!(e, Error::Other(num), "{} ({}) missing in the table", name, num);
            assert_eq!(e.text(), text, "{}", name);
            seen += 1;
        }
        assert_eq!(seen, TABLE.len());
    }
}
