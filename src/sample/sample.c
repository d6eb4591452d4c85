/*
 * sample.c — the sampler's selection core (include/realm/sample.h), built natively into
 * realm_core and into every guest with the SDK (cmake/guests.cmake).
 *
 * The fast path never sorts the vocabulary. Weights are integers (see sample.h), so a prefix sum
 * in sorted order is the sum of whole blocks plus a sorted walk inside one block, whatever order
 * each block was summed in. A block (bucket) holds the candidates of one eighth of an octave of
 * weight: the bucket index rint(-8y) never rises as the logit rises, so buckets are contiguous
 * runs of the sorted order. One pass computes every weight and the per-bucket sums (four lanes
 * at a time with GCC/Clang vector types: SSE2 natively, SIMD128 in the guest), the bucket where
 * the threshold falls is gathered and sorted, and the walk finishes inside it. With top-p, the
 * same pass also fills the draw temperature's buckets, so top-p and the draw cost one pass.
 *
 * Determinism: the same IEEE float operations in the same order in the scalar and the vector
 * code, no FMA contraction (-ffp-contract=off natively; wasm32 has none), and no float-to-int
 * conversion in the vector code (rounding by adding 1.5 * 2^23 instead).
 */
#include "realm/sample.h"

#include <math.h>
#include <string.h>

#define W_EXP 30       /* weights are round(2^30 * 2^y), below 2^31 (p < 1.4143) */
#define W_CUT (-30.0f) /* y at or below this weighs 0 */
#define DEAD 255       /* the bucket of zero weights; live buckets are 0..240 */
#define MAX_VOCAB (1 << 22)
#define SMALL 64        /* lists this short are sorted by insertion */
#define SMALL_LIST 2048 /* kept sets this short are gathered and sorted whole */
#define LOG2E 1.44269504088896340736f

typedef float f32x4 __attribute__((vector_size(16)));
typedef int32_t i32x4 __attribute__((vector_size(16)));

/* ---- weights ---- */

/* 2^f for f in [-0.5, 0.5] (Cephes exp2f's polynomial), one rounding per step in a fixed
 * order, so that the vector and scalar forms agree bit for bit. */
#define EXP2_POLY(f, p)                                                                            \
    do {                                                                                           \
        p = (f)*1.535336188319500e-4f;                                                             \
        p = p + 1.339887440266574e-3f;                                                             \
        p = p * (f);                                                                               \
        p = p + 9.618437357674640e-3f;                                                             \
        p = p * (f);                                                                               \
        p = p + 5.550332471162809e-2f;                                                             \
        p = p * (f);                                                                               \
        p = p + 2.402264791363012e-1f;                                                             \
        p = p * (f);                                                                               \
        p = p + 6.931472028550421e-1f;                                                             \
        p = p * (f);                                                                               \
        p = p + 1.0f;                                                                              \
    } while (0)

static float bits_to_float(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Rounding to an integer without a float-to-int conversion (several instructions per lane in
 * wasm, where it must saturate): adding 1.5 * 2^23 leaves round-to-nearest-even(x) in the low
 * mantissa bits, for |x| < 2^22. */
#define MAGIC 12582912.0f
#define MAGIC_BITS 0x4b400000

/* The weight as an integer-valued float below 2^31: a sum of fewer than 2^22 of them in double
 * is exact (below 2^53), so float lanes can be added in any order. */
static float weight_f(float logit, float l0, float k) {
    float y = (logit - l0) * k;
    if (!(y > W_CUT)) return 0.0f;
    float m = y + MAGIC, n = m - MAGIC; /* n = rint(y) in [-30, 0] */
    uint32_t nb;
    memcpy(&nb, &m, sizeof nb);
    float f = y - n, p; /* [-0.5, 0.5] */
    EXP2_POLY(f, p);
    float v = p * bits_to_float((nb - MAGIC_BITS + W_EXP + 127) << 23); /* p * 2^(30 + n) */
    return (v + 8388608.0f) - 8388608.0f;                               /* an integer */
}

uint32_t realm_sample_weight(float logit, float l0, float k) {
    return (uint32_t)weight_f(logit, l0, k);
}

/* rint(-8y): falls as the logit rises (eight buckets per octave), 0..240; DEAD past the cut. */
static int bucket_of(float logit, float l0, float k) {
    float y = (logit - l0) * k;
    if (!(y > W_CUT)) return DEAD;
    float m = y * -8.0f + MAGIC;
    uint32_t b;
    memcpy(&b, &m, sizeof b);
    return (int)(b - MAGIC_BITS);
}

/* Weights and buckets of four logits: weight_f and bucket_of, lane by lane. */
/* (inlined: called at two sites per vector, and its outputs should stay in registers) */
static inline __attribute__((always_inline)) void weight4(f32x4 x, float l0, float k, f32x4 *w,
                                                          i32x4 *b) {
    f32x4 y = (x - l0) * k;
    i32x4 live = y > W_CUT;
    f32x4 yc = (f32x4)((i32x4)y & live); /* dead lanes compute on 0: no NaN or overflow */
    f32x4 m = yc + MAGIC, n = m - MAGIC;
    f32x4 f = yc - n, p;
    EXP2_POLY(f, p);
    f32x4 v = p * (f32x4)(((i32x4)m - MAGIC_BITS + W_EXP + 127) << 23);
    v = (v + 8388608.0f) - 8388608.0f;
    *w = (f32x4)((i32x4)v & live);
    f32x4 mb = yc * -8.0f + MAGIC;
    *b = (((i32x4)mb - MAGIC_BITS) & live) | (DEAD & ~live);
}

/* ---- order: logit descending, then id ascending (the key order of the logits' bits) ---- */

static uint32_t float_key(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u & 0x80000000u ? ~u : u | 0x80000000u;
}

/* a comes before b */
static int before(const float *l, int32_t a, int32_t b) {
    uint32_t ka = float_key(l[a]), kb = float_key(l[b]);
    return ka > kb || (ka == kb && a < b);
}

/* Per-bucket weight sums at one temperature scale: four histograms, one per lane, so that
 * neighbours in one bucket do not wait on each other's read-modify-write; hist_total folds
 * them into h[0]. Sums of integer-valued floats below 2^53: exact in double. */
struct hist {
    double h[4][256];
};

struct scratch {
    struct hist *h1, *h2;   /* bucket sums at two temperature scales */
    int32_t *list, *g, *g2; /* candidate lists */
    uint32_t *key, *key2;   /* radix-sort keys */
    uint8_t *bb, *bb2;      /* bucket of each candidate, at two temperature scales */
};

size_t realm_sample_scratch_bytes(int32_t n_vocab) {
    return n_vocab > 0 ? 2 * sizeof(struct hist) + (size_t)n_vocab * (5 * 4 + 2) + 64 : 0;
}

static struct scratch carve(void *mem, int32_t n) {
    struct scratch s;
    s.h1 = mem, s.h2 = s.h1 + 1;
    int32_t *p = (int32_t *)(s.h2 + 1);
    s.list = p, s.g = p + n, s.g2 = p + 2 * (size_t)n;
    s.key = (uint32_t *)(p + 3 * (size_t)n), s.key2 = (uint32_t *)(p + 4 * (size_t)n);
    s.bb = (uint8_t *)(p + 5 * (size_t)n);
    s.bb2 = s.bb + n;
    return s;
}

/* One stable counting pass of the LSD radix sort: (key, ids) by byte `shift` into (k2, i2). */
static void radix_pass(const uint32_t *key, const int32_t *ids, uint32_t *k2, int32_t *i2,
                       int32_t n, int shift) {
    uint32_t count[257] = {0};
    for (int32_t i = 0; i < n; i++)
        count[((key[i] >> shift) & 255) + 1]++;
    for (int b = 0; b < 256; b++)
        count[b + 1] += count[b];
    for (int32_t i = 0; i < n; i++) {
        uint32_t at = count[(key[i] >> shift) & 255]++;
        k2[at] = key[i];
        i2[at] = ids[i];
    }
}

/* Sorts ids[0..n) best first. by_id: the ids are in ascending order already (then one stable
 * radix sort on the logit key suffices; else they are put in id order first). */
static void sort_desc(const float *l, int32_t *ids, int32_t n, int by_id, struct scratch *s) {
    if (n <= SMALL) {
        for (int32_t i = 1; i < n; i++) {
            int32_t v = ids[i], j = i;
            for (; j > 0 && before(l, v, ids[j - 1]); j--)
                ids[j] = ids[j - 1];
            ids[j] = v;
        }
        return;
    }
    uint32_t *k = s->key, *k2 = s->key2, *tk;
    int32_t *a = ids, *a2 = s->g2, *ta;
    if (!by_id) { /* ids below 2^22: three bytes */
        for (int32_t i = 0; i < n; i++)
            k[i] = (uint32_t)a[i];
        for (int shift = 0; shift < 24; shift += 8) {
            radix_pass(k, a, k2, a2, n, shift);
            tk = k, k = k2, k2 = tk, ta = a, a = a2, a2 = ta;
        }
    }
    for (int32_t i = 0; i < n; i++)
        k[i] = ~float_key(l[a[i]]);
    for (int shift = 0; shift < 32; shift += 8) {
        radix_pass(k, a, k2, a2, n, shift);
        tk = k, k = k2, k2 = tk, ta = a, a = a2, a2 = ta;
    }
    if (a != ids) memcpy(ids, a, (size_t)n * sizeof *ids);
}

/* ---- thresholds (the same expressions on both paths) ---- */

/* the running sum the top-p prefix must reach */
static uint64_t top_p_target(float top_p, uint64_t total) {
    double x = ceil((double)top_p * (double)total);
    uint64_t t = x < 1.0 ? 1 : (uint64_t)x;
    return t > total ? total : t;
}

/* the running sum whose reaching picks the drawn token: floor(u * total) + 1 */
static uint64_t draw_target(double u, uint64_t total) {
    uint64_t t = (uint64_t)(u * (double)total);
    return (t >= total ? total - 1 : t) + 1;
}

/* ---- the reference: sequential walks over a sorted list ---- */

/* The kept prefix length of sorted c[0..n) after top-p and min-p. */
static int32_t keep_sorted(const float *l, const int32_t *c, int32_t n,
                           const struct realm_sample_params *p, float l0) {
    if (p->top_p > 0.0f && p->top_p < 1.0f) {
        uint64_t total = 0, cum = 0;
        for (int32_t i = 0; i < n; i++)
            total += realm_sample_weight(l[c[i]], l0, LOG2E);
        uint64_t target = top_p_target(p->top_p, total);
        for (int32_t i = 0; i < n; i++) {
            cum += realm_sample_weight(l[c[i]], l0, LOG2E);
            if (cum >= target) {
                n = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0.0f) {
        float thr = l0 + logf(p->min_p);
        int32_t m = 1;
        while (m < n && l[c[m]] >= thr)
            m++;
        n = m;
    }
    return n;
}

/* The draw over sorted c[0..n) at temperature scale k. */
static int32_t draw_sorted(const float *l, const int32_t *c, int32_t n, float l0, float k,
                           double u) {
    uint64_t total = 0, cum = 0;
    for (int32_t i = 0; i < n; i++)
        total += realm_sample_weight(l[c[i]], l0, k);
    if (total == 0) return c[0]; /* only with infinite logits */
    uint64_t target = draw_target(u, total);
    for (int32_t i = 0; i < n; i++) {
        cum += realm_sample_weight(l[c[i]], l0, k);
        if (cum >= target) return c[i];
    }
    return c[n - 1];
}

int32_t realm_sample_pick_sorted(const float *l, int32_t V, const struct realm_sample_params *p,
                                 double u, void *mem) {
    if (V < 1 || V > MAX_VOCAB) return -1;
    struct scratch s = carve(mem, V);
    for (int32_t i = 0; i < V; i++)
        s.list[i] = i;
    sort_desc(l, s.list, V, 1, &s);
    int32_t n = p->top_k > 0 && p->top_k < V ? p->top_k : V;
    float l0 = l[s.list[0]];
    n = keep_sorted(l, s.list, n, p, l0);
    return draw_sorted(l, s.list, n, l0, LOG2E / p->temperature, u);
}

/* ---- the fast path ---- */

/* The maximum logit; *bad when a NaN or +inf is present (the reference decides those). */
static float max_logit(const float *l, int32_t n, int *bad) {
    f32x4 m = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    i32x4 nan = {0, 0, 0, 0};
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        f32x4 x;
        memcpy(&x, l + i, sizeof x);
        i32x4 gt = x > m;
        m = (f32x4)(((i32x4)x & gt) | ((i32x4)m & ~gt));
        nan |= x != x;
    }
    float best = -INFINITY;
    int odd = nan[0] | nan[1] | nan[2] | nan[3];
    for (int j = 0; j < 4; j++)
        if (m[j] > best) best = m[j];
    for (; i < n; i++) {
        if (l[i] > best) best = l[i];
        odd |= l[i] != l[i];
    }
    *bad = odd || best == INFINITY || best == -INFINITY;
    return best;
}

/* Which candidates a pass looks at: all, those with logit >= thr (min-p), or the sorted prefix
 * that ends at candidate `last` (top-p). */
enum member_kind { ALL, AT_LEAST, PREFIX };
struct member {
    enum member_kind kind;
    float thr;        /* AT_LEAST */
    int32_t sk, last; /* PREFIX: the last one's ordered key and id */
};

/* A float's bits as a signed integer in the order of float_key (-0 below +0). */
static int32_t ordered(float f) {
    int32_t u;
    memcpy(&u, &f, sizeof u);
    return u ^ ((u >> 31) & 0x7fffffff);
}

static int is_member(const struct member *m, const float *l, int32_t i) {
    if (m->kind == ALL) return 1;
    if (m->kind == AT_LEAST) return l[i] >= m->thr;
    int32_t sk = ordered(l[i]);
    return sk > m->sk || (sk == m->sk && i <= m->last);
}

static inline __attribute__((always_inline)) i32x4 member4(const struct member *m, f32x4 x,
                                                           int32_t i) {
    if (m->kind == AT_LEAST) return x >= m->thr;
    i32x4 u = (i32x4)x, id = {i, i + 1, i + 2, i + 3};
    i32x4 sk = u ^ ((u >> 31) & 0x7fffffff);
    return (sk > m->sk) | ((sk == m->sk) & (id <= m->last));
}

struct crossing {
    int32_t id;  /* the candidate where the running sum reaches the target */
    int32_t pos; /* its position in sorted order (counted only when asked) */
};

static uint64_t hist_total(struct hist *hs) {
    double total = 0;
    for (int b = 0; b < DEAD; b++) {
        hs->h[0][b] += hs->h[1][b] + hs->h[2][b] + hs->h[3][b];
        total += hs->h[0][b];
    }
    return (uint64_t)total;
}

/* Weights and buckets of the members among all n logits at scale k (and at k2 when hs2 is
 * given: top-p's temperature 1 and the draw's temperature from one pass): buckets into bb
 * (bb2), sums into hs (hs2), counts into hc when given. */
static void pass_all(const float *l, int32_t n, float l0, float k, const struct member *mb,
                     uint8_t *bb, struct hist *hs, uint32_t *hc, float k2, uint8_t *bb2,
                     struct hist *hs2) {
    typedef uint8_t u8x4 __attribute__((vector_size(4)));
    int32_t i = 0;
    for (; i + 16 <= n; i += 16) { /* four independent vectors: the polynomials overlap */
        f32x4 w[4], w2[4];
        i32x4 b[4], b2[4];
        for (int v = 0; v < 4; v++) {
            f32x4 x;
            memcpy(&x, l + i + 4 * v, sizeof x);
            weight4(x, l0, k, &w[v], &b[v]);
            if (hs2) weight4(x, l0, k2, &w2[v], &b2[v]);
            if (mb->kind != ALL) {
                i32x4 in = member4(mb, x, i + 4 * v);
                w[v] = (f32x4)((i32x4)w[v] & in);
                b[v] = (b[v] & in) | (DEAD & ~in);
            }
        }
        i32x4 all = b[0] & b[1] & b[2] & b[3];
        if (hs2) all &= b2[0] & b2[1] & b2[2] & b2[3];
        if ((all[0] & all[1] & all[2] & all[3]) == DEAD) { /* all sixteen weigh 0 */
            memset(bb + i, DEAD, 16);
            if (hs2) memset(bb2 + i, DEAD, 16);
            continue;
        }
        for (int v = 0; v < 4; v++) {
            u8x4 b8 = __builtin_convertvector(b[v], u8x4);
            memcpy(bb + i + 4 * v, &b8, sizeof b8);
            for (int j = 0; j < 4; j++)
                hs->h[j][b[v][j]] += w[v][j];
            if (hc)
                for (int j = 0; j < 4; j++)
                    hc[b[v][j]]++;
            if (!hs2) continue;
            b8 = __builtin_convertvector(b2[v], u8x4);
            memcpy(bb2 + i + 4 * v, &b8, sizeof b8);
            for (int j = 0; j < 4; j++)
                hs2->h[j][b2[v][j]] += w2[v][j];
        }
    }
    for (; i < n; i++) {
        int in = is_member(mb, l, i), b = in ? bucket_of(l[i], l0, k) : DEAD;
        bb[i] = (uint8_t)b;
        hs->h[0][b] += in ? weight_f(l[i], l0, k) : 0.0f;
        if (hc) hc[b]++;
        if (!hs2) continue;
        bb2[i] = (uint8_t)bucket_of(l[i], l0, k2);
        hs2->h[0][bb2[i]] += weight_f(l[i], l0, k2);
    }
}

/* Ids of the candidates in bucket b, in ascending order (sixteen bucket bytes at a time). */
static int32_t gather(const uint8_t *bb, int32_t n, int b, int32_t *out) {
    typedef uint8_t u8x16 __attribute__((vector_size(16)));
    typedef uint64_t u64x2 __attribute__((vector_size(16)));
    int32_t m = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        u8x16 v;
        memcpy(&v, bb + i, sizeof v);
        u64x2 hit = (u64x2)(v == (uint8_t)b);
        if (!(hit[0] | hit[1])) continue;
        for (int j = 0; j < 16; j++)
            if (bb[i + j] == b) out[m++] = i + j;
    }
    for (; i < n; i++)
        if (bb[i] == b) out[m++] = i;
    return m;
}

/* The first bucket where the running sum of hs (folded) reaches target: its index, with the sum
 * and count before it in *cum and *pos. b stays below DEAD: the total reaches the target. */
static int locate(const struct hist *hs, const uint32_t *hc, int limit, uint64_t target,
                  uint64_t *cum, int32_t *pos) {
    int b = 0;
    for (; b < limit && *cum + (uint64_t)hs->h[0][b] < target; b++) {
        *cum += (uint64_t)hs->h[0][b];
        if (hc) *pos += (int32_t)hc[b];
    }
    return b;
}

/* Bucket b's members sorted and walked on from *cum: where the sum reaches target (id -1 if it
 * does not within the bucket). */
static struct crossing walk_bucket(const float *l, const uint8_t *bb, int32_t n, int b, float l0,
                                   float k, const struct member *mb, uint64_t *cum, uint64_t target,
                                   int32_t pos, struct scratch *s) {
    int32_t m = gather(bb, n, b, s->g), kept = 0;
    for (int32_t j = 0; j < m; j++)
        if (is_member(mb, l, s->g[j])) s->g[kept++] = s->g[j];
    sort_desc(l, s->g, kept, 1, s);
    for (int32_t j = 0; j < kept; j++) {
        *cum += realm_sample_weight(l[s->g[j]], l0, k);
        if (*cum >= target) return (struct crossing){s->g[j], pos + j};
    }
    return (struct crossing){-1, pos + kept};
}

/* The draw (uniform u) over the members at scale k: the bucket sums find the bucket where the
 * running sum in sorted order reaches the target; only that bucket is sorted and walked. */
static struct crossing draw_members(const float *l, int32_t n, float l0, float k,
                                    const struct member *mb, double u, struct scratch *s) {
    static const struct member all = {ALL, 0.0f, 0, 0};
    memset(s->h1, 0, sizeof *s->h1);
    pass_all(l, n, l0, k, mb, s->bb, s->h1, NULL, 0.0f, NULL, NULL);
    uint64_t total = hist_total(s->h1), cum = 0;
    uint64_t target = draw_target(u, total);
    int32_t pos = 0;
    int b = locate(s->h1, NULL, DEAD - 1, target, &cum, &pos);
    return walk_bucket(l, s->bb, n, b, l0, k, &all, &cum, target, pos, s);
}

static int32_t member_ids(const float *l, int32_t n, const struct member *mb, int32_t *out);

/* Top-p (then min-p) and the draw from one pass over the logits: top-p's boundary from the
 * temperature-1 buckets; the kept set is every draw bucket above the boundary's draw bucket
 * plus the members of that one (buckets fall as logits rise, at both scales). */
static int32_t pick_top_p(const float *l, int32_t V, const struct realm_sample_params *p, float l0,
                          float kT, double u, struct scratch *s) {
    static const struct member all = {ALL, 0.0f, 0, 0};
    uint32_t hc[256];
    memset(s->h1, 0, sizeof *s->h1);
    memset(s->h2, 0, sizeof *s->h2);
    memset(hc, 0, sizeof hc);
    int same = kT == LOG2E;
    pass_all(l, V, l0, LOG2E, &all, s->bb, s->h1, hc, kT, same ? NULL : s->bb2,
             same ? NULL : s->h2);
    uint64_t total = hist_total(s->h1), cum = 0;
    uint64_t target = top_p_target(p->top_p, total);
    int32_t pos = 0;
    int b = locate(s->h1, hc, DEAD - 1, target, &cum, &pos);
    struct crossing e = walk_bucket(l, s->bb, V, b, l0, LOG2E, &all, &cum, target, pos, s);
    struct member kept = {PREFIX, 0.0f, ordered(l[e.id]), e.id};
    float lb = l[e.id];
    if (p->min_p > 0.0f) {
        float thr = l0 + logf(p->min_p);
        if (lb < thr) kept = (struct member){AT_LEAST, thr, 0, 0}, lb = thr;
    }
    if (kept.kind == PREFIX && e.pos < SMALL_LIST) { /* short: sort it whole */
        int32_t n = member_ids(l, V, &kept, s->list);
        sort_desc(l, s->list, n, 1, s);
        return draw_sorted(l, s->list, n, l0, kT, u);
    }
    const uint8_t *bbT = same ? s->bb : s->bb2;
    struct hist *hsT = same ? s->h1 : s->h2;
    if (!same) hist_total(s->h2);
    /* the kept weight: whole buckets above the boundary's, then its members */
    int bk = bucket_of(lb, l0, kT);
    uint64_t sum = 0;
    for (int j = 0; j < bk && j < DEAD; j++)
        sum += (uint64_t)hsT->h[0][j];
    if (bk < DEAD) {
        int32_t m = gather(bbT, V, bk, s->g);
        for (int32_t j = 0; j < m; j++)
            if (is_member(&kept, l, s->g[j])) sum += realm_sample_weight(l[s->g[j]], l0, kT);
    }
    uint64_t t = draw_target(u, sum);
    cum = 0, pos = 0;
    b = locate(hsT, NULL, bk < DEAD ? bk : DEAD - 1, t, &cum, &pos);
    e = walk_bucket(l, bbT, V, b, l0, kT, b < bk ? &all : &kept, &cum, t, 0, s);
    return e.id;
}

/* The k best ids (a min-heap by sorted order over the vocabulary), in ascending id order. */
static int32_t top_k_ids(const float *l, int32_t V, int32_t k, int32_t *h) {
    for (int32_t i = 0; i < k; i++)
        h[i] = i;
    for (int32_t j0 = k / 2 - 1; j0 >= 0; j0--)
        for (int32_t j = j0;;) { /* sift down: the worst at the root */
            int32_t a = 2 * j + 1, b = a + 1, w = j;
            if (a < k && before(l, h[w], h[a])) w = a;
            if (b < k && before(l, h[w], h[b])) w = b;
            if (w == j) break;
            int32_t t = h[j];
            h[j] = h[w], h[w] = t, j = w;
        }
    for (int32_t i = k; i < V; i++) {
        if (!before(l, i, h[0])) continue;
        h[0] = i;
        for (int32_t j = 0;;) {
            int32_t a = 2 * j + 1, b = a + 1, w = j;
            if (a < k && before(l, h[w], h[a])) w = a;
            if (b < k && before(l, h[w], h[b])) w = b;
            if (w == j) break;
            int32_t t = h[j];
            h[j] = h[w], h[w] = t, j = w;
        }
    }
    return k;
}

/* Logits >= thr. */
static int32_t count_ge(const float *l, int32_t n, float thr) {
    i32x4 c = {0, 0, 0, 0};
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        f32x4 x;
        memcpy(&x, l + i, sizeof x);
        c -= x >= thr;
    }
    int32_t m = c[0] + c[1] + c[2] + c[3];
    for (; i < n; i++)
        m += l[i] >= thr;
    return m;
}

/* Ids of the members, in ascending order (a vector prefilter: most logits are below). */
static int32_t member_ids(const float *l, int32_t n, const struct member *mb, int32_t *out) {
    float lo = mb->kind == AT_LEAST ? mb->thr : l[mb->last];
    int32_t m = 0, i = 0;
    for (; i + 4 <= n; i += 4) {
        f32x4 x;
        memcpy(&x, l + i, sizeof x);
        i32x4 ge = x >= lo;
        if (!(ge[0] | ge[1] | ge[2] | ge[3])) continue;
        for (int j = 0; j < 4; j++)
            if (is_member(mb, l, i + j)) out[m++] = i + j;
    }
    for (; i < n; i++)
        if (is_member(mb, l, i)) out[m++] = i;
    return m;
}

int32_t realm_sample_pick(const float *l, int32_t V, const struct realm_sample_params *p, double u,
                          void *mem) {
    if (V < 1 || V > MAX_VOCAB) return -1;
    int bad;
    float l0 = max_logit(l, V, &bad);
    float kT = LOG2E / p->temperature;
    if (bad || !(kT <= 3.4e38f)) return realm_sample_pick_sorted(l, V, p, u, mem);
    struct scratch s = carve(mem, V);
    if (p->top_k > 0 && p->top_k < V) { /* a short list: sort it, walk it */
        int32_t n = top_k_ids(l, V, p->top_k, s.list);
        sort_desc(l, s.list, n, 0, &s);
        n = keep_sorted(l, s.list, n, p, l0);
        return draw_sorted(l, s.list, n, l0, kT, u);
    }
    if (p->top_p > 0.0f && p->top_p < 1.0f) return pick_top_p(l, V, p, l0, kT, u, &s);
    struct member kept = {ALL, 0.0f, 0, 0};
    if (p->min_p > 0.0f) { /* the logits >= thr (never none: the maximum is at or above thr) */
        kept = (struct member){AT_LEAST, l0 + logf(p->min_p), 0, 0};
        if (count_ge(l, V, kept.thr) <= SMALL_LIST) {
            int32_t n = member_ids(l, V, &kept, s.list);
            sort_desc(l, s.list, n, 1, &s);
            return draw_sorted(l, s.list, n, l0, kT, u);
        }
    }
    return draw_members(l, V, l0, kT, &kept, u, &s).id;
}
