//! Models: opened by name through the host's model list (never by path), with their info,
//! tokenizer and chat template. A model handle lives as long as the instance (the ABI has no
//! `model_close`; opening the same name again gives the same handle), so a [`Model`] needs no
//! cleanup: it holds the handle and the parsed info, and may be cloned or kept across requests.

use crate::error::{check, Error, Result};
use crate::json::{self, Value};
use crate::session::Session;
use crate::sys;

/// `tokenize` flags (`REALM_ABI_TOKENIZE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenizeFlags {
    /// Prepend BOS if the vocabulary uses one.
    pub add_bos: bool,
    /// Recognise special-token text ("<|im_start|>"): only for text the guest trusts.
    pub parse_special: bool,
}

impl TokenizeFlags {
    pub const NONE: TokenizeFlags = TokenizeFlags { add_bos: false, parse_special: false };

    fn bits(self) -> i32 {
        (self.add_bos as i32) | ((self.parse_special as i32) << 1)
    }
}

/// What `model_info` says about a model (docs/abi.md, `model_info`).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub arch: String,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub bos: Option<i32>,
    pub eos: Option<i32>,
    pub add_bos: bool,
    /// SPM: the detokenizer drops the first piece's leading space.
    pub add_space_prefix: bool,
    /// `"llama"` (SPM) or `"gpt2"` (byte-level BPE).
    pub tokenizer: String,
    /// The chat template's family name, if any.
    pub chat_template: Option<String>,
    /// Every end-of-generation token id.
    pub eog: Vec<i32>,
}

impl ModelInfo {
    /// Reads the info from `model_info`'s JSON. `Error::Format` if a required field
    /// (`n_vocab`, `n_ctx_train`, `eog`) is missing or of the wrong type.
    pub fn from_json(v: &Value) -> Result<ModelInfo> {
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let count = |k: &str| v.get(k).and_then(Value::as_i64).filter(|&n| n >= 0);
        let token = |k: &str| {
            v.get(k)
                .and_then(Value::as_i64)
                .filter(|&t| (0..=i32::MAX as i64).contains(&t))
                .map(|t| t as i32)
        };
        let n_vocab = count("n_vocab").filter(|&n| n > 0).ok_or(Error::Format)?;
        let n_ctx_train = count("n_ctx_train").filter(|&n| n > 0).ok_or(Error::Format)?;
        let eog = v.get("eog").and_then(Value::as_array).ok_or(Error::Format)?;
        let eog: Option<Vec<i32>> = eog
            .iter()
            .map(|t| t.as_i64().filter(|&t| (0..n_vocab).contains(&t)).map(|t| t as i32))
            .collect();
        Ok(ModelInfo {
            name: text("name"),
            arch: text("arch"),
            n_vocab: n_vocab as usize,
            n_ctx_train: n_ctx_train as usize,
            n_embd: count("n_embd").unwrap_or(0) as usize,
            n_layer: count("n_layer").unwrap_or(0) as usize,
            bos: token("bos"),
            eos: token("eos"),
            add_bos: v.get("add_bos").and_then(Value::as_bool).unwrap_or(false),
            add_space_prefix: v.get("add_space_prefix").and_then(Value::as_bool).unwrap_or(false),
            tokenizer: text("tokenizer"),
            chat_template: v.get("chat_template").and_then(Value::as_str).map(str::to_string),
            eog: eog.ok_or(Error::Format)?,
        })
    }

    /// True for an end-of-generation token.
    pub fn is_eog(&self, token: i32) -> bool {
        self.eog.contains(&token)
    }
}

/// Calls a buffer-filling import (`snprintf`-like: returns the full length, writes at most `cap`)
/// until the result fits, and returns exactly the result's elements.
pub(crate) fn fill<T: Copy + Default>(
    first_cap: usize,
    mut call: impl FnMut(*mut T, i32) -> i32,
) -> Result<Vec<T>> {
    let mut buf: Vec<T> = vec![T::default(); first_cap.max(1)];
    // a result may grow between calls only if the host's state changed; a few rounds suffice
    for _ in 0..4 {
        let cap = buf.len().min(i32::MAX as usize) as i32;
        let n = check(call(buf.as_mut_ptr(), cap))? as usize;
        if n <= buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        buf = vec![T::default(); n];
    }
    Err(Error::Internal)
}

fn len_i32(n: usize) -> Result<i32> {
    if n > i32::MAX as usize {
        Err(Error::Limit)
    } else {
        Ok(n as i32)
    }
}

/// An open model: its handle and its info.
#[derive(Clone, Debug)]
pub struct Model {
    handle: i32,
    info: ModelInfo,
}

impl Model {
    /// Opens a model by its configured name; `""` is the tenant's default model. Errors:
    /// `NotFound` (no such model, or one the tenant may not use), `Limit` (name over 256 bytes, or
    /// the handle table is full), `Format` (the host's info is not what this crate reads).
    pub fn open(name: &str) -> Result<Model> {
        let n = len_i32(name.len())?;
        // SAFETY: name is a live slice of n bytes.
        let handle = check(unsafe { sys::model_open(name.as_ptr(), n) })?;
        let text = fill::<u8>(1024, |p, cap| unsafe { sys::model_info(handle, p, cap) })?;
        let v = json::parse_bytes(&text).map_err(|_| Error::Format)?;
        Ok(Model { handle, info: ModelInfo::from_json(&v)? })
    }

    /// The tenant's default model (`open("")`).
    pub fn open_default() -> Result<Model> {
        Model::open("")
    }

    /// The raw handle, for the `sys` imports.
    pub fn handle(&self) -> i32 {
        self.handle
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// `model_info`'s JSON text as the host wrote it (for fields this crate does not read).
    pub fn info_json(&self) -> Result<String> {
        let h = self.handle;
        let bytes = fill::<u8>(1024, |p, cap| unsafe { sys::model_info(h, p, cap) })?;
        String::from_utf8(bytes).map_err(|_| Error::Format)
    }

    /// Token ids of `text`. `Limit` for text above the host's input cap (default 4 MiB).
    pub fn tokenize(&self, text: &[u8], flags: TokenizeFlags) -> Result<Vec<i32>> {
        let n = len_i32(text.len())?;
        let h = self.handle;
        let first = text.len() / 2 + 8;
        // SAFETY: text is live for n bytes; fill passes a buffer of cap elements.
        fill::<i32>(first, |p, cap| unsafe {
            sys::tokenize(h, text.as_ptr(), n, flags.bits(), p, cap)
        })
    }

    /// The bytes of one token (SPM `▁` → space, `<0xNN>` → that byte, control tokens → empty).
    /// A piece may be part of a UTF-8 sequence: see [`crate::text::Utf8Stream`].
    /// `Invalid` for a token outside the vocabulary.
    pub fn token_piece(&self, token: i32) -> Result<Vec<u8>> {
        let h = self.handle;
        fill::<u8>(64, |p, cap| unsafe { sys::token_piece(h, token, p, cap) })
    }

    /// The prompt of chat `messages` (OpenAI's JSON: the array, or the object form of
    /// docs/abi.md) rendered with the model's template and tokenized so that only the template's
    /// markup becomes control tokens: the safe way to turn client messages into a prompt.
    pub fn chat_tokenize(&self, messages_json: &str, add_bos: bool) -> Result<Vec<i32>> {
        let n = len_i32(messages_json.len())?;
        let h = self.handle;
        let flags = add_bos as i32;
        let first = messages_json.len() / 2 + 64;
        fill::<i32>(first, |p, cap| unsafe {
            sys::chat_tokenize(h, messages_json.as_ptr(), n, flags, p, cap)
        })
    }

    /// The rendered chat prompt as text (tokenizing it with `parse_special` would turn message
    /// content into control tokens: prefer [`Model::chat_tokenize`]).
    pub fn chat_format(&self, messages_json: &str) -> Result<String> {
        let n = len_i32(messages_json.len())?;
        let h = self.handle;
        let bytes = fill::<u8>(messages_json.len() + 256, |p, cap| unsafe {
            sys::chat_format(h, messages_json.as_ptr(), n, p, cap)
        })?;
        String::from_utf8(bytes).map_err(|_| Error::Format)
    }

    /// A new session (KV cache) of `n_ctx` positions; 0 means the model's `n_ctx_train` capped by
    /// the host. See [`Session::open`].
    pub fn session(&self, n_ctx: usize) -> Result<Session> {
        Session::open(self, n_ctx)
    }

    /// Reports one logprobs record for the current choice (docs/abi.md, `logprobs`): `ids[0]` /
    /// `lps[0]` the sampled token, then up to 20 alternatives best first.
    pub fn logprobs(&self, ids: &[i32], lps: &[f32]) -> Result<()> {
        if ids.len() != lps.len() {
            return Err(Error::Invalid);
        }
        let n = len_i32(ids.len())?;
        check(unsafe { sys::logprobs(self.handle, ids.as_ptr(), lps.as_ptr(), n) }).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_from_json() {
        let v = json::parse(
            r#"{"name":"stories260K","arch":"llama","n_vocab":512,"n_ctx_train":512,"n_embd":64,
                "n_layer":5,"bos":1,"eos":2,"add_bos":true,"add_space_prefix":true,
                "tokenizer":"llama","pre":"default","chat_template":null,"tool_format":"hermes",
                "eog":[2]}"#,
        )
        .unwrap();
        let mi = ModelInfo::from_json(&v).unwrap();
        assert_eq!(mi.n_vocab, 512);
        assert_eq!(mi.bos, Some(1));
        assert_eq!(mi.chat_template, None);
        assert!(mi.is_eog(2) && !mi.is_eog(1));
        assert!(mi.add_space_prefix);
        let none =
            json::parse(r#"{"n_vocab":10,"n_ctx_train":8,"bos":-1,"eos":-1,"eog":[]}"#).unwrap();
        let mi = ModelInfo::from_json(&none).unwrap();
        assert_eq!((mi.bos, mi.eos, mi.eog.len()), (None, None, 0));
        for bad in [
            r#"{"n_ctx_train":8,"eog":[]}"#,
            r#"{"n_vocab":10,"n_ctx_train":8,"eog":[10]}"#,
            r#"{"n_vocab":10,"n_ctx_train":8}"#,
            r#"{"n_vocab":1.5,"n_ctx_train":8,"eog":[]}"#,
        ] {
            assert_eq!(
                ModelInfo::from_json(&json::parse(bad).unwrap()),
                Err(Error::Format),
                "{}",
                bad
            );
        }
    }

    #[test]
    fn fill_retries_with_the_full_length() {
        let text = b"a result longer than the first buffer";
        let mut calls = 0;
        let got = fill::<u8>(4, |p, cap| {
            calls += 1;
            let n = (cap as usize).min(text.len());
            unsafe { core::ptr::copy_nonoverlapping(text.as_ptr(), p, n) };
            text.len() as i32
        })
        .unwrap();
        assert_eq!(got, text.to_vec());
        assert_eq!(calls, 2);
        assert_eq!(fill::<u8>(4, |_, _| -8), Err(Error::NotFound));
        assert_eq!(fill::<i32>(4, |_, _| 0).unwrap().len(), 0);
    }
}
