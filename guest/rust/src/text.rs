//! Token pieces to text. A piece may end inside a UTF-8 sequence (byte tokens `<0xNN>`, byte-level
//! BPE), so pieces are joined here: complete text comes out at once, an incomplete sequence at
//! the end waits for the next piece, and invalid bytes become U+FFFD (as the host's streaming
//! detokenizer and the C SDK do). Optionally the first piece's leading space is dropped (SPM puts
//! one in front of the text; the native CLI drops it). [`StopFilter`] then ends the text at the
//! first stop string, never emitting one even in part.

#[derive(Clone, Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
    strip_leading_space: bool,
    started: bool,
}

impl Utf8Stream {
    /// A stream; `strip_leading_space` drops one space at the start of the first non-empty piece.
    pub fn new(strip_leading_space: bool) -> Utf8Stream {
        Utf8Stream { pending: Vec::new(), strip_leading_space, started: false }
    }

    /// Adds a piece; returns the text that is complete now (possibly empty).
    pub fn push(&mut self, piece: &[u8]) -> String {
        let mut piece = piece;
        if !piece.is_empty() && !self.started {
            self.started = true;
            if self.strip_leading_space && piece[0] == b' ' {
                piece = &piece[1..];
            }
        }
        self.pending.extend_from_slice(piece);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match core::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    // from_utf8 validated these bytes: the fallback is never taken
                    out.push_str(core::str::from_utf8(good).unwrap_or(""));
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &bad[n..];
                        }
                        None => {
                            rest = bad; // an incomplete sequence: wait for more bytes
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let from = self.pending.len() - keep;
        self.pending.drain(..from);
        out
    }

    /// The end of the text: an incomplete sequence left over becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        if self.pending.is_empty() {
            return String::new();
        }
        self.pending.clear();
        "\u{FFFD}".to_string()
    }
}

/// Stop strings over streamed text: what may still become the start of a stop string is held
/// back until it cannot, and the text ends before the first stop string found.
#[derive(Clone, Debug, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopFilter {
    /// A filter for `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> StopFilter {
        StopFilter {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            stopped: false,
        }
    }

    /// True once a stop string was found: nothing more comes out.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Adds text; returns what can be emitted now.
    pub fn push(&mut self, text: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.held.push_str(text);
        let first = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min();
        if let Some(at) = first {
            self.stopped = true;
            self.held.truncate(at);
            return core::mem::take(&mut self.held);
        }
        // the longest tail that is a proper prefix of some stop string waits for more text
        let n = self.held.len();
        let mut hold = 0;
        for s in self.stops.iter() {
            for h in (hold + 1..s.len().min(n + 1)).rev() {
                if self.held.is_char_boundary(n - h)
                    && s.as_bytes().starts_with(&self.held.as_bytes()[n - h..])
                {
                    hold = h;
                    break;
                }
            }
        }
        let rest = self.held.split_off(n - hold);
        core::mem::replace(&mut self.held, rest)
    }

    /// The end of the text: what was held back (it is no stop string).
    pub fn finish(&mut self) -> String {
        core::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_split_sequences() {
        let mut s = Utf8Stream::new(true);
        assert_eq!(s.push(b""), "");
        assert_eq!(s.push(b" Once"), "Once");
        assert_eq!(s.push(b" upon"), " upon");
        assert_eq!(s.push(b" \xe2"), " ");
        assert_eq!(s.push(b"\x82"), "");
        assert_eq!(s.push(b"\xac!"), "\u{20ac}!");
        assert_eq!(s.push(b"a\xffb"), "a\u{FFFD}b");
        assert_eq!(s.push(b"\xf0\x9f"), "");
        assert_eq!(s.finish(), "\u{FFFD}");
        assert_eq!(s.finish(), "");
        let mut k = Utf8Stream::new(false);
        assert_eq!(k.push(b" x"), " x");
    }

    #[test]
    fn stops_hold_back_and_end() {
        let mut f = StopFilter::new(vec!["\n\n".to_string(), "END".to_string(), String::new()]);
        assert_eq!(f.push("Hello"), "Hello");
        assert_eq!(f.push(" E"), " ");
        assert_eq!(f.push("N"), "");
        assert_eq!(f.push("ds"), "ENds");
        assert_eq!(f.push("a\n"), "a");
        assert_eq!(f.push("b"), "\nb");
        assert!(!f.stopped());
        assert_eq!(f.push("x\n\ny"), "x");
        assert!(f.stopped());
        assert_eq!(f.push("more"), "");
        assert_eq!(f.finish(), "");
        let mut g = StopFilter::new(vec!["é!".to_string()]);
        assert_eq!(g.push("caf\u{e9}"), "caf");
        assert_eq!(g.finish(), "\u{e9}");
        let mut h = StopFilter::new(vec!["abc".to_string()]);
        assert_eq!(h.push("xab"), "x");
        assert_eq!(h.push("abc"), "ab");
        assert!(h.stopped());
        let mut none = StopFilter::new(vec![]);
        assert_eq!(none.push("any text"), "any text");
    }
}
