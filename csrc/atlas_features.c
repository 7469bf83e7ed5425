/* atlas_features.c: tokenising and feature hashing for the spam model, URL
 * hosts and the first external IP of a Received chain.
 *
 * Everything here runs per message inside one Cython call per chunk, so the
 * hot loops avoid per-token allocation: the feature buffer is reserved once
 * per field for its worst case and then filled without checks.
 */
#define _GNU_SOURCE /* memmem */
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "atlas_features.h"
#include "common.h"

/* ------------------------------------------------------------------------
 * Hashing (feature version 5).
 *
 * A feature is (prefix, name).  The prefix ("w:", "subj:") becomes a 32-bit
 * seed once per field (FNV-1a: prefixes are short and hashed rarely); the
 * name is hashed 8 bytes at a time: each little-endian word, ASCII upper
 * case folded in all 8 lanes at once when asked, goes through one
 * xor-multiply-shift step.  A token of up to 8 bytes is one step, against
 * one serial FNV multiply per byte before.  A hash is the top half of the
 * last step's 64-bit product, and a bucket its top ``nbits`` bits
 * (multiplicative hashing): the top bits of a product depend on every bit
 * of the input, where its low bits see only the input's low bits.
 * ------------------------------------------------------------------------ */

#define HMUL 0x9E3779B97F4A7C15ull
#define HMUL2 0xC2B2AE3D27D4EB4Full

ATLAS_INLINE uint32_t fnv(uint32_t h, const char *s, size_t n, int fold) {
    const uint8_t *p = (const uint8_t *)s;
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ (fold ? atlas_lower(p[i]) : p[i])) * 16777619u;
    return h;
}

/* 8 bytes, little-endian whatever the host, from memory known readable. */
ATLAS_INLINE uint64_t load8(const uint8_t *p) {
    uint64_t w;
    memcpy(&w, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    return w;
}

/* The first n (1..8) bytes at p as a little-endian word, upper bytes zero,
 * reading no byte past p + n. */
ATLAS_INLINE uint64_t load_tail(const uint8_t *p, size_t n) {
    uint64_t w = 0;
    size_t k;
    for (k = 0; k < n; k++) w |= (uint64_t)p[k] << (8 * k);
    return w;
}

/* Hash of name p[:n] under ``seed``; ``room`` (>= n) bytes at p are
 * readable, so a tail with 8 readable bytes is one load and a mask. */
ATLAS_INLINE uint32_t hname(uint32_t seed, const uint8_t *p, size_t n, int fold, size_t room) {
    uint64_t h = ((uint64_t)seed * HMUL2) ^ n;
    uint64_t w;
    while (n > 8) {
        w = load8(p);
        if (fold) w = atlas_fold8(w);
        h = (h ^ w) * HMUL;
        h ^= h >> 29;
        p += 8;
        n -= 8;
        room -= 8;
    }
    if (n) {
        w = room >= 8 ? load8(p) & (~0ull >> (64 - 8 * n)) : load_tail(p, n);
        if (fold) w = atlas_fold8(w);
        h ^= w;
    }
    return (uint32_t)((h * HMUL) >> 32);
}

/* Hash of a bigram: the pair of its tokens' hashes under ``seed``. */
ATLAS_INLINE uint32_t hpair(uint32_t seed, uint32_t a, uint32_t b) {
    uint64_t h = (((uint64_t)a << 32) | b) ^ ((uint64_t)seed * HMUL2);
    return (uint32_t)((h * HMUL) >> 32);
}

uint32_t atlas_hash(uint32_t seed, const char *s, size_t n, int fold) {
    return hname(seed, (const uint8_t *)s, n, fold, n);
}

uint32_t atlas_prefix_seed(const char *prefix) {
    return fnv(2166136261u, prefix, strlen(prefix), 0);
}

uint32_t atlas_seed_n(const char *s, size_t n, int fold) {
    return fnv(2166136261u, s, n, fold);
}


/* ------------------------------------------------------------------------
 * Feature buffer
 * ------------------------------------------------------------------------ */

int atlas_feats_reserve(atlas_feats *f, size_t extra) {
    size_t cap = f->cap ? f->cap : 1024;
    atlas_feat *grown;
    if (LIKELY(f->n + extra <= f->cap)) return 0;
    while (cap < f->n + extra) cap *= 2;
    grown = (atlas_feat *)realloc(f->items, cap * sizeof(atlas_feat));
    if (grown == NULL) return -1;
    f->items = grown;
    f->cap = cap;
    return 0;
}

void atlas_feats_free(atlas_feats *f) {
    free(f->items);
    f->items = NULL;
    f->n = f->cap = 0;
}

ATLAS_INLINE void put(atlas_feats *f, uint32_t h, const char *prefix, const char *name,
                      size_t n, int fold, float value) {
    atlas_feat *x = &f->items[f->n++];
    x->bucket = h >> f->shift; /* the top bits: see hname */
    if (f->prefetch) __builtin_prefetch(f->prefetch + x->bucket);
    x->value = value;
    x->prefix = prefix;
    x->name = name;
    x->name_len = (int32_t)n;
    x->fold = fold;
}

/* put() for loops that emit many features into reserved room: the cursor,
 * shift and prefetch base live in locals.  Built with -fno-strict-aliasing,
 * every store through put()'s item pointer could change *f, so put()
 * reloads f->items, f->n, f->shift and f->prefetch for each feature. */
ATLAS_INLINE atlas_feat *emit(atlas_feat *x, uint32_t h, int shift, const uint16_t *pf,
                              const char *prefix, const char *name, size_t n, int fold) {
    x->bucket = h >> shift;
    if (pf) __builtin_prefetch(pf + x->bucket);
    x->value = 1.0f;
    x->prefix = prefix;
    x->name = name;
    x->name_len = (int32_t)n;
    x->fold = fold;
    return x + 1;
}

int atlas_push(atlas_feats *f, const char *prefix, uint32_t seed, const char *name, size_t n,
               int fold, float value) {
    if (atlas_feats_reserve(f, 1) < 0) return -1;
    put(f, hname(seed, (const uint8_t *)name, n, fold, n), prefix, name, n, fold, value);
    return 0;
}

int atlas_push_split(atlas_feats *f, const char *name, size_t n, int fold, float value) {
    const char *colon = (const char *)memchr(name, ':', n);
    size_t cut = colon ? (size_t)(colon - name) + 1 : 0;
    uint32_t seed = atlas_seed_n(name, cut, fold);
    if (atlas_feats_reserve(f, 1) < 0) return -1;
    put(f, hname(seed, (const uint8_t *)name + cut, n - cut, fold, n - cut), "", name, n, fold,
        value);
    return 0;
}

/* ------------------------------------------------------------------------
 * Tokens
 *
 * Runs of ASCII letters/digits and non-ASCII bytes (UTF-8 words stay whole),
 * with ' . - _ allowed inside a run; '$' and '!' are tokens of their own.
 * Tokens with a digit and more than four bytes become a shape (#n7) so that
 * prices, phone numbers and ids generalise; runs over 30 bytes are #long.
 * ------------------------------------------------------------------------ */

#define MAX_TOKEN_LEN 30

static const char *SHAPES[9] = {"#n5", "#n6", "#n7", "#n8", "#n9",
                                "#n10", "#n11", "#n12", "#n13+"};
static const char LONG_TOKEN[] = "#long";


/* Byte classes for the token loop: one table load instead of a chain of
 * range tests per byte. */
enum { C_TOK = 1, C_UPPER = 2, C_LETTER = 4, C_DIGIT = 8, C_JOIN = 16, C_SOLO = 32 };

#define TOKCLASS_(c)                                                                   \
    (uint8_t)((c) >= 'A' && (c) <= 'Z'   ? C_TOK | C_UPPER | C_LETTER                      \
              : (c) >= 'a' && (c) <= 'z' ? C_TOK | C_LETTER                                \
              : (c) >= '0' && (c) <= '9' ? C_TOK | C_DIGIT                                 \
              : (c) >= 128               ? C_TOK                                           \
              : (c) == '\'' || (c) == '.' || (c) == '-' || (c) == '_' ? C_JOIN            \
              : (c) == '$' || (c) == '!' ? C_SOLO                                          \
                                         : 0)
#define IS_WS_(c) (uint8_t)((c) == ' ' || ((c) >= '\t' && (c) <= '\r'))
#define SQUEEZED_(c) (uint8_t)(IS_WS_(c) ? ' ' : (c))
static const uint8_t CLS[256] = ATLAS_TABLE256(TOKCLASS_);
static const uint8_t IS_WS[256] = ATLAS_TABLE256(IS_WS_);
static const uint8_t SQUEEZED[256] = ATLAS_TABLE256(SQUEEZED_); /* whitespace -> ' ' */
#undef TOKCLASS_
#undef IS_WS_
#undef SQUEEZED_

/* Byte classes of a 64-byte block as bit masks (bit k = byte k): token
 * bytes (ASCII letters and digits, every byte >= 128), joiners, solo bytes,
 * digits, and upper-case and all ASCII letters for the case counts.  Bytes
 * past ``avail`` read as NUL, which is in no class. */
typedef struct {
    uint64_t tok, join, solo, digit, upper, letter;
} block_masks;

/* Bytes >= 128 of a block: token bytes that are neither ASCII digits nor
 * ASCII letters. */
ATLAS_INLINE uint64_t high_bytes(const block_masks *m) { return m->tok & ~(m->digit | m->letter); }

static void classify_block(const uint8_t *p, size_t avail, block_masks *m) {
    uint8_t tmp[64];
    int q;
    if (avail < 64) {
        memset(tmp, 0, sizeof tmp);
        memcpy(tmp, p, avail);
        p = tmp;
    }
    memset(m, 0, sizeof *m);
#ifdef __SSE2__
    for (q = 0; q < 4; q++) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + 16 * q));
        __m128i d = _mm_sub_epi8(v, _mm_set1_epi8('0'));
        __m128i l = _mm_sub_epi8(_mm_or_si128(v, _mm_set1_epi8(0x20)), _mm_set1_epi8('a'));
        __m128i u = _mm_sub_epi8(v, _mm_set1_epi8('A'));
        /* x <= k unsigned: min(x, k) == x */
        uint64_t dm = (uint16_t)_mm_movemask_epi8(
            _mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(9)), d));
        uint64_t lm = (uint16_t)_mm_movemask_epi8(
            _mm_cmpeq_epi8(_mm_min_epu8(l, _mm_set1_epi8(25)), l));
        uint64_t um = (uint16_t)_mm_movemask_epi8(
            _mm_cmpeq_epi8(_mm_min_epu8(u, _mm_set1_epi8(25)), u));
        uint64_t hm = (uint16_t)_mm_movemask_epi8(v);
        __m128i q1 = _mm_cmpeq_epi8(v, _mm_set1_epi8('\''));
        __m128i dot = _mm_cmpeq_epi8(v, _mm_set1_epi8('.'));
        __m128i dash = _mm_cmpeq_epi8(v, _mm_set1_epi8('-'));
        __m128i us = _mm_cmpeq_epi8(v, _mm_set1_epi8('_'));
        __m128i dollar = _mm_cmpeq_epi8(v, _mm_set1_epi8('$'));
        __m128i bang = _mm_cmpeq_epi8(v, _mm_set1_epi8('!'));
        uint64_t jm = (uint16_t)_mm_movemask_epi8(
            _mm_or_si128(_mm_or_si128(q1, dot), _mm_or_si128(dash, us)));
        uint64_t sm = (uint16_t)_mm_movemask_epi8(_mm_or_si128(dollar, bang));
        m->tok |= (dm | lm | hm) << (16 * q);
        m->digit |= dm << (16 * q);
        m->letter |= lm << (16 * q);
        m->upper |= um << (16 * q);
        m->join |= jm << (16 * q);
        m->solo |= sm << (16 * q);
    }
#else
    for (q = 0; q < 64; q++) {
        uint8_t k = CLS[p[q]];
        uint64_t bit = 1ull << q;
        if (k & C_TOK) m->tok |= bit;
        if (k & C_DIGIT) m->digit |= bit;
        if (k & C_LETTER) m->letter |= bit;
        if (k & C_UPPER) m->upper |= bit;
        if (k & C_JOIN) m->join |= bit;
        if (k & C_SOLO) m->solo |= bit;
    }
#endif
}

/* Bits set in x.  Without -mpopcnt (wheels target baseline x86-64),
 * __builtin_popcountll is a call into libgcc; this is a dozen inline
 * instructions. */
ATLAS_INLINE unsigned popcount64(uint64_t x) {
#if defined(__POPCNT__)
    return (unsigned)__builtin_popcountll(x);
#else
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Full;
    return (unsigned)((x * 0x0101010101010101ull) >> 56);
#endif
}

ATLAS_INLINE uint64_t low_bits(size_t k) { return k >= 64 ? ~0ull : (1ull << k) - 1; }

/* One token p[a:a + tl] of a run, alone: #long past MAX_TOKEN_LEN bytes,
 * else its shape when ``digit`` (a digit in a token of over four bytes),
 * else the folded word, whose hash goes to *word_h (0 for the others). */
ATLAS_INLINE atlas_feat *emit_unigram(atlas_feat *out, const uint8_t *p, const char *s, size_t n,
                                      size_t a, size_t tl, int digit, uint32_t seed,
                                      const char *prefix, int shift, const uint16_t *pf,
                                      uint32_t *word_h) {
    *word_h = 0;
    if (UNLIKELY(tl > MAX_TOKEN_LEN))
        return emit(out, hname(seed, (const uint8_t *)LONG_TOKEN, 5, 0, 5), shift, pf, prefix,
                    LONG_TOKEN, 5, 0);
    if (digit) {
        const char *shape = SHAPES[tl < 13 ? tl - 5 : 8];
        size_t sl = strlen(shape);
        return emit(out, hname(seed, (const uint8_t *)shape, sl, 0, sl), shift, pf, prefix, shape,
                    sl, 0);
    }
    *word_h = hname(seed, p + a, tl, 1, n - a);
    return emit(out, *word_h, shift, pf, prefix, s + a, tl, 1);
}

/* emit_unigram and, for a word with prefix2, its bigram with the word
 * before, counted in *count (the caller counts the token itself). */
ATLAS_INLINE atlas_feat *emit_token(atlas_feat *out, const uint8_t *p, const char *s, size_t n,
                                    size_t a, size_t tl, int digit, uint32_t seed, uint32_t seed2,
                                    const char *prefix, const char *prefix2, int shift,
                                    const uint16_t *pf, uint32_t *prev_h, long *prev_start,
                                    size_t *count) {
    uint32_t h;
    out = emit_unigram(out, p, s, n, a, tl, digit, seed, prefix, shift, pf, &h);
    if (tl > MAX_TOKEN_LEN || digit) return out;
    if (prefix2 && *prev_start >= 0) {
        out = emit(out, hpair(seed2, *prev_h, h), shift, pf, prefix2, s + *prev_start,
                   a + tl - (size_t)*prev_start, 1);
        (*count)++;
    }
    *prev_h = h;
    *prev_start = (long)a;
    return out;
}

/* ------------------------------------------------------------------------
 * CJK text (feature version 6)
 *
 * Chinese and Japanese put no spaces between words, and Korean spam often
 * leaves them out, so a run of their characters is one "word" of dozens of
 * bytes: before version 6 it became #long, and the model learnt nothing
 * from CJK mail.  Now a run holding a CJK character is cut into segments:
 * each stretch of CJK characters gives its overlapping character bigrams
 * (a single character: itself), the usual indexing of CJK text for search
 * and for Bayesian filters; CJK punctuation (U+3000-303F, the full-width
 * ASCII punctuation) separates; any other stretch is a token under the
 * usual rules.  Runs without a CJK character are tokenised as before.
 *
 * 41 SpamAssassin train spam hold CJK text, and 1 ham.  Nested CV on the
 * train files (tools/nested_cv.py, 4 repetitions), ham FP / spam recall:
 * SpamAssassin 14 FP, 97.17 % (version 5) -> 15 FP, 97.29 %; CSDMC2010
 * 0 FP, 97.37 % -> 0 FP, 97.45 %.  The false positives are the same
 * newsletters either way.
 * ------------------------------------------------------------------------ */

enum { CP_OTHER = 0, CP_CJK = 1, CP_SEP = 2 };

/* The code point of the UTF-8 sequence at p (at most ``n`` bytes) and its
 * length in *len; an invalid or truncated sequence is one byte, U+FFFD. */
ATLAS_INLINE uint32_t utf8_at(const uint8_t *p, size_t n, size_t *len) {
    uint8_t c = p[0];
    if (c < 0x80) { *len = 1; return c; }
    if (c >= 0xC2 && c < 0xE0 && n >= 2 && (p[1] & 0xC0) == 0x80) {
        *len = 2;
        return ((uint32_t)(c & 0x1F) << 6) | (p[1] & 0x3F);
    }
    if (c >= 0xE0 && c < 0xF0 && n >= 3 && (p[1] & 0xC0) == 0x80 && (p[2] & 0xC0) == 0x80) {
        uint32_t cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
        if (cp >= 0x800) { *len = 3; return cp; }
    }
    if (c >= 0xF0 && c < 0xF5 && n >= 4 && (p[1] & 0xC0) == 0x80 && (p[2] & 0xC0) == 0x80 &&
        (p[3] & 0xC0) == 0x80) {
        *len = 4;
        return ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(p[1] & 0x3F) << 12) |
               ((uint32_t)(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
    }
    *len = 1;
    return 0xFFFD;
}

/* Kana, CJK ideographs (extension A, unified, compatibility), Hangul
 * syllables and half-width katakana are CJK characters; CJK symbols and
 * punctuation and the full-width ASCII punctuation separate. */
ATLAS_INLINE int cjk_class(uint32_t cp) {
    if (cp < 0x3000) return CP_OTHER;
    if (cp <= 0x303F) return CP_SEP;
    if (cp <= 0x30FF) return cp >= 0x3040 ? CP_CJK : CP_OTHER;
    if (cp >= 0x3400 && cp <= 0x4DBF) return CP_CJK;
    if (cp >= 0x4E00 && cp <= 0x9FFF) return CP_CJK;
    if (cp >= 0xAC00 && cp <= 0xD7AF) return CP_CJK;
    if (cp >= 0xF900 && cp <= 0xFAFF) return CP_CJK;
    if (cp >= 0xFF01 && cp <= 0xFF65)
        return ((cp >= 0xFF10 && cp <= 0xFF19) || (cp >= 0xFF21 && cp <= 0xFF3A) ||
                (cp >= 0xFF41 && cp <= 0xFF5A)) ? CP_OTHER : CP_SEP;
    if (cp >= 0xFF66 && cp <= 0xFF9F) return CP_CJK;
    return CP_OTHER;
}

/* Does p[:n] hold a CJK character?  Every one of them is three bytes with
 * a lead byte E3..EF, so other text is ruled out by a byte test. */
static int has_cjk(const uint8_t *p, size_t n) {
    size_t i, len;
    for (i = 0; i < n; i++) {
        if (p[i] >= 0xE3 && p[i] <= 0xEF && cjk_class(utf8_at(p + i, n - i, &len)) == CP_CJK)
            return 1;
    }
    return 0;
}

/* The token loop's state, for cjk_run. */
typedef struct {
    const uint8_t *p;
    const char *s;
    size_t n;
    uint32_t seed, seed2;
    const char *prefix, *prefix2;
    int shift;
    const uint16_t *pf;
    atlas_feat *out;
    size_t count, max_tokens;
    uint32_t prev_h;
    long prev_start;
} tok_state;

#define CJK_COUNT()                                                          \
    do {                                                                     \
        if (++t->count >= t->max_tokens) return 1;                           \
    } while (0)

/* The features of the run p[tstart:end], which holds a CJK character:
 * each stretch of CJK characters gives its character bigrams (one
 * character: itself), separators separate, and each other stretch, its
 * joiners at either end dropped, is a token as in atlas_tokens.  No word
 * bigram spans CJK text or a separator.  1 when the token limit is
 * reached.  Out of line: it is rare, and the token loop keeps its
 * registers. */
static ATLAS_NOINLINE int cjk_run(tok_state *t, size_t tstart, size_t end) {
    const uint8_t *p = t->p;
    const char *s = t->s;
    const size_t n = t->n;
    size_t q = tstart, other = tstart, len, a, e;
    long c1 = -1;
    size_t c1len = 0;
    int single = 0, k;
    while (q <= end) {
        if (q == end) {
            k = CP_SEP; /* flushes the last stretch */
            len = 1;
        } else {
            k = cjk_class(utf8_at(p + q, end - q, &len));
        }
        if (k != CP_CJK) {
            /* Any other character ends a CJK stretch; a lone character is a
             * token.  (A pending stretch and a pending other stretch never
             * coexist.) */
            if (c1 >= 0 && single) {
                t->out = emit(t->out, hname(t->seed, p + c1, c1len, 0, n - (size_t)c1), t->shift,
                              t->pf, t->prefix, s + c1, c1len, 0);
                CJK_COUNT();
            }
            c1 = -1;
            single = 0;
            if (k == CP_OTHER) {
                q += len;
                continue;
            }
        }
        /* A CJK character or a separator ends the other stretch. */
        a = other;
        e = q;
        while (a < e && (CLS[p[a]] & C_JOIN)) a++;
        while (e > a && (CLS[p[e - 1]] & C_JOIN)) e--;
        if (e > a) {
            size_t r;
            int digit = 0;
            if (e - a > 4)
                for (r = a; r < e; r++) digit |= (CLS[p[r]] & C_DIGIT) != 0;
            t->out = emit_token(t->out, p, s, n, a, e - a, digit, t->seed, t->seed2, t->prefix,
                                t->prefix2, t->shift, t->pf, &t->prev_h, &t->prev_start,
                                &t->count);
            CJK_COUNT();
        }
        if (k == CP_CJK) {
            if (c1 >= 0) {
                size_t bl = q + len - (size_t)c1;
                t->out = emit(t->out, hname(t->seed, p + c1, bl, 0, n - (size_t)c1), t->shift,
                              t->pf, t->prefix, s + c1, bl, 0);
                single = 0;
                CJK_COUNT();
            } else {
                single = 1;
            }
            c1 = (long)q;
            c1len = len;
        }
        /* No word bigram across CJK text or a separator. */
        if (q < end) t->prev_start = -1;
        other = q + len;
        q += len;
    }
    return 0;
}

#undef CJK_COUNT

/* One opening token (see atlas_open): the name emit_token or the solo
 * branch gives the same bytes, under the opening's seed. */
ATLAS_INLINE atlas_feat *emit_open(atlas_feat *ob, const char *oprefix, uint32_t oseed,
                                   const uint8_t *p, const char *s, size_t n, size_t a,
                                   size_t tl, int digit, int solo, int shift,
                                   const uint16_t *pf) {
    uint32_t h;
    if (solo)
        return emit(ob, hname(oseed, p + a, 1, 0, n - a), shift, pf, oprefix, s + a, 1, 0);
    return emit_unigram(ob, p, s, n, a, tl, digit, oseed, oprefix, shift, pf, &h);
}

/* atlas_tokens, and with ``o`` the opening's tokens in the same pass; with
 * o == NULL (a constant where it is inlined) the opening code drops out. */
ATLAS_INLINE long tokens_impl(atlas_feats *f, const char *prefix, const char *prefix2,
                              const char *s, size_t n, size_t max_tokens, size_t *upper,
                              size_t *letters, atlas_open *o) {
    /* Token boundaries come from bit masks of 64-byte blocks: a run is its
     * token bytes plus each joiner with a token byte on both sides, and the
     * ends of the runs and the solo bytes are visited in order with
     * count-trailing-zeros (a run's start is the last start bit before its
     * end).  No branch per byte, so no misprediction at
     * every token's end; each token is then hashed a word at a time (see
     * hname), and a bigram from its two tokens' hashes. */
    const uint8_t *p = (const uint8_t *)s;
    uint32_t seed = atlas_prefix_seed(prefix);
    uint32_t seed2 = prefix2 ? atlas_prefix_seed(prefix2) : 0;
    uint32_t prev_h = 0;
    size_t count = 0, up = 0, let = 0, nb = (n + 63) / 64, k, base;
    size_t tstart = 0, carry_start = 0, end, tlen;
    long prev_start = -1, carry_high = -1, last_high;
    int cjk, hi_block;
    uint64_t cur_high;
    block_masks cur, nxt, none;
    uint64_t prev_tok = 0, prev_run = 0, prev_digit = 0;
    /* Worst case: every byte a token plus a bigram each. */
    size_t need = 2 * (n < max_tokens ? n : max_tokens) + 2;
    atlas_feat *out;
    const uint16_t *pf = f->prefetch;
    const int shift = f->shift;
    /* The opening's tokens, appended after the text's at the end. */
    atlas_feat obuf[ATLAS_OPEN_MAX];
    atlas_feat *ob = obuf;
    size_t olimit = 0, omax = 0, reached = n;
    uint32_t oseed = 0;
    if (o) {
        o->count = 0;
        o->fallback = 0;
        olimit = o->limit;
        omax = o->max < ATLAS_OPEN_MAX ? o->max : ATLAS_OPEN_MAX;
        oseed = atlas_prefix_seed(o->prefix);
        need += omax;
        if (olimit > n) o->fallback = 1;
    }
    if (atlas_feats_reserve(f, need) < 0) return -1;
    out = f->items + f->n;
    if (max_tokens == 0 || n == 0) goto done;
    memset(&none, 0, sizeof none);
    classify_block(p, n, &cur);
    for (k = 0; k < nb; k++) {
        uint64_t run, starts, ends, ev, next_run0;
        base = 64 * k;
        if (k + 1 < nb)
            classify_block(p + base + 64, n - base - 64, &nxt);
        else
            nxt = none;
        run = cur.tok | (cur.join & ((cur.tok << 1) | (prev_tok >> 63)) &
                         ((cur.tok >> 1) | (nxt.tok << 63)));
        /* Is the next block's first byte in a run (a token byte, or a joiner
         * between this block's last byte and its second)? */
        next_run0 = (nxt.tok & 1) | (nxt.join & (cur.tok >> 63) & (nxt.tok >> 1) & 1);
        starts = run & ~((run << 1) | (prev_run >> 63));
        ends = run & ~((run >> 1) | (next_run0 << 63));
        ev = ends | cur.solo; /* a token is visited once, at its end */
        /* A byte >= 128 in this block, or in the run carried into it. */
        cur_high = high_bytes(&cur);
        hi_block = cur_high != 0 || carry_high >= (long)carry_start;
        while (ev) {
            unsigned b = (unsigned)__builtin_ctzll(ev);
            uint64_t bit = 1ull << b;
            size_t pos = base + b;
            ev &= ev - 1;
            if (cur.solo & bit) {
                out = emit(out, hname(seed, p + pos, 1, 0, n - pos), shift, pf, prefix, s + pos, 1,
                           0);
                if (o && pos < olimit && (size_t)(ob - obuf) < omax)
                    ob = emit_open(ob, o->prefix, oseed, p, s, n, pos, 1, 0, 1, shift, pf);
                prev_start = -1;
                if (++count >= max_tokens) {
                    reached = pos + 1;
                    up += (size_t)popcount64(cur.upper & low_bits(b + 1));
                    let += (size_t)popcount64(cur.letter & low_bits(b + 1));
                    goto done;
                }
                continue;
            }
            {
                /* Its start: the last run start at or before its end in
                 * this block, else the last one of an earlier block. */
                uint64_t sm = starts & low_bits(b + 1);
                tstart = sm ? base + 63 - (size_t)__builtin_clzll(sm) : carry_start;
            }
            end = pos + 1;
            tlen = end - tstart;
            /* Only a run holding a byte >= 128 can hold a CJK character:
             * in ASCII text this is one test of a flag per token. */
            cjk = 0;
            if (UNLIKELY(hi_block)) {
                /* The last such byte at or before the token's end. */
                uint64_t hm = cur_high & low_bits(b + 1);
                last_high = hm ? (long)(base + 63 - (size_t)__builtin_clzll(hm)) : carry_high;
                cjk = last_high >= (long)tstart && has_cjk(p + tstart, tlen);
            }
            if (UNLIKELY(cjk)) {
                if (o && tstart < olimit) o->fallback = 1;
                tok_state st = {p, s, n, seed, seed2, prefix, prefix2, shift, pf, out, count,
                                max_tokens, prev_h, prev_start};
                int full = cjk_run(&st, tstart, end);
                out = st.out;
                count = st.count;
                prev_h = st.prev_h;
                prev_start = st.prev_start;
                if (full) {
                    reached = 0; /* somewhere in the run: ask for the opening's own pass */
                    up += (size_t)popcount64(cur.upper & low_bits(b + 1));
                    let += (size_t)popcount64(cur.letter & low_bits(b + 1));
                    goto done;
                }
                continue;
            }
            {
                int digit = 0;
                if (tlen > 4 && tlen <= MAX_TOKEN_LEN) {
                    /* A token of at most 30 bytes lies in this block and the
                     * one before. */
                    if (tstart >= base)
                        digit = (cur.digit & low_bits(b + 1) & ~low_bits(tstart - base)) != 0;
                    else
                        digit = (cur.digit & low_bits(b + 1)) != 0 ||
                                (prev_digit & ~low_bits(tstart - (base - 64))) != 0;
                }
                out = emit_token(out, p, s, n, tstart, tlen, digit, seed, seed2, prefix, prefix2,
                                 shift, pf, &prev_h, &prev_start, &count);
                if (o && end <= olimit && (size_t)(ob - obuf) < omax)
                    ob = emit_open(ob, o->prefix, oseed, p, s, n, tstart, tlen, digit, 0, shift,
                                   pf);
            }
            if (++count >= max_tokens) {
                reached = end;
                up += (size_t)popcount64(cur.upper & low_bits(b + 1));
                let += (size_t)popcount64(cur.letter & low_bits(b + 1));
                goto done;
            }
        }
        if (starts) carry_start = base + 63 - (size_t)__builtin_clzll(starts);
        if (cur_high) carry_high = (long)(base + 63 - (size_t)__builtin_clzll(cur_high));
        up += (size_t)popcount64(cur.upper);
        let += (size_t)popcount64(cur.letter);
        prev_tok = cur.tok;
        prev_run = run;
        prev_digit = cur.digit;
        cur = nxt;
    }
done:
    if (o) {
        if (reached < olimit) o->fallback = 1;
        if (!o->fallback) {
            o->count = (size_t)(ob - obuf);
            memcpy(out, obuf, o->count * sizeof *obuf);
            out += o->count;
        }
    }
    f->n = (size_t)(out - f->items);
    *upper += up;
    *letters += let;
    return (long)count;
}

long atlas_tokens(atlas_feats *f, const char *prefix, const char *prefix2, const char *s,
                  size_t n, size_t max_tokens, size_t *upper, size_t *letters) {
    return tokens_impl(f, prefix, prefix2, s, n, max_tokens, upper, letters, NULL);
}

long atlas_tokens_open(atlas_feats *f, const char *prefix, const char *prefix2, const char *s,
                       size_t n, size_t max_tokens, size_t *upper, size_t *letters,
                       atlas_open *o) {
    return tokens_impl(f, prefix, prefix2, s, n, max_tokens, upper, letters, o);
}

/* ------------------------------------------------------------------------
 * URLs
 * ------------------------------------------------------------------------ */

int atlas_url_host(const char *u, size_t n, size_t *start, size_t *end) {
    const uint8_t *p = (const uint8_t *)u;
    size_t i = 0, j, s, e;
    /* strip() of leading/trailing whitespace */
    while (i < n && atlas_is_space(p[i])) i++;
    while (n > i && atlas_is_space(p[n - 1])) n--;
    /* optional scheme: [a-z][a-z0-9+.-]*: */
    if (i < n && ((p[i] | 32) >= 'a' && (p[i] | 32) <= 'z')) {
        j = i + 1;
        while (j < n && (((p[j] | 32) >= 'a' && (p[j] | 32) <= 'z') ||
                         (p[j] >= '0' && p[j] <= '9') || p[j] == '+' || p[j] == '.' ||
                         p[j] == '-'))
            j++;
        if (j < n && p[j] == ':') i = j + 1;
    }
    while (i < n && p[i] == '/') i++;
    /* optional userinfo: [^@/?#]*@ */
    j = i;
    while (j < n && p[j] != '@' && p[j] != '/' && p[j] != '?' && p[j] != '#') j++;
    if (j < n && p[j] == '@') i = j + 1;
    s = i;
    while (i < n && p[i] != '/' && p[i] != '?' && p[i] != '#' && p[i] != ':' && p[i] != '\\') i++;
    e = i;
    if (e == s) return 0;
    while (s < e && p[s] == '.') s++;
    while (e > s && p[e - 1] == '.') e--;
    if (e == s) return 0;
    *start = s;
    *end = e;
    return 1;
}

long atlas_url_path_tokens(atlas_feats *f, const char *prefix, const char *url, size_t n,
                           size_t max_tokens) {
    size_t hs, he, i, start, count = 0;
    const uint8_t *p = (const uint8_t *)url;
    uint32_t seed = atlas_prefix_seed(prefix);
    int digit;
    if (!atlas_url_host(url, n, &hs, &he)) return 0;
    i = he;
    if (atlas_feats_reserve(f, max_tokens) < 0) return -1;
    while (i < n && count < max_tokens) {
        uint8_t c = p[i];
        if (!((c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z'))) {
            i++;
            continue;
        }
        start = i;
        digit = 0;
        while (i < n && ((p[i] >= '0' && p[i] <= '9') || ((p[i] | 32) >= 'a' && (p[i] | 32) <= 'z'))) {
            if (p[i] <= '9') digit = 1;
            i++;
        }
        if (i - start > 20 || (digit && i - start > 3)) {
            put(f, hname(seed, (const uint8_t *)"#id", 3, 0, 3), prefix, "#id", 3, 0, 1.0f);
        } else {
            put(f, hname(seed, p + start, i - start, 1, n - start), prefix, url + start,
                i - start, 1, 1.0f);
        }
        count++;
    }
    return (long)count;
}

/* ------------------------------------------------------------------------
 * Received chain
 * ------------------------------------------------------------------------ */

/* Python's str.split() / \s whitespace, ASCII part. */
ATLAS_INLINE int py_space(uint8_t c) {
    return c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x1f);
}

ATLAS_INLINE int in_net(uint32_t a, uint32_t net, int bits) {
    uint32_t mask = bits ? 0xffffffffu << (32 - bits) : 0;
    return (a & mask) == net;
}

int atlas_ipv4_public(const unsigned char o[4]) {
    uint32_t a = ((uint32_t)o[0] << 24) | ((uint32_t)o[1] << 16) | ((uint32_t)o[2] << 8) | o[3];
    /* ipaddress (3.11): is_global = not in 100.64/10 and not is_private;
     * multicast 224/4 also skipped by enrich._public. */
    static const struct { uint32_t net; int bits; } blocked[] = {
        {0x00000000u, 8},  {0x0a000000u, 8},  {0x7f000000u, 8},  {0xa9fe0000u, 16},
        {0xac100000u, 12}, {0xc0000000u, 29}, {0xc00000aau, 31}, {0xc0000200u, 24},
        {0xc0a80000u, 16}, {0xc6120000u, 15}, {0xc6336400u, 24}, {0xcb007100u, 24},
        {0xf0000000u, 4},  {0xffffffffu, 32}, {0x64400000u, 10}, {0xe0000000u, 4},
    };
    size_t i;
    for (i = 0; i < sizeof(blocked) / sizeof(blocked[0]); i++)
        if (in_net(a, blocked[i].net, blocked[i].bits)) return 0;
    return 1;
}

/* End of the "from" clause: the first place where whitespace + "by" +
 * whitespace, or optional whitespace + ';', starts. */
static size_t clause_end(const uint8_t *p, size_t i, size_t n) {
    for (; i < n; i++) {
        if (p[i] == ';') return i;
        if (py_space(p[i])) {
            size_t q = i;
            while (q < n && py_space(p[q])) q++;
            if (q < n && p[q] == ';') return i;
            if (q + 2 < n && (p[q] | 32) == 'b' && (p[q + 1] | 32) == 'y' && py_space(p[q + 2]))
                return i;
            i = q - 1;
        }
    }
    return n;
}

int atlas_received_ipv4(const char *v, size_t n, char *out, size_t clause[2]) {
    const uint8_t *p = (const uint8_t *)v;
    size_t i = 0, s, e, k;
    int ipv6 = 0;
    while (i < n && py_space(p[i])) i++;
    if (i + 4 >= n || (p[i] | 32) != 'f' || (p[i + 1] | 32) != 'r' || (p[i + 2] | 32) != 'o' ||
        (p[i + 3] | 32) != 'm' || !py_space(p[i + 4]))
        goto check_ascii;
    i += 4;
    while (i < n && py_space(p[i])) i++;
    s = i;
    e = clause_end(p, s, n);
    for (k = s; k < e; k++)
        if (p[k] >= 128) return 2;
    for (k = s; k < e; k++) {
        unsigned int oct[4];
        unsigned char o[4];
        size_t q = k, part, len, w;
        int ok = 1, lead0 = 0;
        if (p[k] == '[') {
            size_t r = k + 1;
            while (r < e && p[r] != ']') {
                if (p[r] == ':') ipv6 = 1;
                r++;
            }
        }
        if (!(p[k] >= '0' && p[k] <= '9')) continue;
        if (k > s && ((p[k - 1] >= '0' && p[k - 1] <= '9') || p[k - 1] == '.')) continue;
        for (part = 0; part < 4; part++) {
            len = 0;
            oct[part] = 0;
            while (q < e && p[q] >= '0' && p[q] <= '9') {
                oct[part] = oct[part] * 10 + (p[q] - '0');
                q++;
                len++;
                if (len > 3) break;
            }
            if (len == 0 || len > 3) { ok = 0; break; }
            if (len > 1 && p[q - len] == '0') lead0 = 1;
            if (part < 3) {
                if (q < e && p[q] == '.') q++;
                else { ok = 0; break; }
            }
        }
        if (ok && q < e && ((p[q] >= '0' && p[q] <= '9') || p[q] == '.')) ok = 0;
        if (!ok) continue;
        /* A match: findall resumes after it. */
        if (oct[0] < 256 && oct[1] < 256 && oct[2] < 256 && oct[3] < 256 && !lead0) {
            for (w = 0; w < 4; w++) o[w] = (unsigned char)oct[w];
            if (atlas_ipv4_public(o)) {
                memcpy(out, v + k, q - k);
                out[q - k] = 0;
                return 1;
            }
        }
        k = q - 1;
    }
    if (!ipv6) return 0;
    clause[0] = s;
    clause[1] = e;
    return 3;
check_ascii:
    /* Not a "from" clause by ASCII rules; non-ASCII whitespace could still
     * make it one for Python. */
    for (k = 0; k < n; k++)
        if (p[k] >= 128) return 2;
    return 0;
}

/* ------------------------------------------------------------------------
 * How the origin hop names itself (enrich.origin_flags in C)
 * ------------------------------------------------------------------------ */

ATLAS_INLINE int has_ci(const uint8_t *p, size_t n, const char *lit) {
    size_t m = strlen(lit), i, j;
    if (m > n) return 0;
    for (i = 0; i + m <= n; i++) {
        for (j = 0; j < m; j++)
            if (atlas_lower(p[i + j]) != (uint8_t)lit[j]) break;
        if (j == m) return 1;
    }
    return 0;
}

ATLAS_INLINE int is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
ATLAS_INLINE int is_sep(uint8_t c) { return c == '-' || c == '.' || c == 'x' || c == 'X'; }
ATLAS_INLINE int is_label(uint8_t c) {
    return is_digit(c) || ((c | 32) >= 'a' && (c | 32) <= 'z') || c == '-';
}

/* \d{1,3}[-.x]\d{1,3}[-.x]\d{1,3}[-.x]\d{1,3}[^\]] at some position of q[:n]. */
static int dotted_quad_name(const uint8_t *q, size_t n) {
    size_t i, k, g, len;
    for (i = 0; i < n; i++) {
        if (!is_digit(q[i])) continue;
        k = i;
        for (g = 0; g < 3; g++) {
            len = 0;
            while (k < n && is_digit(q[k])) k++, len++;
            if (len < 1 || len > 3 || k >= n || !is_sep(q[k])) break;
            k++;
        }
        if (g < 3) continue;
        len = 0;
        while (k + len < n && is_digit(q[k + len])) len++;
        if (len >= 2) return 1;
        if (len == 1 && k + 1 < n && q[k + 1] != ']') return 1;
    }
    return 0;
}

int atlas_origin_naming(const char *v, size_t n, int *dynamic, int *no_rdns) {
    static const char *DYN[] = {"dsl", "dyn", "dial", "pool", "ppp", "cable", "dhcp", "client",
                                "host"};
    static const size_t DYN_LEN[] = {3, 3, 4, 4, 3, 5, 4, 6, 4};
    const uint8_t *p = (const uint8_t *)v;
    uint8_t names[1024], any = 0;
    size_t i, e, k, nn = 0, w;
    int rdns = 0;
    for (i = 0; i < n; i++) any |= p[i]; /* vectorises; an early exit would not */
    if (any >= 128) return 2;
    while (n > 0 && py_space(p[n - 1])) n--;
    i = 0;
    while (i < n && py_space(p[i])) i++;
    /* The clause runs to the first ';' or whitespace + "by" + whitespace. */
    for (e = i; e < n; e++) {
        if (p[e] == ';') break;
        if (py_space(p[e])) {
            k = e;
            while (k < n && py_space(p[k])) k++;
            if (k + 2 < n && (p[k] | 32) == 'b' && (p[k + 1] | 32) == 'y' && py_space(p[k + 2]))
                break;
            e = k - 1;
        }
    }
    if (e - i > sizeof(names)) return 2;
    /* Host names only, lower-cased: bracketed literals ([1.2.3.4]) become a
     * space. */
    for (k = i; k < e; k++) {
        if (p[k] == '[') {
            size_t r = k + 1;
            while (r < e && p[r] != ']') r++;
            if (r < e) {
                names[nn++] = ' ';
                k = r;
                continue;
            }
        }
        names[nn++] = atlas_lower(p[k]);
    }
    /* One pass for the access-network words, keyed on their first letter. */
    *dynamic = 0;
    for (k = 0; k < nn && !*dynamic; k++) {
        uint8_t c = names[k];
        if (c != 'd' && c != 'p' && c != 'c' && c != 'h') continue;
        for (w = 0; w < sizeof(DYN) / sizeof(DYN[0]); w++) {
            size_t m = DYN_LEN[w];
            if ((uint8_t)DYN[w][0] == c && k + m <= nn && memcmp(names + k, DYN[w], m) == 0) {
                *dynamic = 1;
                break;
            }
        }
    }
    if (!*dynamic) *dynamic = dotted_quad_name(names, nn);
    /* A reverse name: "(" [ws] label-chars "." [a-z0-9.-] */
    for (k = i; k < e && !rdns; k++) {
        size_t q = k + 1, len = 0;
        if (p[k] != '(') continue;
        while (q < e && py_space(p[q])) q++;
        while (q < e && is_label(p[q])) q++, len++;
        if (len && q + 1 < e && p[q] == '.' && (is_label(p[q + 1]) || p[q + 1] == '.')) rdns = 1;
    }
    *no_rdns = !rdns || has_ci(p + i, e - i, "unknown");
    return 0;
}

/* ------------------------------------------------------------------------
 * Squeezed text for rule scanning
 * ------------------------------------------------------------------------ */

/* Each byte is stored unconditionally and the output only advances past a
 * whitespace byte that follows a non-whitespace one: no data-dependent
 * branch per byte (a branch per word boundary mispredicts about once a
 * word, which tripled the cost on ordinary prose).  With SSE2, a block of
 * 16 bytes holding no run of two whitespace bytes (most blocks of prose) is
 * copied whole, its whitespace replaced by spaces, in a few instructions;
 * other blocks take the byte loop. */
size_t atlas_squeeze(const char *s, size_t n, char *dst, size_t want) {
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0, out = 0, stop;
    unsigned prev_ws = 1, ws;
#ifdef __SSE2__
    {
        const __m128i space = _mm_set1_epi8(' '), tab = _mm_set1_epi8('\t');
        const __m128i four = _mm_set1_epi8(4);
        while (i + 16 <= n && out + 16 <= want) {
            __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
            __m128i t = _mm_sub_epi8(v, tab); /* \t..\r -> 0..4 */
            __m128i w = _mm_or_si128(_mm_cmpeq_epi8(v, space),
                                     _mm_cmpeq_epi8(_mm_min_epu8(t, four), t));
            unsigned mask = (unsigned)_mm_movemask_epi8(w);
            if (mask & ((mask << 1) | prev_ws)) {
                /* A whitespace run starts or continues here: by bytes. */
                for (stop = i + 16; i < stop; i++) {
                    uint8_t c = p[i];
                    ws = IS_WS[c];
                    dst[out] = (char)SQUEEZED[c];
                    out += 1u - (ws & prev_ws);
                    prev_ws = ws;
                }
                continue;
            }
            _mm_storeu_si128((__m128i *)(dst + out),
                             _mm_or_si128(_mm_andnot_si128(w, v), _mm_and_si128(w, space)));
            out += 16;
            i += 16;
            prev_ws = mask >> 15;
        }
    }
#endif
    for (; i < n && out < want; i++) {
        uint8_t c = p[i];
        ws = IS_WS[c];
        dst[out] = (char)SQUEEZED[c]; /* a table load, not a branch */
        out += 1u - (ws & prev_ws);
        prev_ws = ws;
    }
    if (out && prev_ws && i == n) out--; /* no space at the end */
    return out;
}

/* ------------------------------------------------------------------------
 * Case-insensitive substring test
 * ------------------------------------------------------------------------ */

#define ATLAS_CI_BLOCK 4096

ATLAS_INLINE int eq_ci(const char *hay, const char *needle, size_t m) {
    size_t k;
    for (k = 0; k < m; k++)
        if (atlas_lower((uint8_t)hay[k]) != (uint8_t)needle[k]) return 0;
    return 1;
}

#ifdef __SSE2__
/* 'A'..'Z' -> 'a'..'z' in 16 bytes. */
ATLAS_INLINE __m128i fold16(__m128i v) {
    __m128i u = _mm_sub_epi8(v, _mm_set1_epi8('A'));
    __m128i up = _mm_cmpeq_epi8(_mm_min_epu8(u, _mm_set1_epi8(25)), u);
    return _mm_or_si128(v, _mm_and_si128(up, _mm_set1_epi8(0x20)));
}
#endif

/* With SSE2, 16 offsets at a time are tested for the needle's first two
 * bytes (the haystack case-folded in registers) and only those candidates
 * compared in full: the sender-domain-in-Received check runs over every
 * Received header of every message.  Otherwise: lower-case a block of the
 * haystack (a loop gcc vectorises), then let glibc's memmem search it;
 * blocks overlap by m - 1 bytes so no match is split. */
int atlas_contains_ci(const char *hay, size_t n, const char *needle, size_t m) {
    uint8_t buf[ATLAS_CI_BLOCK];
    size_t pos = 0, len, i;
    if (m == 0) return 1;
#ifdef __SSE2__
    if (m >= 2 && n >= m) {
        __m128i c0 = _mm_set1_epi8(needle[0]), c1 = _mm_set1_epi8(needle[1]);
        for (i = 0; i + 17 <= n; i += 16) {
            __m128i a = fold16(_mm_loadu_si128((const __m128i *)(hay + i)));
            __m128i b = fold16(_mm_loadu_si128((const __m128i *)(hay + i + 1)));
            unsigned mask = (unsigned)_mm_movemask_epi8(
                _mm_and_si128(_mm_cmpeq_epi8(a, c0), _mm_cmpeq_epi8(b, c1)));
            while (mask) {
                size_t at = i + (size_t)__builtin_ctz(mask);
                if (at + m <= n && eq_ci(hay + at + 2, needle + 2, m - 2)) return 1;
                mask &= mask - 1;
            }
        }
        for (; i + m <= n; i++)
            if (eq_ci(hay + i, needle, m)) return 1;
        return 0;
    }
#endif
    if (m > ATLAS_CI_BLOCK / 2 || n < m) {
        if (n < m) return 0;
        for (pos = 0; pos + m <= n; pos++) /* very long needles: rare */
            if (eq_ci(hay + pos, needle, m)) return 1;
        return 0;
    }
    while (pos + m <= n) {
        len = n - pos < ATLAS_CI_BLOCK ? n - pos : ATLAS_CI_BLOCK;
        for (i = 0; i < len; i++) {
            uint8_t c = (uint8_t)hay[pos + i];
            buf[i] = c + (uint8_t)(((uint8_t)(c - 'A') < 26u) << 5);
        }
        if (memmem(buf, len, needle, m)) return 1;
        if (pos + len >= n) break;
        pos += len - (m - 1);
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * Cache-key digests
 *
 * XXH3 from the vendored xxHash header (csrc/third_party/xxhash), compiled
 * into this file only: a 128-bit hash at several GB/s with SSE2, which is
 * the wheels' baseline.
 * ------------------------------------------------------------------------ */

#define XXH_INLINE_ALL
#define XXH_STATIC_LINKING_ONLY
#include "third_party/xxhash/xxhash.h"

void atlas_digest128(const void *p, size_t n, uint64_t seed, uint64_t out[2]) {
    XXH128_hash_t h = XXH3_128bits_withSeed(p, n, (XXH64_hash_t)seed);
    out[0] = h.high64;
    out[1] = h.low64;
}

/* The origin IP in each Received value: libc's memmem (this file already
 * asks for it with _GNU_SOURCE); unlike str.__contains__ it needs no
 * Python call per Received value. */
int atlas_contains(const char *hay, size_t n, const char *needle, size_t m) {
    return memmem(hay, n, needle, m) != NULL;
}

/* ------------------------------------------------------------------------
 * Display name against the address
 * ------------------------------------------------------------------------ */

/* The name's words are compared lower-cased against the address as it is
 * (Python lowers the name only), so the address is not folded. */
int atlas_name_mismatch(const char *name, size_t n, const char *addr, size_t an) {
    const uint8_t *p = (const uint8_t *)name, *a = (const uint8_t *)addr;
    size_t k = 0, t, m, i, j;
    int any_word = 0;
    while (k < n) {
        if (!((p[k] | 32) >= 'a' && (p[k] | 32) <= 'z')) {
            k++;
            continue;
        }
        t = k;
        while (k < n && (p[k] | 32) >= 'a' && (p[k] | 32) <= 'z') k++;
        m = k - t;
        if (m < 3) continue;
        any_word = 1;
        for (i = 0; i + m <= an; i++) {
            for (j = 0; j < m; j++)
                if ((uint8_t)(p[t + j] | 32) != a[i + j]) break;
            if (j == m) return 0; /* a word of the name is in the address */
        }
    }
    return any_word;
}
