/* atlas_wire.h: a reader for the msgpack subset that msgspec writes for
 * atlas_fast's record batches (see atlas_fast/records.py), and a strict UTF-8
 * check.
 *
 * The writer process binds record fields straight from the encoded batch into
 * SQLite: no Python object per row or per field.  Header-only because only
 * atlas_fast/_sqlwriter.pyx uses it.  Plain C, no Python API.
 */
#ifndef ATLAS_WIRE_H
#define ATLAS_WIRE_H

#include "common.h"

/* ------------------------------------------------------------------------ */
/* Values                                                                   */
/* ------------------------------------------------------------------------ */

enum {
    ATLAS_WIRE_NIL = 0,
    ATLAS_WIRE_INT,       /* fits in int64_t: v->i */
    ATLAS_WIRE_FLOAT,     /* float32 or float64: v->d */
    ATLAS_WIRE_STR,       /* v->s, v->n bytes (not checked for UTF-8 here) */
    ATLAS_WIRE_ARRAY,     /* header only: v->n elements follow */
    ATLAS_WIRE_MAP,       /* header only: v->n key/value pairs follow */
    ATLAS_WIRE_BOOL,      /* v->i is 0 or 1 */
    ATLAS_WIRE_OTHER,     /* bin, ext, a uint64 above INT64_MAX, unused codes */
    ATLAS_WIRE_TRUNCATED  /* the buffer ends inside the value */
};

typedef struct {
    const uint8_t *p;   /* next byte to read */
    const uint8_t *end;
} atlas_wire;

typedef struct {
    int type;
    uint32_t n;
    int64_t i;
    double d;
    const char *s;
} atlas_wire_value;

ATLAS_INLINE uint16_t atlas_be16(const uint8_t *p) {
    return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}

ATLAS_INLINE uint32_t atlas_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

ATLAS_INLINE uint64_t atlas_be64(const uint8_t *p) {
    return (uint64_t)atlas_be32(p) << 32 | atlas_be32(p + 4);
}

/* Reads the next value (for arrays and maps: only their header) and moves
 * past it.  Returns v->type; on ATLAS_WIRE_TRUNCATED the cursor is left
 * where it was. */
static inline int atlas_wire_next(atlas_wire *w, atlas_wire_value *v) {
    const uint8_t *p = w->p;
    size_t avail = (size_t)(w->end - p);
    size_t need = 1;   /* bytes of the header, then of the payload */
    uint8_t c;
    if (UNLIKELY(avail < 1)) return v->type = ATLAS_WIRE_TRUNCATED;
    c = p[0];
    if (c <= 0x7f) { v->i = c; v->type = ATLAS_WIRE_INT; }
    else if (c >= 0xe0) { v->i = (int8_t)c; v->type = ATLAS_WIRE_INT; }
    else if ((c & 0xe0) == 0xa0) {
        v->n = c & 0x1f; v->s = (const char *)p + 1; v->type = ATLAS_WIRE_STR; need += v->n;
    }
    else if ((c & 0xf0) == 0x90) { v->n = c & 0x0f; v->type = ATLAS_WIRE_ARRAY; }
    else if ((c & 0xf0) == 0x80) { v->n = c & 0x0f; v->type = ATLAS_WIRE_MAP; }
    else {
        switch (c) {
        case 0xc0: v->type = ATLAS_WIRE_NIL; break;
        case 0xc2: case 0xc3: v->i = c & 1; v->type = ATLAS_WIRE_BOOL; break;
        /* Header bytes, by the width of what follows the type byte:
         * uint, int, float, str length, array/map length. */
        case 0xcc: case 0xd0: case 0xd9: need = 2; break;
        case 0xcd: case 0xd1: case 0xda: case 0xdc: case 0xde: need = 3; break;
        case 0xce: case 0xd2: case 0xca: case 0xdb: case 0xdd: case 0xdf: need = 5; break;
        case 0xcf: case 0xd3: case 0xcb: need = 9; break;
        default: v->type = ATLAS_WIRE_OTHER; return v->type;
        }
        if (UNLIKELY(avail < need)) return v->type = ATLAS_WIRE_TRUNCATED;
        switch (c) {
        case 0xc0: case 0xc2: case 0xc3: break;
        case 0xcc: v->i = p[1]; v->type = ATLAS_WIRE_INT; break;
        case 0xcd: v->i = atlas_be16(p + 1); v->type = ATLAS_WIRE_INT; break;
        case 0xce: v->i = atlas_be32(p + 1); v->type = ATLAS_WIRE_INT; break;
        case 0xcf: {
            uint64_t u = atlas_be64(p + 1);
            if (u > (uint64_t)INT64_MAX) { v->type = ATLAS_WIRE_OTHER; return v->type; }
            v->i = (int64_t)u; v->type = ATLAS_WIRE_INT; break;
        }
        case 0xd0: v->i = (int8_t)p[1]; v->type = ATLAS_WIRE_INT; break;
        case 0xd1: v->i = (int16_t)atlas_be16(p + 1); v->type = ATLAS_WIRE_INT; break;
        case 0xd2: v->i = (int32_t)atlas_be32(p + 1); v->type = ATLAS_WIRE_INT; break;
        case 0xd3: v->i = (int64_t)atlas_be64(p + 1); v->type = ATLAS_WIRE_INT; break;
        case 0xca: {
            uint32_t u = atlas_be32(p + 1);
            float f;
            memcpy(&f, &u, 4);
            v->d = f; v->type = ATLAS_WIRE_FLOAT; break;
        }
        case 0xcb: {
            uint64_t u = atlas_be64(p + 1);
            memcpy(&v->d, &u, 8);
            v->type = ATLAS_WIRE_FLOAT; break;
        }
        case 0xd9: v->n = p[1]; break;
        case 0xda: v->n = atlas_be16(p + 1); break;
        case 0xdb: v->n = atlas_be32(p + 1); break;
        case 0xdc: v->n = atlas_be16(p + 1); v->type = ATLAS_WIRE_ARRAY; break;
        case 0xdd: v->n = atlas_be32(p + 1); v->type = ATLAS_WIRE_ARRAY; break;
        case 0xde: v->n = atlas_be16(p + 1); v->type = ATLAS_WIRE_MAP; break;
        case 0xdf: v->n = atlas_be32(p + 1); v->type = ATLAS_WIRE_MAP; break;
        }
        if (c == 0xd9 || c == 0xda || c == 0xdb) {
            v->s = (const char *)p + need;
            v->type = ATLAS_WIRE_STR;
            need += v->n;
        }
    }
    if (UNLIKELY(avail < need)) return v->type = ATLAS_WIRE_TRUNCATED;
    w->p = p + need;
    return v->type;
}

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                    */
/* ------------------------------------------------------------------------ */

/* 1 if s[0:n] is well-formed UTF-8 as CPython's decoder defines it (no
 * overlong forms, no surrogates, nothing above U+10FFFF), else 0.  Text that
 * SQLite stores must decode again in every reader. */
static inline int atlas_utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        /* Most header text is ASCII: test 8 bytes at a time. */
        while (i + 8 <= n) {
            uint64_t chunk;
            memcpy(&chunk, s + i, 8);
            if (chunk & 0x8080808080808080ULL) break;
            i += 8;
        }
        if (i >= n) break;
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        if (c >= 0xc2 && c <= 0xdf) {
            if (i + 1 >= n || (s[i + 1] & 0xc0) != 0x80) return 0;
            i += 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            if (i + 2 >= n) return 0;
            uint8_t c1 = s[i + 1];
            if ((c1 & 0xc0) != 0x80 || (s[i + 2] & 0xc0) != 0x80) return 0;
            if (c == 0xe0 && c1 < 0xa0) return 0;   /* overlong */
            if (c == 0xed && c1 > 0x9f) return 0;   /* surrogate */
            i += 3;
        } else if (c >= 0xf0 && c <= 0xf4) {
            if (i + 3 >= n) return 0;
            uint8_t c1 = s[i + 1];
            if ((c1 & 0xc0) != 0x80 || (s[i + 2] & 0xc0) != 0x80 || (s[i + 3] & 0xc0) != 0x80)
                return 0;
            if (c == 0xf0 && c1 < 0x90) return 0;   /* overlong */
            if (c == 0xf4 && c1 > 0x8f) return 0;   /* above U+10FFFF */
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

#endif /* ATLAS_WIRE_H */
