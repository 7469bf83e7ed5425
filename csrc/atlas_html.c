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
 * Output with whitespace collapsing
 * ======================================================================== */

typedef struct {
    atlas_buf *out;
    int space;    /* a blank is pending */
    int newlines; /* line breaks pending (at most 2 are written) */
} writer;

static int w_flush(writer *w) {
    if (w->out->n) {
        if (w->newlines) {
            int k = w->newlines > 2 ? 2 : w->newlines;
            while (k--)
                if (atlas_buf_putc(w->out, '\n') < 0) return -1;
        } else if (w->space) {
            if (atlas_buf_putc(w->out, ' ') < 0) return -1;
        }
    }
    w->space = w->newlines = 0;
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

/* ========================================================================
 * Entities
 * ======================================================================== */

static const struct {
    const char *name;
    uint32_t cp;
} ENTITIES[] = {
    {"amp", '&'},      {"lt", '<'},       {"gt", '>'},       {"quot", '"'},
    {"apos", '\''},    {"nbsp", 0xA0},    {"copy", 0xA9},    {"reg", 0xAE},
    {"trade", 0x2122}, {"mdash", 0x2014}, {"ndash", 0x2013}, {"hellip", 0x2026},
    {"lsquo", 0x2018}, {"rsquo", 0x2019}, {"ldquo", 0x201C}, {"rdquo", 0x201D},
    {"bull", 0x2022},  {"middot", 0xB7},  {"euro", 0x20AC},  {"pound", 0xA3},
    {"yen", 0xA5},     {"cent", 0xA2},    {"deg", 0xB0},     {"laquo", 0xAB},
    {"raquo", 0xBB},   {"eacute", 0xE9},  {"egrave", 0xE8},  {"agrave", 0xE0},
    {"ccedil", 0xE7},  {"uuml", 0xFC},    {"ouml", 0xF6},    {"auml", 0xE4},
    {"szlig", 0xDF},   {"times", 0xD7},   {"iexcl", 0xA1},   {"iquest", 0xBF},
};

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
        size_t len = strlen(ENTITIES[k].name);
        /* Names are case-sensitive, except the four that old mail shouts. */
        if (len == i - a && memcmp(s + a, ENTITIES[k].name, len) == 0) {
            *cp = ENTITIES[k].cp;
            return i < n && s[i] == ';' ? i + 1 : i;
        }
    }
    if (i - a <= 4) {
        for (size_t k = 0; k < 6; k++) {
            size_t len = strlen(ENTITIES[k].name), j;
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

static int tag_is(const char *name, const char *const *list) {
    for (; *list; list++)
        if (!strcmp(name, *list)) return 1;
    return 0;
}

/* Block tags end a line of text.  Dispatch on the first letter: a linear
 * strcmp over the whole list cost 8 % of all parse time on real HTML mail,
 * where most tags (a, span, font, img, td) are inline. */
static const char *const BLOCK_A[] = {"article", "address", NULL};
static const char *const BLOCK_B[] = {"br", "blockquote", NULL};
static const char *const BLOCK_C[] = {"center", NULL};
static const char *const BLOCK_D[] = {"div", "dd", "dt", "dl", NULL};
static const char *const BLOCK_F[] = {"form", "footer", NULL};
static const char *const BLOCK_H[] = {"hr", "h1", "h2", "h3", "h4", "h5", "h6", "header", NULL};
static const char *const BLOCK_L[] = {"li", NULL};
static const char *const BLOCK_O[] = {"ol", NULL};
static const char *const BLOCK_P[] = {"p", "pre", NULL};
static const char *const BLOCK_S[] = {"section", NULL};
static const char *const BLOCK_T[] = {"tr", "table", "title", "tbody", "thead", NULL};
static const char *const BLOCK_U[] = {"ul", NULL};

static int is_block_tag(const char *name) {
    switch (name[0]) {
    case 'a': return tag_is(name, BLOCK_A);
    case 'b': return tag_is(name, BLOCK_B);
    case 'c': return tag_is(name, BLOCK_C);
    case 'd': return tag_is(name, BLOCK_D);
    case 'f': return tag_is(name, BLOCK_F);
    case 'h': return tag_is(name, BLOCK_H);
    case 'l': return tag_is(name, BLOCK_L);
    case 'o': return tag_is(name, BLOCK_O);
    case 'p': return tag_is(name, BLOCK_P);
    case 's': return tag_is(name, BLOCK_S);
    case 't': return tag_is(name, BLOCK_T);
    case 'u': return tag_is(name, BLOCK_U);
    default: return 0;
    }
}

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
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t used;
        if (v[i] == '&' && (used = entity_decode(v + i, n - i, &cp)) > 0 && cp < 0x80 && cp > 0x20) {
            if (atlas_buf_putc(urls, (uint8_t)cp) < 0) return -1;
            i += used;
        } else {
            /* Line breaks inside an attribute are wrapping, not data. */
            if (v[i] != '\n' && v[i] != '\r' && atlas_buf_putc(urls, v[i]) < 0) return -1;
            i++;
        }
    }
    if (atlas_buf_putc(urls, '\n') < 0) return -1;
    (*n_urls)++;
    return 0;
}

/* Parse the tag at s[i] == '<'.  Returns the index after it and fills name
 * (lower-cased, "" for comments and declarations) and closing. */
static size_t parse_tag(const uint8_t *s, size_t i, size_t n, char name[16], int *closing,
                        atlas_buf *urls, long *n_urls, int *err) {
    name[0] = 0;
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
    while (i < n && (((s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z') || (s[i] >= '0' && s[i] <= '9'))) {
        if (k < 15) name[k++] = (char)atlas_lower(s[i]);
        i++;
    }
    name[k] = 0;
    /* Attributes, quote-aware so that '>' inside a value does not end the tag. */
    while (i < n && s[i] != '>') {
        if (atlas_is_space(s[i]) || s[i] == '/') {
            i++;
            continue;
        }
        size_t a = i;
        while (i < n && !atlas_is_space(s[i]) && s[i] != '=' && s[i] != '>') i++;
        size_t an = i - a;
        while (i < n && atlas_is_space(s[i])) i++;
        if (i >= n || s[i] != '=') continue;
        i++;
        while (i < n && atlas_is_space(s[i])) i++;
        size_t va, vn;
        if (i < n && (s[i] == '"' || s[i] == '\'')) {
            uint8_t q = s[i++];
            const uint8_t *e = memchr(s + i, q, n - i);
            va = i;
            vn = e ? (size_t)(e - s) - i : n - i;
            i = e ? (size_t)(e - s) + 1 : n;
        } else {
            va = i;
            while (i < n && !atlas_is_space(s[i]) && s[i] != '>') i++;
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
                int closing;
                i = parse_tag(s, i, n, name, &closing, urls, n_urls, &err);
                if (err) return -1;
                if (!closing && (!strcmp(name, "script") || !strcmp(name, "style"))) {
                    /* Unterminated script or style hides the rest, as in a browser. */
                    const uint8_t *e = skip_to_close(s + i, s + n, name);
                    i = e ? (size_t)(e - s) : n;
                } else if (!closing && !strcmp(name, "head")) {
                    /* Without </head> the tag is ignored: losing the body would be worse. */
                    const uint8_t *e = skip_to_close(s + i, s + n, "head");
                    if (e) i = (size_t)(e - s);
                } else if (is_block_tag(name)) {
                    w.newlines = w.newlines ? w.newlines : 1;
                    w.space = 0;
                } else if (!strcmp(name, "td") || !strcmp(name, "th")) {
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
        } else if (atlas_is_space(c)) {
            w.space = 1;
            i++;
        } else {
            /* A run of plain bytes in one copy. */
            size_t j = i + 1;
            while (j < n && s[j] != '<' && s[j] != '&' && !atlas_is_space(s[j])) j++;
            if ((w.space | w.newlines) && w_flush(&w) < 0) return -1;
            if (atlas_buf_put(text, s + i, j - i) < 0) return -1;
            i = j;
        }
    }
    return 0;
}
