/* atlas_html.c: HTML to text for the classifier and URL extraction.
 *
 * Not a conforming HTML parser: spam HTML is broken more often than not, and
 * all the classifier needs is the visible words and the link targets.  One
 * forward pass, no tree, no allocation beyond the output buffers.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <string.h>

#include "atlas_html.h"

/* ========================================================================
 * Byte classes: one table load per byte in the loops below, where a chain
 * of comparisons (atlas_is_space is six) was the largest share of the
 * converter's instructions.
 * ======================================================================== */

enum { H_SPACE = 1, H_SPECIAL = 2 /* '<' or '&' */, H_NAME = 4 /* [A-Za-z0-9] */,
       H_ATTR_END = 8 /* space, '=' or '>' */, H_VALUE_END = 16 /* space or '>' */ };

#define HCLASS_(c)                                                                          \
    (uint8_t)(((c) == ' ' || ((c) >= '\t' && (c) <= '\r') ? H_SPACE | H_ATTR_END | H_VALUE_END \
                                                          : 0) |                             \
              ((c) == '<' || (c) == '&' ? H_SPECIAL : 0) |                                   \
              (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z') ||                    \
                       ((c) >= '0' && (c) <= '9')                                            \
                   ? H_NAME                                                                  \
                   : 0) |                                                                    \
              ((c) == '=' ? H_ATTR_END : 0) | ((c) == '>' ? H_ATTR_END | H_VALUE_END : 0))
static const uint8_t CLS[256] = ATLAS_TABLE256(HCLASS_);
#undef HCLASS_

/* ========================================================================
 * Output with whitespace collapsing
 * ======================================================================== */

typedef struct {
    atlas_buf *out;
    int space;    /* a blank is pending */
    int newlines; /* line breaks pending (at most 2 are written) */
} writer;

/* The pending break (at most two) or blank, written at d in reserved room
 * unless nothing has been written yet (start: the buffer's start). */
ATLAS_INLINE uint8_t *w_pending(writer *w, uint8_t *d, const uint8_t *start) {
    if (d != start) {
        if (w->newlines) {
            *d++ = '\n';
            if (w->newlines > 1) *d++ = '\n';
        } else if (w->space) {
            *d++ = ' ';
        }
    }
    w->space = w->newlines = 0;
    return d;
}

static int w_flush(writer *w) {
    atlas_buf *b = w->out;
    if (UNLIKELY(b->n + 2 > b->cap) && atlas_buf_reserve(b, 2) < 0) return -1;
    b->n = (size_t)(w_pending(w, b->p + b->n, b->p) - b->p);
    return 0;
}

ATLAS_INLINE int w_byte(writer *w, uint8_t c) {
    if (UNLIKELY(w->space | w->newlines) && w_flush(w) < 0) return -1;
    return atlas_buf_putc(w->out, c);
}

static int w_codepoint(writer *w, uint32_t cp) {
    uint8_t b[4];
    size_t n;
    if (cp == 0xA0 || cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r') {
        w->space = 1;
        return 0;
    }
    if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = 0xFFFD;
    if (cp < 0x80) {
        b[0] = (uint8_t)cp, n = 1;
    } else if (cp < 0x800) {
        b[0] = (uint8_t)(0xC0 | cp >> 6), b[1] = (uint8_t)(0x80 | (cp & 0x3F)), n = 2;
    } else if (cp < 0x10000) {
        b[0] = (uint8_t)(0xE0 | cp >> 12), b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (uint8_t)(0x80 | (cp & 0x3F)), n = 3;
    } else {
        b[0] = (uint8_t)(0xF0 | cp >> 18), b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F)), b[3] = (uint8_t)(0x80 | (cp & 0x3F)), n = 4;
    }
    if ((w->space | w->newlines) && w_flush(w) < 0) return -1;
    return atlas_buf_put(w->out, b, n);
}

/* s[0:n], which holds no '<' or '&', as text: each run of blanks becomes
 * one pending blank, written before the next byte (w_byte's rule).  With
 * SSE2 a word is copied in one 16-byte store up to the blank that ends it
 * (found by a compare and a count of trailing zeros); the room reserved
 * takes the store's overrun. */
static int w_text(writer *w, const uint8_t *s, size_t n) {
    atlas_buf *b = w->out;
    uint8_t *d, *start;
    size_t i = 0;
    if (UNLIKELY(b->n + n + 2 + 16 > b->cap) && atlas_buf_reserve(b, n + 2 + 16) < 0) return -1;
    start = b->p;
    d = b->p + b->n;
#ifdef __SSE2__
    {
        const __m128i sp = _mm_set1_epi8(' '), tab = _mm_set1_epi8('\t'), four = _mm_set1_epi8(4);
        while (i + 16 <= n) {
            __m128i v, off;
            unsigned blank;
            size_t k;
            if (CLS[s[i]] & H_SPACE) {
                w->space = 1;
                i++;
                continue;
            }
            if (UNLIKELY(w->space | w->newlines)) d = w_pending(w, d, start);
            v = _mm_loadu_si128((const __m128i *)(s + i));
            /* Blanks: ' ' and '\t'..'\r' ((c - 9) <= 4, unsigned). */
            off = _mm_sub_epi8(v, tab);
            blank = (unsigned)_mm_movemask_epi8(_mm_or_si128(
                _mm_cmpeq_epi8(v, sp), _mm_cmpeq_epi8(_mm_min_epu8(off, four), off)));
            k = blank ? (size_t)__builtin_ctz(blank) : 16;
            _mm_storeu_si128((__m128i *)d, v);
            d += k;
            i += k;
        }
    }
#endif
    for (; i < n; i++) {
        uint8_t c = s[i];
        if (CLS[c] & H_SPACE) {
            w->space = 1;
            continue;
        }
        if (UNLIKELY(w->space | w->newlines)) d = w_pending(w, d, start);
        *d++ = c;
    }
    b->n = (size_t)(d - b->p);
    return 0;
}

/* Index of the first '<' or '&' in s[i:n], else n. */
ATLAS_INLINE size_t next_special(const uint8_t *s, size_t i, size_t n) {
#ifdef __SSE2__
    const __m128i lt = _mm_set1_epi8('<'), amp = _mm_set1_epi8('&');
    for (; i + 16 <= n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(s + i));
        unsigned m = (unsigned)_mm_movemask_epi8(
            _mm_or_si128(_mm_cmpeq_epi8(v, lt), _mm_cmpeq_epi8(v, amp)));
        if (m) return i + (size_t)__builtin_ctz(m);
    }
#endif
    while (i < n && !(CLS[s[i]] & H_SPECIAL)) i++;
    return i;
}

/* ========================================================================
 * Entities
 * ======================================================================== */

#define E(name, cp) {name, sizeof(name) - 1, cp}
static const struct {
    const char *name;
    size_t len;
    uint32_t cp;
} ENTITIES[] = {
    E("amp", '&'),      E("lt", '<'),       E("gt", '>'),       E("quot", '"'),
    E("apos", '\''),    E("nbsp", 0xA0),    E("copy", 0xA9),    E("reg", 0xAE),
    E("trade", 0x2122), E("mdash", 0x2014), E("ndash", 0x2013), E("hellip", 0x2026),
    E("lsquo", 0x2018), E("rsquo", 0x2019), E("ldquo", 0x201C), E("rdquo", 0x201D),
    E("bull", 0x2022),  E("middot", 0xB7),  E("euro", 0x20AC),  E("pound", 0xA3),
    E("yen", 0xA5),     E("cent", 0xA2),    E("deg", 0xB0),     E("laquo", 0xAB),
    E("raquo", 0xBB),   E("eacute", 0xE9),  E("egrave", 0xE8),  E("agrave", 0xE0),
    E("ccedil", 0xE7),  E("uuml", 0xFC),    E("ouml", 0xF6),    E("auml", 0xE4),
    E("szlig", 0xDF),   E("times", 0xD7),   E("iexcl", 0xA1),   E("iquest", 0xBF),
};
#undef E

/* Entity at s[0] == '&'; returns bytes consumed (0: not an entity). */
static size_t entity_decode(const uint8_t *s, size_t n, uint32_t *cp) {
    size_t i = 1;
    if (i < n && s[i] == '#') {
        uint32_t v = 0;
        int hex = 0, digits = 0;
        i++;
        if (i < n && (s[i] == 'x' || s[i] == 'X')) hex = 1, i++;
        for (; i < n; i++) {
            int d = hex ? atlas_hexval(s[i]) : (s[i] >= '0' && s[i] <= '9' ? s[i] - '0' : -1);
            if (d < 0) break;
            if (v < 0x110000) v = v * (hex ? 16 : 10) + (uint32_t)d;
            digits++;
        }
        if (!digits) return 0;
        if (i < n && s[i] == ';') i++;
        *cp = v;
        return i;
    }
    size_t a = i;
    while (i < n && i - a < 8 && ((s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z')) i++;
    if (i == a) return 0;
    for (size_t k = 0; k < sizeof(ENTITIES) / sizeof(ENTITIES[0]); k++) {
        size_t len = ENTITIES[k].len;
        /* Names are case-sensitive, except the four that old mail shouts. */
        if (len == i - a && memcmp(s + a, ENTITIES[k].name, len) == 0) {
            *cp = ENTITIES[k].cp;
            return i < n && s[i] == ';' ? i + 1 : i;
        }
    }
    if (i - a <= 4) {
        for (size_t k = 0; k < 6; k++) {
            size_t len = ENTITIES[k].len, j;
            if (len != i - a) continue;
            for (j = 0; j < len; j++)
                if (atlas_lower(s[a + j]) != (uint8_t)ENTITIES[k].name[j]) break;
            if (j == len) {
                *cp = ENTITIES[k].cp;
                return i < n && s[i] == ';' ? i + 1 : i;
            }
        }
    }
    return 0;
}

/* ========================================================================
 * Tags
 * ======================================================================== */

/* What a tag does to the text: hide what follows (script, style; head up
 * to its end), end a line (block tags), or separate cells (td, th). */
enum { TAG_OTHER, TAG_SCRIPT, TAG_STYLE, TAG_HEAD, TAG_BLOCK, TAG_CELL };

#define NAME_IS(lit) (len == sizeof(lit) - 1 && memcmp(name, lit, sizeof(lit) - 1) == 0)

/* The kind of the lower-cased tag ``name`` of ``len`` bytes.  Dispatch on
 * the first letter and the length: a strcmp per candidate name cost a
 * fifth of the converter's instructions on real HTML mail. */
static int tag_kind(const char *name, size_t len) {
    switch (name[0]) {
    case 'a': return NAME_IS("article") || NAME_IS("address") ? TAG_BLOCK : TAG_OTHER;
    case 'b': return NAME_IS("br") || NAME_IS("blockquote") ? TAG_BLOCK : TAG_OTHER;
    case 'c': return NAME_IS("center") ? TAG_BLOCK : TAG_OTHER;
    case 'd':
        return NAME_IS("div") || NAME_IS("dd") || NAME_IS("dt") || NAME_IS("dl") ? TAG_BLOCK
                                                                               : TAG_OTHER;
    case 'f': return NAME_IS("form") || NAME_IS("footer") ? TAG_BLOCK : TAG_OTHER;
    case 'h':
        if (NAME_IS("head")) return TAG_HEAD;
        if (len == 2 && (name[1] == 'r' || (name[1] >= '1' && name[1] <= '6'))) return TAG_BLOCK;
        return NAME_IS("header") ? TAG_BLOCK : TAG_OTHER;
    case 'l': return NAME_IS("li") ? TAG_BLOCK : TAG_OTHER;
    case 'o': return NAME_IS("ol") ? TAG_BLOCK : TAG_OTHER;
    case 'p': return NAME_IS("p") || NAME_IS("pre") ? TAG_BLOCK : TAG_OTHER;
    case 's':
        if (NAME_IS("script")) return TAG_SCRIPT;
        if (NAME_IS("style")) return TAG_STYLE;
        return NAME_IS("section") ? TAG_BLOCK : TAG_OTHER;
    case 't':
        if (NAME_IS("td") || NAME_IS("th")) return TAG_CELL;
        return NAME_IS("tr") || NAME_IS("table") || NAME_IS("title") || NAME_IS("tbody") ||
                       NAME_IS("thead")
                   ? TAG_BLOCK
                   : TAG_OTHER;
    case 'u': return NAME_IS("ul") ? TAG_BLOCK : TAG_OTHER;
    default: return TAG_OTHER;
    }
}

#undef NAME_IS

/* After "</name" (case-insensitive) at or after p, past its '>'; NULL if none. */
static const uint8_t *skip_to_close(const uint8_t *p, const uint8_t *end, const char *name) {
    size_t len = strlen(name);
    while (p < end) {
        const uint8_t *lt = memchr(p, '<', (size_t)(end - p));
        if (!lt) return NULL;
        if ((size_t)(end - lt) > len + 1 && lt[1] == '/') {
            size_t k;
            for (k = 0; k < len; k++)
                if (atlas_lower(lt[2 + k]) != (uint8_t)name[k]) break;
            if (k == len) {
                const uint8_t *gt = memchr(lt, '>', (size_t)(end - lt));
                return gt ? gt + 1 : end;
            }
        }
        p = lt + 1;
    }
    return NULL;
}

static int starts_url(const uint8_t *s, size_t n) {
    static const char *const P[] = {"http://", "https://", "www."};
    for (int k = 0; k < 3; k++) {
        size_t len = strlen(P[k]), j;
        if (n < len + 1) continue;
        for (j = 0; j < len; j++)
            if (atlas_lower(s[j]) != (uint8_t)P[k][j]) break;
        if (j == len) return 1;
    }
    return 0;
}

/* An href/src value: entities decoded, blanks trimmed, kept if a URL. */
static int attr_url(const uint8_t *v, size_t n, atlas_buf *urls, long *n_urls) {
    while (n && atlas_is_space(*v)) v++, n--;
    while (n && atlas_is_space(v[n - 1])) n--;
    if (!starts_url(v, n)) return 0;
    /* The URL is never longer than the value: room for it, its '\n' and a
     * 16-byte store's overrun. */
    if (UNLIKELY(urls->n + n + 1 + 16 > urls->cap) && atlas_buf_reserve(urls, n + 1 + 16) < 0)
        return -1;
    uint8_t *d = urls->p + urls->n;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t used;
#ifdef __SSE2__
        /* Sixteen bytes at a time up to the next '&', '\n' or '\r'. */
        if (i + 16 <= n) {
            __m128i x = _mm_loadu_si128((const __m128i *)(v + i));
            unsigned stop = (unsigned)_mm_movemask_epi8(_mm_or_si128(
                _mm_cmpeq_epi8(x, _mm_set1_epi8('&')),
                _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('\n')),
                             _mm_cmpeq_epi8(x, _mm_set1_epi8('\r')))));
            size_t k = stop ? (size_t)__builtin_ctz(stop) : 16;
            _mm_storeu_si128((__m128i *)d, x);
            d += k;
            i += k;
            if (k == 16) continue;
        }
#endif
        if (v[i] == '&' && (used = entity_decode(v + i, n - i, &cp)) > 0 && cp < 0x80 && cp > 0x20) {
            *d++ = (uint8_t)cp;
            i += used;
        } else {
            /* Line breaks inside an attribute are wrapping, not data. */
            if (v[i] != '\n' && v[i] != '\r') *d++ = v[i];
            i++;
        }
    }
    *d++ = '\n';
    urls->n = (size_t)(d - urls->p);
    (*n_urls)++;
    return 0;
}

/* Parse the tag at s[i] == '<'.  Returns the index after it and fills name
 * (lower-cased, "" for comments and declarations) and closing. */
static size_t parse_tag(const uint8_t *s, size_t i, size_t n, char name[16], size_t *name_len,
                        int *closing, atlas_buf *urls, long *n_urls, int *err) {
    name[0] = 0;
    *name_len = 0;
    *closing = 0;
    i++;
    if (i < n && s[i] == '!') {
        if (n - i >= 3 && s[i + 1] == '-' && s[i + 2] == '-') {
            const uint8_t *e = memmem(s + i + 3, n - i - 3, "-->", 3);
            return e ? (size_t)(e - s) + 3 : n;
        }
        const uint8_t *gt = memchr(s + i, '>', n - i);
        return gt ? (size_t)(gt - s) + 1 : n;
    }
    if (i < n && s[i] == '/') *closing = 1, i++;
    size_t k = 0;
    while (i < n && (CLS[s[i]] & H_NAME)) {
        if (k < 15) name[k++] = (char)atlas_lower(s[i]);
        i++;
    }
    name[k] = 0;
    *name_len = k;
    /* Attributes, quote-aware so that '>' inside a value does not end the tag. */
    while (i < n && s[i] != '>') {
        if ((CLS[s[i]] & H_SPACE) || s[i] == '/') {
            i++;
            continue;
        }
        size_t a = i;
        while (i < n && !(CLS[s[i]] & H_ATTR_END)) i++;
        size_t an = i - a;
        while (i < n && (CLS[s[i]] & H_SPACE)) i++;
        if (i >= n || s[i] != '=') continue;
        i++;
        while (i < n && (CLS[s[i]] & H_SPACE)) i++;
        size_t va, vn;
        if (i < n && (s[i] == '"' || s[i] == '\'')) {
            uint8_t q = s[i++];
            const uint8_t *e = memchr(s + i, q, n - i);
            va = i;
            vn = e ? (size_t)(e - s) - i : n - i;
            i = e ? (size_t)(e - s) + 1 : n;
        } else {
            va = i;
            while (i < n && !(CLS[s[i]] & H_VALUE_END)) i++;
            vn = i - va;
        }
        if (!*closing && ((an == 4 && (s[a] | 0x20) == 'h' && (s[a + 1] | 0x20) == 'r' &&
                           (s[a + 2] | 0x20) == 'e' && (s[a + 3] | 0x20) == 'f') ||
                          (an == 3 && (s[a] | 0x20) == 's' && (s[a + 1] | 0x20) == 'r' &&
                           (s[a + 2] | 0x20) == 'c'))) {
            if (attr_url(s + va, vn, urls, n_urls) < 0) {
                *err = -1;
                return n;
            }
        }
    }
    return i < n ? i + 1 : n;
}

/* ========================================================================
 * Driver
 * ======================================================================== */

int atlas_html_to_text(const uint8_t *s, size_t n, atlas_buf *text, atlas_buf *urls, long *n_urls) {
    writer w = {text, 0, 0};
    size_t i = 0;
    int err = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c == '<') {
            if (i + 1 < n && (((s[i + 1] | 0x20) >= 'a' && (s[i + 1] | 0x20) <= 'z') ||
                              s[i + 1] == '/' || s[i + 1] == '!' || s[i + 1] == '?')) {
                char name[16];
                size_t len;
                int closing, kind;
                i = parse_tag(s, i, n, name, &len, &closing, urls, n_urls, &err);
                if (err) return -1;
                kind = len ? tag_kind(name, len) : TAG_OTHER;
                if (!closing && (kind == TAG_SCRIPT || kind == TAG_STYLE)) {
                    /* Unterminated script or style hides the rest, as in a browser. */
                    const uint8_t *e = skip_to_close(s + i, s + n, name);
                    i = e ? (size_t)(e - s) : n;
                } else if (!closing && kind == TAG_HEAD) {
                    /* Without </head> the tag is ignored: losing the body would be worse. */
                    const uint8_t *e = skip_to_close(s + i, s + n, "head");
                    if (e) i = (size_t)(e - s);
                } else if (kind == TAG_BLOCK) {
                    w.newlines = w.newlines ? w.newlines : 1;
                    w.space = 0;
                } else if (kind == TAG_CELL) {
                    w.space = 1;
                }
                continue;
            }
            if (w_byte(&w, c) < 0) return -1;
            i++;
        } else if (c == '&') {
            uint32_t cp;
            size_t used = entity_decode(s + i, n - i, &cp);
            if (used) {
                if (w_codepoint(&w, cp) < 0) return -1;
                i += used;
            } else {
                if (w_byte(&w, c) < 0) return -1;
                i++;
            }
        } else {
            /* Text, blanks collapsed, up to the next tag or entity. */
            size_t j = next_special(s, i + 1, n);
            if (w_text(&w, s + i, j - i) < 0) return -1;
            i = j;
        }
    }
    return 0;
}
