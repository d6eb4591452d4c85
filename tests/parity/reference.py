"""reference.py — an independent float64 forward pass (numpy) over a GGUF's dequantized weights,
for llama, qwen2 and gemma3: the "exact" answer both realm and llama.cpp approximate.

It exists because logits parity between two quantized engines has a noise floor: every projection
quantizes its input activations to 8 bits (Q8_0 / Q8_1 / Q8_K), so a last-bit difference anywhere
(summation order, an exp approximation) flips some roundings and the difference cascades through
the layers. On SmolLM2-135M Q4_1 realm's own scalar and AVX-512 kernels differ by ~3% relative L2,
as much as realm and llama.cpp do. Measuring both engines against this reference tells which one is
closer to the exact computation.

Weights are dequantized with gguf-py (gguf.quants.dequantize). Hyper-parameters follow
llama.cpp's defaults (see src/model/model.c for the same rules in C).
"""
import numpy as np


def _field(r, key, default=None):
    f = r.fields.get(key)
    if f is None:
        return default
    v = f.contents()
    return v


class Reference:
    def __init__(self, path):
        import gguf

        self.gguf = gguf
        self.r = gguf.GGUFReader(str(path))
        r = self.r
        self.arch = _field(r, "general.architecture")
        a = self.arch
        self.E = int(_field(r, f"{a}.embedding_length"))
        self.L = int(_field(r, f"{a}.block_count"))
        self.H = int(_field(r, f"{a}.attention.head_count"))
        self.HK = int(_field(r, f"{a}.attention.head_count_kv", self.H))
        self.HD = int(_field(r, f"{a}.attention.key_length", self.E // self.H))
        self.eps = float(_field(r, f"{a}.attention.layer_norm_rms_epsilon"))
        self.base = float(_field(r, f"{a}.rope.freq_base", 10000.0))
        self.n_rot = int(_field(r, f"{a}.rope.dimension_count", self.HD))
        self.swa = int(_field(r, f"{a}.attention.sliding_window", 0) or 0) if a == "gemma3" else 0
        self.T = {t.name: t for t in r.tensors}

    def w(self, name):
        t = self.T[name]
        a = self.gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
        shape = [int(x) for x in reversed(t.shape.tolist())]
        return a.reshape(shape)

    def has(self, name):
        return name in self.T

    def _rms(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def _rope(self, x, pos, base):
        """x: (n, heads, HD); llama rotates adjacent pairs, qwen2/gemma3 the two halves (NEOX)."""
        half = self.n_rot // 2
        inv = base ** (-np.arange(half) * 2.0 / self.n_rot)
        ang = pos[:, None] * inv[None, :]
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        out = x.copy()
        if self.arch == "llama":
            x0, x1 = x[..., 0:self.n_rot:2], x[..., 1:self.n_rot:2]
            out[..., 0:self.n_rot:2] = x0 * c - x1 * s
            out[..., 1:self.n_rot:2] = x0 * s + x1 * c
        else:
            x0, x1 = x[..., :half], x[..., half:self.n_rot]
            out[..., :half] = x0 * c - x1 * s
            out[..., half:self.n_rot] = x0 * s + x1 * c
        return out

    def logits(self, tokens, positions=None):
        """Logits of every position, or only of `positions` (the output projection of a 262k
        vocabulary for hundreds of positions would not fit in memory in float64)."""
        E, H, HK, HD = self.E, self.H, self.HK, self.HD
        gemma = self.arch == "gemma3"
        n = len(tokens)
        pos = np.arange(n, dtype=np.float64)
        emb = self.w("token_embd.weight")
        x = emb[tokens].copy()
        if gemma:
            x *= np.sqrt(E)
        causal = np.triu(np.full((n, n), -np.inf), 1)
        for il in range(self.L):
            p = f"blk.{il}."
            swa = gemma and self.swa > 0 and il % 6 < 5
            base = 10000.0 if swa else self.base
            xb = self._rms(x, self.w(p + "attn_norm.weight"))
            q = xb @ self.w(p + "attn_q.weight").T
            k = xb @ self.w(p + "attn_k.weight").T
            v = xb @ self.w(p + "attn_v.weight").T
            for t, name in ((q, "attn_q.bias"), (k, "attn_k.bias"), (v, "attn_v.bias")):
                if self.has(p + name):
                    t += self.w(p + name)
            q, k, v = q.reshape(n, H, HD), k.reshape(n, HK, HD), v.reshape(n, HK, HD)
            if gemma:
                q = self._rms(q, self.w(p + "attn_q_norm.weight"))
                k = self._rms(k, self.w(p + "attn_k_norm.weight"))
            q, k = self._rope(q, pos, base), self._rope(k, pos, base)
            scale = 1.0 / np.sqrt(HD) if not (gemma and self.L == 62) else 1.0 / np.sqrt(E / H)
            mask = causal.copy()
            if swa:
                mask += np.tril(np.full((n, n), -np.inf), -self.swa)
            att = np.zeros((n, H, HD))
            for h in range(H):
                g = h // (H // HK)
                sc = q[:, h, :] @ k[:, g, :].T * scale + mask
                sc -= sc.max(axis=1, keepdims=True)
                pr = np.exp(sc)
                pr /= pr.sum(axis=1, keepdims=True)
                att[:, h, :] = pr @ v[:, g, :]
            o = att.reshape(n, H * HD) @ self.w(p + "attn_output.weight").T
            if self.has(p + "attn_output.bias"):
                o += self.w(p + "attn_output.bias")
            if gemma:
                o = self._rms(o, self.w(p + "post_attention_norm.weight"))
            x = x + o
            xb = self._rms(x, self.w(p + "ffn_norm.weight"))
            g = xb @ self.w(p + "ffn_gate.weight").T
            u = xb @ self.w(p + "ffn_up.weight").T
            if gemma:
                act = 0.5 * g * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (g + 0.044715 * g ** 3)))
            else:
                act = g / (1.0 + np.exp(-g))
            o = (act * u) @ self.w(p + "ffn_down.weight").T
            if gemma:
                o = self._rms(o, self.w(p + "post_ffw_norm.weight"))
            x = x + o
        if positions is not None:
            x = x[np.asarray(positions)]
        xb = self._rms(x, self.w("output_norm.weight"))
        out = self.w("output.weight") if self.has("output.weight") else emb
        lg = xb @ out.T
        cap = float(_field(self.r, f"{self.arch}.final_logit_softcapping", 0.0) or 0.0) if gemma else 0.0
        if cap > 0:
            lg = cap * np.tanh(lg / cap)
        return lg
