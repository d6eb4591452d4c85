"""reference.py — an independent float64 forward pass (numpy) over a GGUF's dequantized weights,
for llama, qwen2, qwen3, phi3, gemma2 and gemma3: the "exact" answer both realm and llama.cpp approximate.

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
        # phi3's window is ignored, as llama.cpp does; gemma2 defaults to 4096 every other layer
        self.swa = 0
        self.swa_period = 6 if a == "gemma3" else 2
        if a == "gemma3":
            self.swa = int(_field(r, f"{a}.attention.sliding_window", 0) or 0)
        elif a == "gemma2":
            self.swa = int(_field(r, f"{a}.attention.sliding_window", 4096))
        self.swa_period = int(_field(r, f"{a}.attention.sliding_window_pattern", self.swa_period))
        self.base_swa = float(_field(r, f"{a}.rope.freq_base_swa", 10000.0 if a == "gemma3" else self.base))
        self.attn_cap = float(_field(r, f"{a}.attn_logit_softcapping", 50.0)) if a == "gemma2" else 0.0
        default_cap = 30.0 if a == "gemma2" else 0.0
        self.final_cap = float(_field(r, f"{a}.final_logit_softcapping", default_cap) or 0.0) if a.startswith("gemma") else 0.0
        self.rope_mscale = float(_field(r, f"{a}.rope.scaling.attn_factor", 1.0))
        self.T = {t.name: t for t in r.tensors}
        # phi3 128k: the short factors below the original context (the fixed sequences are short)
        self.factors = None
        for name in ("rope_freqs.weight", "rope_factors_short.weight"):
            if name in self.T:
                self.factors = self.w(name).reshape(-1)
                break

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
        if self.factors is not None:
            inv = inv / self.factors
        ang = pos[:, None] * inv[None, :]
        c = self.rope_mscale * np.cos(ang)[:, None, :]
        s = self.rope_mscale * np.sin(ang)[:, None, :]
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
        a = self.arch
        gemma = a in ("gemma2", "gemma3")
        qk_norm = a in ("gemma3", "qwen3")
        n = len(tokens)
        pos = np.arange(n, dtype=np.float64)
        emb = self.w("token_embd.weight")
        x = emb[tokens].copy()
        if gemma:
            x *= np.sqrt(E)
        causal = np.triu(np.full((n, n), -np.inf), 1)
        for il in range(self.L):
            p = f"blk.{il}."
            per = self.swa_period
            swa = gemma and self.swa > 0 and (per == 0 or il % per < per - 1)
            base = self.base_swa if swa else self.base
            xb = self._rms(x, self.w(p + "attn_norm.weight"))
            if self.has(p + "attn_qkv.weight"):  # fused: Q rows, then K, then V
                qkv = xb @ self.w(p + "attn_qkv.weight").T
                q, k, v = qkv[:, :H * HD], qkv[:, H * HD:(H + HK) * HD], qkv[:, (H + HK) * HD:]
            else:
                q = xb @ self.w(p + "attn_q.weight").T
                k = xb @ self.w(p + "attn_k.weight").T
                v = xb @ self.w(p + "attn_v.weight").T
            for t, name in ((q, "attn_q.bias"), (k, "attn_k.bias"), (v, "attn_v.bias")):
                if self.has(p + name):
                    t += self.w(p + name)
            q, k, v = q.reshape(n, H, HD), k.reshape(n, HK, HD), v.reshape(n, HK, HD)
            if qk_norm:
                q = self._rms(q, self.w(p + "attn_q_norm.weight"))
                k = self._rms(k, self.w(p + "attn_k_norm.weight"))
            q, k = self._rope(q, pos, base), self._rope(k, pos, base)
            big = (a == "gemma3" and self.L == 62) or (a == "gemma2" and self.L == 46)
            scale = 1.0 / np.sqrt(HD) if not big else 1.0 / np.sqrt(E // H)
            mask = causal.copy()
            if swa:
                mask += np.tril(np.full((n, n), -np.inf), -self.swa)
            att = np.zeros((n, H, HD))
            for h in range(H):
                g = h // (H // HK)
                sc = q[:, h, :] @ k[:, g, :].T * scale
                if self.attn_cap > 0:
                    sc = self.attn_cap * np.tanh(sc / self.attn_cap)
                sc = sc + mask
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
            if self.has(p + "ffn_gate.weight"):
                g = xb @ self.w(p + "ffn_gate.weight").T
                u = xb @ self.w(p + "ffn_up.weight").T
            else:  # phi3: ffn_up = gate ‖ up
                gu = xb @ self.w(p + "ffn_up.weight").T
                g, u = gu[:, :gu.shape[1] // 2], gu[:, gu.shape[1] // 2:]
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
        out = self.w("output.weight") if self.has("output.weight") and a != "gemma2" else emb
        lg = xb @ out.T
        cap = self.final_cap
        if cap > 0:
            lg = cap * np.tanh(lg / cap)
        return lg
