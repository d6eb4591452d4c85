//! Sessions: one KV cache each, fed with `decode` (prefill and decode are the same call). The
//! host batches every tenant's decodes into shared steps; a `decode` blocks until its step is
//! done. A [`Session`] closes its handle when dropped.

use crate::error::{check, Error, Result};
use crate::model::Model;
use crate::sys;

#[derive(Debug)]
pub struct Session {
    handle: i32,
    n_vocab: usize,
    n_ctx: usize,
    len: usize,
}

impl Session {
    /// Opens a session on `model` with a context of `n_ctx` positions (0: the model's
    /// `n_ctx_train`, capped by the host's `max_ctx`). Errors: `Limit` (above the cap, or the
    /// tenant's session cap), `KvFull` (the tenant's KV byte budget), `NoMem`.
    pub fn open(model: &Model, n_ctx: usize) -> Result<Session> {
        if n_ctx > i32::MAX as usize {
            return Err(Error::Limit);
        }
        // SAFETY: plain integers.
        let handle = check(unsafe { sys::session_open(model.handle(), n_ctx as i32) })?;
        let n_ctx = if n_ctx == 0 { model.info().n_ctx_train } else { n_ctx };
        Ok(Session { handle, n_vocab: model.info().n_vocab, n_ctx, len: 0 })
    }

    pub fn handle(&self) -> i32 {
        self.handle
    }

    /// Positions decoded so far (as this side counted them).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The context size asked for (the host may cap a 0 request below `n_ctx_train`).
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Appends `tokens` to the KV cache without reading logits (a prefill chunk).
    pub fn prefill(&mut self, tokens: &[i32]) -> Result<()> {
        self.decode_raw(tokens, core::ptr::null_mut(), 0)
    }

    /// Appends `tokens` and writes the last position's `n_vocab` logits into `logits` (resized to
    /// `n_vocab`; reuse one vector across calls to avoid allocating per token). Errors: `Invalid`
    /// (no tokens, a token outside the vocabulary), `ContextFull`, `Cancelled`, `Timeout`. A failed
    /// decode leaves the session unchanged and the logits unspecified.
    pub fn decode(&mut self, tokens: &[i32], logits: &mut Vec<f32>) -> Result<()> {
        logits.resize(self.n_vocab, 0.0);
        let cap = self.n_vocab.min(i32::MAX as usize) as i32;
        self.decode_raw(tokens, logits.as_mut_ptr(), cap)
    }

    /// [`Session::decode`] into a new vector.
    pub fn decode_logits(&mut self, tokens: &[i32]) -> Result<Vec<f32>> {
        let mut logits = Vec::new();
        self.decode(tokens, &mut logits)?;
        Ok(logits)
    }

    fn decode_raw(&mut self, tokens: &[i32], logits: *mut f32, cap: i32) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::Invalid);
        }
        if tokens.len() > i32::MAX as usize {
            return Err(Error::Limit);
        }
        // SAFETY: tokens is live for its length; logits is null with cap 0, or a live buffer of
        // cap floats.
        check(unsafe {
            sys::decode(self.handle, tokens.as_ptr(), tokens.len() as i32, logits, cap)
        })?;
        self.len += tokens.len();
        Ok(())
    }

    /// Keeps the first `n_keep` positions (`Range` if above the session's length).
    pub fn rewind(&mut self, n_keep: usize) -> Result<()> {
        if n_keep > i32::MAX as usize {
            return Err(Error::Range);
        }
        check(unsafe { sys::session_rewind(self.handle, n_keep as i32) })?;
        self.len = n_keep;
        Ok(())
    }

    /// Closes the session now and reports the host's status (dropping closes it too, silently).
    pub fn close(mut self) -> Result<()> {
        let h = core::mem::replace(&mut self.handle, 0);
        check(unsafe { sys::session_close(h) }).map(|_| ())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.handle > 0 {
            // SAFETY: a plain integer; a stale handle is an error code, never a fault.
            unsafe {
                sys::session_close(self.handle);
            }
        }
    }
}
