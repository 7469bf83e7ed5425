/* common.h: macros shared by every csrc/ module of atlas_fast.
 *
 * Plain C only: nothing here may include Python.h, so that the scanners can be
 * tested and reused without the interpreter and run with the GIL released.
 */
#ifndef ATLAS_COMMON_H
#define ATLAS_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define ATLAS_INLINE static inline __attribute__((always_inline))
#define ATLAS_NOINLINE __attribute__((noinline))
#else
#define LIKELY(x) (x)
#define UNLIKELY(x) (x)
#define ATLAS_INLINE static inline
#define ATLAS_NOINLINE
#endif

#define ATLAS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define ATLAS_MAX(a, b) ((a) > (b) ? (a) : (b))

/* ASCII-only case folding: header names, MIME tokens and URL schemes are
 * ASCII by definition, and locale-aware tolower() would be slower and wrong
 * for 8-bit bytes. */
ATLAS_INLINE uint8_t atlas_lower(uint8_t c) {
    return (uint8_t)((c >= 'A' && c <= 'Z') ? c + 32 : c);
}

/* 'A'..'Z' -> 'a'..'z' in each byte of w; every other byte unchanged:
 * ASCII case folding of 8 bytes at once (SWAR). */
ATLAS_INLINE uint64_t atlas_fold8(uint64_t w) {
    uint64_t low7 = w & 0x7F7F7F7F7F7F7F7Full;
    uint64_t ge_a = low7 + 0x3F3F3F3F3F3F3F3Full; /* top bit: byte >= 'A' */
    uint64_t gt_z = low7 + 0x2525252525252525ull; /* top bit: byte > 'Z' */
    uint64_t up = ge_a & ~gt_z & ~w & 0x8080808080808080ull;
    return w | (up >> 2);
}

/* First occurrence of a 2-4 byte literal in s[0:n] (memmem's answer).  With
 * SSE2, 16 positions are tested at once by comparing m shifted loads with
 * the literal's bytes; glibc's memmem has no vector path for short needles
 * and was a tenth of the parser's time finding "://" and "www." in text. */
ATLAS_INLINE const uint8_t *atlas_find_lit(const uint8_t *s, size_t n, const char *lit,
                                           size_t m) {
    size_t i = 0, k;
    if (m == 0 || m > 4 || n < m) return m == 0 ? s : NULL;
#ifdef __SSE2__
    {
        __m128i c0 = _mm_set1_epi8(lit[0]), c1 = _mm_set1_epi8(lit[1]);
        __m128i c2 = _mm_set1_epi8(m > 2 ? lit[2] : 0), c3 = _mm_set1_epi8(m > 3 ? lit[3] : 0);
        for (; i + 16 + m - 1 <= n; i += 16) {
            __m128i v = _mm_and_si128(
                _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(s + i)), c0),
                _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(s + i + 1)), c1));
            if (m > 2)
                v = _mm_and_si128(v, _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(s + i + 2)), c2));
            if (m > 3)
                v = _mm_and_si128(v, _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(s + i + 3)), c3));
            unsigned mask = (unsigned)_mm_movemask_epi8(v);
            if (mask) return s + i + (size_t)__builtin_ctz(mask);
        }
    }
#endif
    for (; i + m <= n; i++) {
        for (k = 0; k < m && s[i + k] == (uint8_t)lit[k]; k++) {}
        if (k == m) return s + i;
    }
    return NULL;
}

/* The initialiser of a 256-entry byte table whose entry c is F(c), F a
 * macro: a constant table, built by the compiler, for one load per byte in
 * a scanning loop instead of a chain of comparisons. */
#define ATLAS_T16_(F, c) F(c), F(c + 1), F(c + 2), F(c + 3), F(c + 4), F(c + 5), F(c + 6), \
    F(c + 7), F(c + 8), F(c + 9), F(c + 10), F(c + 11), F(c + 12), F(c + 13), F(c + 14), F(c + 15)
#define ATLAS_TABLE256(F)                                                                    \
    {ATLAS_T16_(F, 0),   ATLAS_T16_(F, 16),  ATLAS_T16_(F, 32),  ATLAS_T16_(F, 48),           \
     ATLAS_T16_(F, 64),  ATLAS_T16_(F, 80),  ATLAS_T16_(F, 96),  ATLAS_T16_(F, 112),          \
     ATLAS_T16_(F, 128), ATLAS_T16_(F, 144), ATLAS_T16_(F, 160), ATLAS_T16_(F, 176),          \
     ATLAS_T16_(F, 192), ATLAS_T16_(F, 208), ATLAS_T16_(F, 224), ATLAS_T16_(F, 240)}

ATLAS_INLINE int atlas_is_wsp(uint8_t c) { return c == ' ' || c == '\t'; }

ATLAS_INLINE int atlas_is_space(uint8_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

ATLAS_INLINE int atlas_hexval(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = atlas_lower(c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* ------------------------------------------------------------------------
 * Growable byte buffer.  Reused across messages of a chunk so that the hot
 * loop does not call malloc per message.
 * ------------------------------------------------------------------------ */
typedef struct {
    uint8_t *p;
    size_t n;
    size_t cap;
} atlas_buf;

/* Make room for `extra` more bytes; -1 when out of memory. */
int atlas_buf_reserve(atlas_buf *b, size_t extra);
void atlas_buf_free(atlas_buf *b);

ATLAS_INLINE int atlas_buf_put(atlas_buf *b, const void *src, size_t n) {
    if (UNLIKELY(b->n + n > b->cap) && atlas_buf_reserve(b, n) < 0) return -1;
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
    return 0;
}

ATLAS_INLINE int atlas_buf_putc(atlas_buf *b, uint8_t c) {
    if (UNLIKELY(b->n + 1 > b->cap) && atlas_buf_reserve(b, 1) < 0) return -1;
    b->p[b->n++] = c;
    return 0;
}

#endif /* ATLAS_COMMON_H */
