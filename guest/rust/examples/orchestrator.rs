//! An example orchestrator written with realm_guest: one request end to end, as guest/default.c
//! does for the common fields (docs/abi.md, "Request JSON"):
//!   - the prompt: `tokens` (ids), `messages` (chat, through `chat_tokenize`) or `prompt` (text);
//!   - `model`, `max_tokens`, `n_ctx`, `temperature` (0: greedy), `top_k`, `top_p`, `min_p`,
//!     `seed`, `add_bos`, `parse_special`, `ignore_eos`, `strip_leading_space`, `stop`;
//!   - stops at an end-of-generation token, a stop string, `max_tokens` or the context length,
//!     and reports usage.
//! `n` > 1, `tools` and `echo` are refused (`Unsupported`: they change the answer's shape); other
//! fields (penalties, `logit_bias`, grammars ...) are ignored: this is a small example, not a
//! replacement of the default guest. With the same settings and seed it picks the default guest's
//! tokens (the same sampler chain, without bias and penalties).

use realm_guest::json::Value;
use realm_guest::{error::fail, request, Error, Finish, Model, Result, Sampler, SamplerParams};
use realm_guest::{StopFilter, TokenizeFlags, Utf8Stream};

/// The request fields this guest reads, with the default guest's defaults.
struct Req {
    model: String,
    max_tokens: Option<usize>,
    n_ctx: usize,
    sampler: SamplerParams,
    seed: Option<u64>,
    add_bos: bool,
    parse_special: bool,
    ignore_eos: bool,
    strip_leading_space: Option<bool>,
    stop: Vec<String>,
}

fn bad<T>(field: &str, want: &str) -> Result<T> {
    fail(Error::Invalid, &format!("request: '{}' must be {}", field, want))
}

/// An optional number field in [lo, hi]; integral if `int`.
fn number(v: &Value, key: &str, lo: f64, hi: f64, int: bool) -> Result<Option<f64>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(x)) if *x >= lo && *x <= hi && (!int || x.fract() == 0.0) => {
            Ok(Some(*x))
        }
        Some(_) => {
            bad(key, &format!("a{} number in [{}, {}]", if int { "n integer" } else { "" }, lo, hi))
        }
    }
}

fn boolean(v: &Value, key: &str, dflt: bool) -> Result<bool> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(dflt),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => bad(key, "a boolean"),
    }
}

/// `stop`: a string or an array of up to 16 strings.
fn stops(v: &Value) -> Result<Vec<String>> {
    match v.get("stop") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) if a.len() <= 16 && a.iter().all(|s| s.as_str().is_some()) => {
            Ok(a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        }
        Some(_) => bad("stop", "a string or an array of up to 16 strings"),
    }
}

fn parse_request(v: &Value) -> Result<Req> {
    if v.as_object().is_none() {
        return fail(Error::Invalid, "request: expected a JSON object");
    }
    let n = number(v, "n", 1.0, 64.0, true)?.unwrap_or(1.0);
    let tools = v.get("tools").map_or(false, |t| !t.is_null());
    if n > 1.0 || tools || boolean(v, "echo", false)? {
        return fail(
            Error::Unsupported,
            "request: 'n' > 1, 'tools' and 'echo' are not supported by this guest",
        );
    }
    let model = match v.get("model") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return bad("model", "a string"),
    };
    let sampler = SamplerParams {
        temperature: number(v, "temperature", 0.0, 100.0, false)?.unwrap_or(0.8) as f32,
        top_k: number(v, "top_k", 0.0, 1e9, true)?.unwrap_or(40.0) as usize,
        top_p: number(v, "top_p", 0.0, 1.0, false)?.unwrap_or(0.95) as f32,
        min_p: number(v, "min_p", 0.0, 1.0, false)?.unwrap_or(0.0) as f32,
        seed: 0,
    };
    Ok(Req {
        model,
        max_tokens: number(v, "max_tokens", 0.0, 1e9, true)?.map(|x| x as usize),
        n_ctx: number(v, "n_ctx", 0.0, 1e9, true)?.unwrap_or(0.0) as usize,
        sampler,
        seed: number(v, "seed", 0.0, 9007199254740991.0, true)?.map(|x| x as u64),
        add_bos: boolean(v, "add_bos", true)?,
        parse_special: boolean(v, "parse_special", true)?,
        ignore_eos: boolean(v, "ignore_eos", false)?,
        strip_leading_space: match v.get("strip_leading_space") {
            None | Some(Value::Null) => None,
            Some(_) => Some(boolean(v, "strip_leading_space", false)?),
        },
        stop: stops(v)?,
    })
}

/// The prompt's token ids from exactly one of `tokens`, `messages` or `prompt`; and whether the
/// prompt was empty text (for the SPM leading-space rule).
fn prompt_tokens(v: &Value, r: &Req, model: &Model) -> Result<(Vec<i32>, bool)> {
    let n_vocab = model.info().n_vocab as i64;
    let given = ["tokens", "messages", "prompt"].iter().filter(|k| v.get(k).is_some()).count();
    if given != 1 {
        return fail(Error::Invalid, "request: exactly one of 'prompt', 'messages' or 'tokens'");
    }
    if let Some(t) = v.get("tokens") {
        let ids: Option<Vec<i32>> = match t.as_array() {
            Some(a) => a
                .iter()
                .map(|x| x.as_i64().filter(|&i| (0..n_vocab).contains(&i)).map(|i| i as i32))
                .collect(),
            None => None,
        };
        return match ids {
            Some(ids) => Ok((ids, false)),
            None => bad("tokens", "an array of token ids of the model's vocabulary"),
        };
    }
    if let Some(m) = v.get("messages") {
        if m.as_array().is_none() {
            return bad("messages", "an array of chat messages");
        }
        let ids = model.chat_tokenize(&m.to_json(), r.add_bos).map_err(|e| e.log("messages"))?;
        return Ok((ids, false));
    }
    let text = match v.get("prompt").and_then(Value::as_str) {
        Some(s) => s,
        None => return bad("prompt", "a string"),
    };
    let flags = TokenizeFlags { add_bos: r.add_bos, parse_special: r.parse_special };
    let ids = model.tokenize(text.as_bytes(), flags).map_err(|e| e.log("tokenize prompt"))?;
    Ok((ids, text.is_empty()))
}

fn init() -> Result<()> {
    Ok(())
}

fn generate() -> Result<()> {
    let v = request::read_json()?;
    let r = parse_request(&v)?;
    let model = Model::open(&r.model).map_err(|e| e.log(&format!("model '{}'", r.model)))?;
    let info = model.info().clone();
    let (mut prompt, empty_text) = prompt_tokens(&v, &r, &model)?;
    if prompt.is_empty() {
        // a generation needs one input token
        match info.bos {
            Some(bos) => prompt.push(bos),
            None => {
                return bad("prompt", "text or tokens (empty, and the vocabulary has no BOS token)")
            }
        }
    }
    // the context: n_ctx, else prompt + max_tokens, else the model's; never above n_ctx_train
    let want = if r.n_ctx > 0 {
        r.n_ctx
    } else {
        r.max_tokens.map_or(info.n_ctx_train, |m| prompt.len().saturating_add(m))
    }
    .clamp(1, info.n_ctx_train);
    if prompt.len() > want {
        return fail(
            Error::ContextFull,
            &format!("prompt of {} tokens exceeds the context of {} tokens", prompt.len(), want),
        );
    }
    let max_tokens = r.max_tokens.unwrap_or(want - prompt.len() + 1);
    let mut session = model.session(want).map_err(|e| e.log(&format!("session_open({})", want)))?;
    let mut sampler = Sampler::new(SamplerParams {
        seed: r.seed.unwrap_or_else(request::random_seed),
        ..r.sampler
    });
    let mut text =
        Utf8Stream::new(r.strip_leading_space.unwrap_or(info.add_space_prefix && empty_text));
    let mut stop = StopFilter::new(r.stop.clone());

    let mut logits = Vec::new();
    session.decode(&prompt, &mut logits).map_err(|e| e.log("decode prompt"))?;
    let (mut n_gen, mut finish) = (0usize, Finish::Length);
    while n_gen < max_tokens {
        let id = sampler.sample(&logits);
        n_gen += 1;
        if !r.ignore_eos && info.is_eog(id) {
            finish = Finish::Stop;
            break;
        }
        let piece = model.token_piece(id).map_err(|e| e.log("token_piece"))?;
        request::emit_str(&stop.push(&text.push(&piece)))?;
        if stop.stopped() {
            finish = Finish::Stop;
            break;
        }
        if n_gen == max_tokens || session.len() >= want {
            break;
        }
        session.decode(&[id], &mut logits).map_err(|e| e.log("decode"))?;
    }
    let tail = stop.push(&text.finish());
    request::emit_str(&(tail + &stop.finish()))?;
    if stop.stopped() {
        finish = Finish::Stop;
    }
    request::usage(prompt.len(), n_gen, finish)
}

realm_guest::export_guest!(init, generate);
