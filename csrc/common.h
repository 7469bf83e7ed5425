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

#if defined(__GNUC__) || defined(__clang__)
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define ATLAS_INLINE static inline __attribute__((always_inline))
#else
#define LIKELY(x) (x)
#define UNLIKELY(x) (x)
#define ATLAS_INLINE static inline
#endif

#define ATLAS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define ATLAS_MAX(a, b) ((a) > (b) ? (a) : (b))

/* ASCII-only case folding: header names, MIME tokens and URL schemes are
 * ASCII by definition, and locale-aware tolower() would be slower and wrong
 * for 8-bit bytes. */
ATLAS_INLINE uint8_t atlas_lower(uint8_t c) {
    return (uint8_t)((c >= 'A' && c <= 'Z') ? c + 32 : c);
}

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
