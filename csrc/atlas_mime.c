/* atlas_mime.c: headers, dates, addresses, MIME tree, transfer decoding and
 * URL finding for atlas_fast._parser.  See atlas_mime.h for the contract.
 *
 * The behaviour follows Python's email package (policy.default) where that is
 * cheap to do, because email is what the differential tests compare against:
 * header-line recognition is feedparser's headerRE, boundary lines are its
 * boundaryre, the date grammar is email.utils._parsedate_tz, and the base64
 * and quoted-printable decoders are as tolerant as binascii's.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <stdlib.h>
#include <string.h>

#include "atlas_mime.h"

/* ========================================================================
 * Buffers
 * ======================================================================== */

int atlas_buf_reserve(atlas_buf *b, size_t extra) {
    size_t need = b->n + extra;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    uint8_t *p = (uint8_t *)realloc(b->p, cap);
    if (UNLIKELY(!p)) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

void atlas_buf_free(atlas_buf *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

static const char *const ERROR_NAMES[ATLAS_ERR_COUNT] = {
    NULL,
    "empty message",
    "no header/body separator",
    "header too large",
    "mime depth limit",
    "mime part limit",
    "unterminated multipart",
    "multipart boundary not found",
    "nul bytes",
};

const char *atlas_error_name(int code) {
    if (code <= 0 || code >= ATLAS_ERR_COUNT) return NULL;
    return ERROR_NAMES[code];
}

int atlas_is_ascii(const uint8_t *s, size_t n) {
    size_t i = 0;
    /* Eight bytes at a time: header values are short but bodies are not. */
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (w & 0x8080808080808080ULL) return 0;
    }
    for (; i < n; i++)
        if (s[i] & 0x80) return 0;
    return 1;
}

int atlas_has_c1(const uint8_t *s, size_t n) {
    size_t i = 0;
    /* Eight bytes at a time: a byte 100xxxxx (0x80-0x9F) becomes zero under
     * (w & 0xE0..) ^ 0x80.., and the classic zero-byte test finds it (its
     * borrow can only flag bytes above a true zero, so "any" is exact). */
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (!(w & 0x8080808080808080ULL)) continue;
        w = (w & 0xE0E0E0E0E0E0E0E0ULL) ^ 0x8080808080808080ULL;
        if ((w - 0x0101010101010101ULL) & ~w & 0x8080808080808080ULL) return 1;
    }
    for (; i < n; i++)
        if ((s[i] & 0xE0) == 0x80) return 1;
    return 0;
}

ATLAS_INLINE int span_ieq(const uint8_t *s, size_t n, const char *lit) {
    size_t i = 0;
    for (; i < n; i++) {
        if (!lit[i] || atlas_lower(s[i]) != (uint8_t)lit[i]) return 0;
    }
    return lit[i] == 0;
}

/* span_ieq against a string literal: a length that differs fails before
 * any byte is read (most header names are not the one asked about). */
#define span_ieq_lit(s, n, lit) ((n) == sizeof(lit) - 1 && span_ieq((s), (n), (lit)))

/* ========================================================================
 * Header block
 * ======================================================================== */

/* Bytes of a header name (feedparser's [\041-\071\073-\176]): one load
 * per byte in the header loop instead of three comparisons. */
#define NAME_BYTE_(c) (uint8_t)((c) >= 33 && (c) <= 126 && (c) != ':')
static const uint8_t NAME_BYTE[256] = ATLAS_TABLE256(NAME_BYTE_);
#undef NAME_BYTE_

static int header_field(const uint8_t *name, size_t n) {
    /* Dispatch on the first letter first: almost every header of a message
     * is not one we look up, so most names fail after one compare. */
    switch (atlas_lower(name[0])) {
    case 'a':
        if (span_ieq_lit(name, n, "authentication-results")) return ATLAS_F_AUTH_RESULTS;
        break;
    case 'c':
        if (span_ieq_lit(name, n, "content-type")) return ATLAS_F_CONTENT_TYPE;
        if (span_ieq_lit(name, n, "content-transfer-encoding")) return ATLAS_F_CTE;
        if (span_ieq_lit(name, n, "content-disposition")) return ATLAS_F_DISPOSITION;
        break;
    case 'd':
        if (span_ieq_lit(name, n, "date")) return ATLAS_F_DATE;
        break;
    case 'f':
        if (span_ieq_lit(name, n, "from")) return ATLAS_F_FROM;
        break;
    case 'm':
        if (span_ieq_lit(name, n, "message-id")) return ATLAS_F_MESSAGE_ID;
        break;
    case 'r':
        if (span_ieq_lit(name, n, "received")) return ATLAS_F_RECEIVED;
        if (span_ieq_lit(name, n, "reply-to")) return ATLAS_F_REPLY_TO;
        if (span_ieq_lit(name, n, "return-path")) return ATLAS_F_RETURN_PATH;
        if (span_ieq_lit(name, n, "received-spf")) return ATLAS_F_RECEIVED_SPF;
        break;
    case 's':
        if (span_ieq_lit(name, n, "subject")) return ATLAS_F_SUBJECT;
        break;
    case 't':
        if (span_ieq_lit(name, n, "to")) return ATLAS_F_TO;
        break;
    case 'u':
        if (span_ieq_lit(name, n, "user-agent")) return ATLAS_F_USER_AGENT;
        break;
    case 'x':
        if (span_ieq_lit(name, n, "x-mailer")) return ATLAS_F_X_MAILER;
        break;
    }
    return -1;
}

static int headers_push(atlas_headers *h, const uint8_t *name, size_t name_len,
                        const uint8_t *val, size_t val_len) {
    if (UNLIKELY(h->n == h->cap)) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        atlas_header *items = (atlas_header *)realloc(h->items, cap * sizeof(*items));
        if (!items) return -1;
        h->items = items;
        h->cap = cap;
    }
    atlas_header *e = &h->items[h->n];
    e->name = name;
    e->name_len = name_len;
    e->val = val;
    e->val_len = val_len;
    e->field = header_field(name, name_len);
    if (e->field >= 0 && h->first[e->field] < 0) h->first[e->field] = (int)h->n;
    h->n++;
    return 0;
}

/* Body start after an over-long header block: the first empty line. */
static const uint8_t *find_blank_line(const uint8_t *p, const uint8_t *end) {
    while (p < end) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) return NULL;
        if (nl + 1 < end && nl[1] == '\n') return nl + 2;
        if (nl + 2 < end && nl[1] == '\r' && nl[2] == '\n') return nl + 3;
        p = nl + 1;
    }
    return NULL;
}

int atlas_headers_parse(atlas_headers *h, const uint8_t *p, size_t n) {
    const uint8_t *end = p + n, *line = p;
    atlas_header *last = NULL;
    h->n = 0;
    for (int i = 0; i < ATLAS_F_COUNT; i++) h->first[i] = -1;
    h->error = ATLAS_OK;
    h->body = end;
    h->body_len = 0;
    h->header_bytes = n;
    while (line < end) {
        const uint8_t *nl = memchr(line, '\n', (size_t)(end - line));
        const uint8_t *next = nl ? nl + 1 : end;
        const uint8_t *cend = nl ? nl : end;
        if (cend > line && cend[-1] == '\r') cend--;
        if (cend == line) { /* the empty line that ends the header block */
            h->body = next;
            h->body_len = (size_t)(end - next);
            h->header_bytes = (size_t)(next - p);
            return 0;
        }
        /* Checked against the end of this line: one huge header line counts. */
        if (UNLIKELY((size_t)(cend - p) > ATLAS_HEADER_CAP)) {
            const uint8_t *b = find_blank_line(line, end);
            h->error = ATLAS_ERR_HEADER_TOO_LARGE;
            h->body = b ? b : end;
            h->body_len = (size_t)(end - h->body);
            h->header_bytes = (size_t)(h->body - p);
            return 0;
        }
        if (line[0] == ' ' || line[0] == '\t') {
            /* Continuation: the value span grows over the fold.  With no
             * header before it, email drops the line as a defect. */
            if (last) last->val_len = (size_t)(cend - last->val);
            line = next;
            continue;
        }
        /* feedparser's headerRE: [\041-\071\073-\176]*: */
        const uint8_t *q = line;
        while (q < cend && NAME_BYTE[*q]) q++;
        if (q < cend && *q == ':') {
            if (q > line) {
                if (headers_push(h, line, (size_t)(q - line), q + 1, (size_t)(cend - q - 1)) < 0)
                    return -1;
                last = &h->items[h->n - 1];
            }
            /* An empty name is an invalid header: email skips the line. */
        } else if (cend - line >= 5 && memcmp(line, "From ", 5) == 0) {
            /* A unix-from (or misplaced envelope) line: email skips it. */
        } else {
            /* Not a header line: email takes it as the first body line. */
            h->error = ATLAS_ERR_NO_SEPARATOR;
            h->body = line;
            h->body_len = (size_t)(end - line);
            h->header_bytes = (size_t)(line - p);
            return 0;
        }
        line = next;
    }
    h->error = ATLAS_ERR_NO_SEPARATOR;
    return 0;
}

int atlas_unfold(atlas_buf *out, const uint8_t *v, size_t n) {
    out->n = 0;
    size_t i = 0;
    while (i < n && atlas_is_wsp(v[i])) i++;
    if (atlas_buf_reserve(out, n - i + 1) < 0) return -1;
    /* Folds are rare: copy whole runs between CR/LF with memcpy. */
    while (i < n) {
        const uint8_t *nl = memchr(v + i, '\n', n - i);
        size_t stop = nl ? (size_t)(nl - v) : n;
        size_t run_end = stop;
        if (run_end > i && v[run_end - 1] == '\r') run_end--;
        /* Stray CRs inside a line are dropped; almost every line has none. */
        while (i < run_end) {
            const uint8_t *cr = memchr(v + i, '\r', run_end - i);
            size_t seg_end = cr ? (size_t)(cr - v) : run_end;
            memcpy(out->p + out->n, v + i, seg_end - i);
            out->n += seg_end - i;
            i = seg_end + 1;
        }
        i = stop + 1;
    }
    out->p[out->n] = 0;
    return 0;
}

/* ========================================================================
 * Dates: email.utils._parsedate_tz, then datetime's range checks
 * ======================================================================== */

typedef struct {
    const uint8_t *p;
    size_t n;
} span;

static const char *const MONTHS[24] = {
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    "january", "february", "march", "april", "may", "june", "july", "august",
    "september", "october", "november", "december"};
static const char *const DAYS[7] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};

static int month_index(span s) {
    for (int i = 0; i < 24; i++)
        if (span_ieq(s.p, s.n, MONTHS[i])) return i % 12 + 1;
    return 0;
}

/* Python int(): optional sign, digits with single underscores between. */
static int py_int(span s, long *out) {
    size_t i = 0;
    int neg = 0;
    long v = 0;
    if (i < s.n && (s.p[i] == '+' || s.p[i] == '-')) neg = s.p[i++] == '-';
    if (i >= s.n) return 0;
    int prev_digit = 0;
    for (; i < s.n; i++) {
        uint8_t c = s.p[i];
        if (c >= '0' && c <= '9') {
            if (v < 100000000L) v = v * 10 + (c - '0');
            prev_digit = 1;
        } else if (c == '_' && prev_digit && i + 1 < s.n) {
            prev_digit = 0;
        } else {
            return 0;
        }
    }
    if (!prev_digit) return 0;
    *out = neg ? -v : v;
    return 1;
}

static long zone_offset(span tz, int *known) {
    static const struct { const char *name; int off; } ZONES[] = {
        {"ut", 0}, {"utc", 0}, {"gmt", 0}, {"z", 0}, {"ast", -400}, {"adt", -300},
        {"est", -500}, {"edt", -400}, {"cst", -600}, {"cdt", -500}, {"mst", -700},
        {"mdt", -600}, {"pst", -800}, {"pdt", -700}};
    for (size_t i = 0; i < sizeof(ZONES) / sizeof(ZONES[0]); i++) {
        if (span_ieq(tz.p, tz.n, ZONES[i].name)) {
            *known = 1;
            return ZONES[i].off;
        }
    }
    long v;
    if (py_int(tz, &v)) {
        /* "-0000" means "zone unknown" (RFC 2822 3.3); email leaves it naive. */
        *known = !(v == 0 && tz.p[0] == '-');
        return v;
    }
    *known = 0;
    return 0;
}

static int days_in_month(long y, long m) {
    static const int D[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) return 29;
    return D[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static long days_from_civil(long y, long m, long d) {
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    long yoe = y - era * 400;
    long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(long z, long *y, long *m, long *d) {
    z += 719468;
    long era = (z >= 0 ? z : z - 146096) / 146097;
    long doe = z - era * 146097;
    long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp + (mp < 10 ? 3 : -9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int span_find(span s, uint8_t c) {
    for (size_t i = 0; i < s.n; i++)
        if (s.p[i] == c) return (int)i;
    return -1;
}

static int split_on(span s, uint8_t c, span *parts, int max) {
    int k = 0;
    size_t start = 0;
    for (size_t i = 0; i <= s.n; i++) {
        if (i == s.n || s.p[i] == c) {
            if (k >= max) return max + 1;
            parts[k].p = s.p + start;
            parts[k].n = i - start;
            k++;
            start = i + 1;
        }
    }
    return k;
}

int atlas_parse_date(const uint8_t *v, size_t n, char out[21]) {
    span tok[8];
    int cnt = 0;
    for (size_t i = 0; i < n;) {
        while (i < n && atlas_is_space(v[i])) i++;
        if (i >= n) break;
        size_t s = i;
        while (i < n && !atlas_is_space(v[i])) i++;
        if (cnt < 8) {
            tok[cnt].p = v + s;
            tok[cnt].n = i - s;
        }
        cnt++;
    }
    if (cnt == 0) return 0;
    if (cnt > 8) cnt = 8; /* only the first five tokens are used */
    span *d = tok;
    if (d[0].p[d[0].n - 1] == ',') {
        d++, cnt--;
    } else {
        int day = 0;
        for (int i = 0; i < 7; i++) day |= span_ieq(d[0].p, d[0].n, DAYS[i]);
        if (day) {
            d++, cnt--;
        } else {
            for (size_t i = d[0].n; i-- > 0;) {
                if (d[0].p[i] == ',') {
                    d[0].p += i + 1;
                    d[0].n -= i + 1;
                    break;
                }
            }
        }
    }
    span data[5];
    if (cnt == 3) { /* RFC 850: 01-Jan-02 */
        span parts[3];
        if (split_on(d[0], '-', parts, 3) == 3) {
            data[0] = parts[0], data[1] = parts[1], data[2] = parts[2];
            data[3] = d[1], data[4] = d[2];
            cnt = 5;
            d = data;
        }
    }
    if (cnt == 4) {
        for (int i = 0; i < 4; i++) data[i] = d[i];
        span s = d[3];
        int i = span_find(s, '+');
        if (i == -1) i = span_find(s, '-');
        if (i > 0) {
            data[3].n = (size_t)i;
            data[4].p = s.p + i;
            data[4].n = s.n - (size_t)i;
        } else {
            data[4].p = s.p;
            data[4].n = 0;
        }
        cnt = 5;
        d = data;
    }
    if (cnt < 5) return 0;
    span dd = d[0], mm = d[1], yy = d[2], tm = d[3], tz = d[4], t;
    if (!dd.n || !mm.n || !yy.n) return 0;
    long mon = month_index(mm);
    if (!mon) {
        t = dd, dd = mm, mm = t;
        mon = month_index(mm);
        if (!mon) return 0;
    }
    if (dd.n && dd.p[dd.n - 1] == ',') dd.n--;
    if (span_find(yy, ':') > 0) t = yy, yy = tm, tm = t;
    if (!yy.n) return 0;
    if (yy.p[yy.n - 1] == ',') {
        yy.n--;
        if (!yy.n) return 0;
    }
    if (!(yy.p[0] >= '0' && yy.p[0] <= '9')) t = yy, yy = tz, tz = t;
    if (!tm.n) return 0;
    if (tm.p[tm.n - 1] == ',') tm.n--;
    span hms[3];
    int k = split_on(tm, ':', hms, 3);
    long hh, mi, ss = 0;
    if (k == 1 && span_find(tm, '.') >= 0) k = split_on(tm, '.', hms, 3);
    if (k == 2) {
        hms[2].n = 0;
    } else if (k != 3) {
        return 0;
    }
    long year, day;
    if (!py_int(yy, &year) || !py_int(dd, &day) || !py_int(hms[0], &hh) || !py_int(hms[1], &mi))
        return 0;
    if (k == 3 && !py_int(hms[2], &ss)) return 0;
    if (year < 100) year += year > 68 ? 1900 : 2000;
    int known = 0;
    long off = tz.n ? zone_offset(tz, &known) : 0;
    long off_s = 0;
    if (known && off) {
        long a = off < 0 ? -off : off;
        off_s = (off < 0 ? -1 : 1) * ((a / 100) * 3600 + (a % 100) * 60);
        if (off_s <= -86400 || off_s >= 86400) return 0; /* timezone() refuses it */
    }
    /* datetime() refuses what does not exist; email then has no date. */
    if (year < 1 || year > 9999 || day < 1 || day > days_in_month(year, mon) || hh < 0 ||
        hh > 23 || mi < 0 || mi > 59 || ss < 0 || ss > 59)
        return 0;
    long secs = (days_from_civil(year, mon, day) * 86400L) + hh * 3600 + mi * 60 + ss - off_s;
    long days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    long rem = secs - days * 86400;
    long y, m, dday;
    civil_from_days(days, &y, &m, &dday);
    if (y < 1 || y > 9999) return 0;
    long H = rem / 3600, M = (rem % 3600) / 60, S = rem % 60;
    /* Fixed-width digits by hand: snprintf costs more than the parse. */
    char *o = out;
    o[0] = (char)('0' + y / 1000), o[1] = (char)('0' + y / 100 % 10);
    o[2] = (char)('0' + y / 10 % 10), o[3] = (char)('0' + y % 10), o[4] = '-';
    o[5] = (char)('0' + m / 10), o[6] = (char)('0' + m % 10), o[7] = '-';
    o[8] = (char)('0' + dday / 10), o[9] = (char)('0' + dday % 10), o[10] = 'T';
    o[11] = (char)('0' + H / 10), o[12] = (char)('0' + H % 10), o[13] = ':';
    o[14] = (char)('0' + M / 10), o[15] = (char)('0' + M % 10), o[16] = ':';
    o[17] = (char)('0' + S / 10), o[18] = (char)('0' + S % 10), o[19] = 'Z', o[20] = 0;
    return 1;
}

/* ========================================================================
 * Addresses
 * ======================================================================== */

/* Skip a quoted string starting at s[i] == '"'; returns the index after it. */
static size_t skip_quoted(const uint8_t *s, size_t i, size_t n, atlas_buf *copy) {
    for (i++; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            i++;
            if (copy && atlas_buf_putc(copy, s[i]) < 0) return n;
        } else if (s[i] == '"') {
            return i + 1;
        } else if (copy && atlas_buf_putc(copy, s[i]) < 0) {
            return n;
        }
    }
    return n;
}

/* Skip a (possibly nested) comment starting at s[i] == '('. */
static size_t skip_comment(const uint8_t *s, size_t i, size_t n, size_t *in_start, size_t *in_end) {
    int depth = 0;
    size_t start = i + 1;
    for (; i < n; i++) {
        if (s[i] == '\\') {
            i++;
        } else if (s[i] == '(') {
            depth++;
        } else if (s[i] == ')') {
            if (--depth == 0) {
                if (in_start) *in_start = start, *in_end = i;
                return i + 1;
            }
        }
    }
    if (in_start) *in_start = start, *in_end = n;
    return n;
}

static void trim(const uint8_t *s, size_t *a, size_t *b) {
    while (*a < *b && atlas_is_space(s[*a])) (*a)++;
    while (*b > *a && atlas_is_space(s[*b - 1])) (*b)--;
}

/* The phrase before '<' as a display name: quotes removed, comments dropped. */
static int copy_phrase(atlas_buf *name, const uint8_t *s, size_t a, size_t b) {
    trim(s, &a, &b);
    for (size_t i = a; i < b;) {
        if (s[i] == '"') {
            i = skip_quoted(s, i, b, name);
        } else if (s[i] == '(') {
            i = skip_comment(s, i, b, NULL, NULL);
        } else {
            if (atlas_buf_putc(name, s[i]) < 0) return -1;
            i++;
        }
    }
    /* Dropping a comment can leave blanks at either end. */
    size_t x = 0, y = name->n;
    trim(name->p, &x, &y);
    if (x) memmove(name->p, name->p + x, y - x);
    name->n = y - x;
    return 0;
}

/* email's Address.addr_spec: the local part unquoted, then quoted again only
 * if it needs it; "<>" for an empty address. */
static int normalize_addr(atlas_buf *a) {
    size_t at = a->n, i;
    int inq = 0;
    for (i = 0; i < a->n; i++) {
        if (a->p[i] == '\\') i++;
        else if (a->p[i] == '"') inq = !inq;
        else if (a->p[i] == '@' && !inq) at = i;
    }
    uint8_t local[512];
    size_t ln = 0;
    int special = 0;
    for (i = 0; i < at && i < a->n && ln < sizeof local; i++) {
        uint8_t c = a->p[i];
        if (c == '"') continue;
        if (c == '\\' && i + 1 < at) c = a->p[++i];
        special |= strchr("()<>@,:;\\\"[] \t", c) != NULL && c != 0;
        local[ln++] = c;
    }
    size_t dn = at < a->n ? a->n - at - 1 : 0;
    if (!ln && !dn) {
        a->n = 0;
        return atlas_buf_put(a, "<>", 2);
    }
    uint8_t domain[512];
    if (dn > sizeof domain) dn = sizeof domain;
    memcpy(domain, a->p + at + 1, dn);
    a->n = 0;
    if (special && atlas_buf_putc(a, '"') < 0) return -1;
    for (i = 0; i < ln; i++) {
        if (special && (local[i] == '"' || local[i] == '\\') && atlas_buf_putc(a, '\\') < 0) return -1;
        if (atlas_buf_putc(a, local[i]) < 0) return -1;
    }
    if (special && atlas_buf_putc(a, '"') < 0) return -1;
    if (dn && (atlas_buf_putc(a, '@') < 0 || atlas_buf_put(a, domain, dn) < 0)) return -1;
    return 0;
}

int atlas_parse_address(const uint8_t *s, size_t n, atlas_buf *addr, atlas_buf *name) {
    size_t phrase = 0, i = 0, cstart = 0, cend = 0;
    int have_comment = 0;
    addr->n = name->n = 0;
    while (i <= n) {
        uint8_t c = i < n ? s[i] : ',';
        if (c == '"') {
            i = skip_quoted(s, i, n, NULL);
            continue;
        }
        if (c == '(') {
            size_t a, b;
            i = skip_comment(s, i, n, &a, &b);
            if (!have_comment) cstart = a, cend = b, have_comment = 1;
            continue;
        }
        if (c == '<') {
            size_t a = i + 1, b = a;
            while (b < n && s[b] != '>') {
                if (s[b] == '"') {
                    b = skip_quoted(s, b, n, NULL);
                } else {
                    b++;
                }
            }
            /* An obsolete source route "@a,@b:" comes before the addr-spec. */
            if (a < b && s[a] == '@') {
                for (size_t k = b; k-- > a;) {
                    if (s[k] == ':') {
                        a = k + 1;
                        break;
                    }
                }
            }
            trim(s, &a, &b);
            if (atlas_buf_put(addr, s + a, b - a) < 0) return -1;
            if (copy_phrase(name, s, phrase, i) < 0) return -1;
            if (normalize_addr(addr) < 0) return -1;
            return 1;
        }
        if (c == ':') {
            /* "group: a@b, c@d;" - the group's name is not a mailbox. */
            int at = 0;
            for (size_t k = phrase; k < i; k++) at |= s[k] == '@';
            if (!at) {
                phrase = i + 1;
                have_comment = 0;
            }
            i++;
            continue;
        }
        if (c == ',' || c == ';') {
            /* A bare addr-spec: the phrase without comments and blanks. */
            for (size_t k = phrase; k < i;) {
                if (s[k] == '(') {
                    k = skip_comment(s, k, i, NULL, NULL);
                } else if (s[k] == '"') {
                    size_t e = skip_quoted(s, k, i, NULL);
                    if (atlas_buf_put(addr, s + k, e - k) < 0) return -1;
                    k = e;
                } else if (atlas_is_space(s[k])) {
                    /* Words of an obsolete local part keep one blank. */
                    if (addr->n && addr->p[addr->n - 1] != ' ' && atlas_buf_putc(addr, ' ') < 0)
                        return -1;
                    k++;
                } else {
                    if (atlas_buf_putc(addr, s[k]) < 0) return -1;
                    k++;
                }
            }
            while (addr->n && addr->p[addr->n - 1] == ' ') addr->n--;
            if (addr->n) {
                if (normalize_addr(addr) < 0) return -1;
                if (have_comment) {
                    size_t a = cstart, b = cend;
                    trim(s, &a, &b);
                    if (atlas_buf_put(name, s + a, b - a) < 0) return -1;
                }
                return 1;
            }
            phrase = i + 1;
            have_comment = 0;
            i++;
            continue;
        }
        i++;
    }
    return 0;
}

/* ========================================================================
 * Transfer decoding
 * ======================================================================== */

static const int8_t B64[256] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62,
    -1, -1, -1, 63, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -2, -1, -1, -1, 0,
    1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
    23, 24, 25, -1, -1, -1, -1, -1, -1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38,
    39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1};

int atlas_b64_decode(atlas_buf *out, const uint8_t *src, size_t n, size_t cap) {
    /* binascii.a2b_base64(strict_mode=False): skip what is not in the
     * alphabet, emit bytes as soon as they are complete, stop at the pad that
     * ends a quantum. */
    if (atlas_buf_reserve(out, n / 4 * 3 + 3) < 0) return -1;
    uint8_t *o = out->p + out->n;
    uint8_t *limit = out->p + out->n + ATLAS_MIN(cap, n / 4 * 3 + 3);
    unsigned left = 0;
    int quad = 0, pads = 0;
    for (size_t i = 0; i < n && o < limit; i++) {
        int v = B64[src[i]];
        if (v < 0) {
            if (v == -2 && quad >= 2 && quad + ++pads >= 4) break;
            continue;
        }
        pads = 0;
        switch (quad) {
        case 0: left = (unsigned)v; quad = 1; break;
        case 1: *o++ = (uint8_t)((left << 2) | ((unsigned)v >> 4)); left = (unsigned)v & 0x0f; quad = 2; break;
        case 2: *o++ = (uint8_t)((left << 4) | ((unsigned)v >> 2)); left = (unsigned)v & 0x03; quad = 3; break;
        default: *o++ = (uint8_t)((left << 6) | (unsigned)v); quad = 0; break;
        }
    }
    if (o > limit) o = limit;
    out->n = (size_t)(o - out->p);
    return 0;
}

int atlas_qp_decode(atlas_buf *out, const uint8_t *s, size_t n, size_t cap, int header) {
    if (atlas_buf_reserve(out, n) < 0) return -1;
    uint8_t *o = out->p + out->n;
    const uint8_t *limit = o + ATLAS_MIN(cap, n);
    size_t i = 0;
    if (header) {
        /* RFC 2047 Q: '_' is a space, =XX a byte, anything else literal. */
        for (; i < n && o < limit; i++) {
            int h1, h2;
            if (s[i] == '_') {
                *o++ = ' ';
            } else if (s[i] == '=' && i + 2 < n && (h1 = atlas_hexval(s[i + 1])) >= 0 &&
                       (h2 = atlas_hexval(s[i + 2])) >= 0) {
                *o++ = (uint8_t)(h1 * 16 + h2);
                i += 2;
            } else {
                *o++ = s[i];
            }
        }
    } else {
        /* binascii.a2b_qp(header=False), which quopri.decodestring uses. */
        while (i < n && o < limit) {
            const uint8_t *eq = memchr(s + i, '=', n - i);
            size_t run = eq ? (size_t)(eq - s) - i : n - i;
            if (run > (size_t)(limit - o)) run = (size_t)(limit - o);
            memcpy(o, s + i, run);
            o += run;
            i += run;
            if (i >= n || o >= limit) break;
            i++; /* the '=' */
            if (i >= n) break;
            if (s[i] == '\n' || s[i] == '\r') {
                while (i < n && s[i] != '\n') i++;
                if (i < n) i++;
            } else if (s[i] == '=') {
                *o++ = '=';
                i++;
            } else if (i + 1 < n && atlas_hexval(s[i]) >= 0 && atlas_hexval(s[i + 1]) >= 0) {
                *o++ = (uint8_t)(atlas_hexval(s[i]) * 16 + atlas_hexval(s[i + 1]));
                i += 2;
            } else {
                *o++ = '=';
            }
        }
    }
    out->n = (size_t)(o - out->p);
    return 0;
}

/* ========================================================================
 * URLs in text
 * ======================================================================== */

ATLAS_INLINE int url_stop(uint8_t c) {
    return c <= 0x20 || c >= 0x7f || c == '"' || c == '\'' || c == '<' || c == '>' ||
           c == '`' || c == '{' || c == '}' || c == '|' || c == '\\' || c == '^';
}

ATLAS_INLINE int url_word(uint8_t c) {
    c = atlas_lower(c);
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '/' ||
           c == '@' || c == '-' || c == '_';
}

/* One URL starting at s[a] (scheme or "www."), min_len bytes of prefix. */
static int emit_url(atlas_buf *out, const uint8_t *s, size_t a, size_t n, size_t prefix, size_t *end) {
    size_t e = a + prefix;
    while (e < n && !url_stop(s[e])) e++;
    *end = e;
    /* Sentence punctuation after a URL is not part of it. */
    while (e > a + prefix && strchr(".,;:!?)]*", s[e - 1])) e--;
    if (e <= a + prefix) return 0;
    if (atlas_buf_put(out, s + a, e - a) < 0 || atlas_buf_putc(out, '\n') < 0) return -1;
    return 1;
}

long atlas_find_urls(atlas_buf *out, const uint8_t *s, size_t n) {
    long count = 0;
    size_t i = 0;
    const uint8_t *sch = NULL, *www = NULL;
    int sch_done = 0, www_done = 0;
    while (i < n) {
        /* The next "://" and the next "www.", each searched once per pass. */
        if (!sch_done && (!sch || (size_t)(sch - s) < i)) {
            sch = atlas_find_lit(s + i, n - i, "://", 3);
            if (!sch) sch_done = 1;
        }
        if (!www_done && (!www || (size_t)(www - s) < i)) {
            www = atlas_find_lit(s + i, n - i, "www.", 4);
            if (!www) www_done = 1;
        }
        size_t ps = sch_done ? n : (size_t)(sch - s);
        size_t pw = www_done ? n : (size_t)(www - s);
        if (ps >= n && pw >= n) break;
        size_t end;
        int r;
        if (ps < pw || (ps < n && ps - ATLAS_MIN(ps, 5) <= pw && pw < ps)) {
            /* "://": only http and https count, and only as a whole word. */
            size_t a;
            if (ps >= 5 && span_ieq(s + ps - 5, 5, "https")) {
                a = ps - 5;
            } else if (ps >= 4 && span_ieq(s + ps - 4, 4, "http")) {
                a = ps - 4;
            } else {
                i = ps + 3;
                continue;
            }
            if (a > 0 && url_word(s[a - 1]) && s[a - 1] != '/') {
                i = ps + 3;
                continue;
            }
            r = emit_url(out, s, a, n, ps + 3 - a, &end);
        } else {
            if (pw > 0 && url_word(s[pw - 1])) {
                i = pw + 4;
                continue;
            }
            r = emit_url(out, s, pw, n, 4, &end);
        }
        if (r < 0) return -1;
        count += r;
        i = end > i ? end : i + 1;
    }
    return count;
}

/* ========================================================================
 * MIME parameters
 * ======================================================================== */

typedef struct {
    char ctype[96];
    char charset[48];
    char boundary[256];
    size_t boundary_len;
    char filename[256];
    size_t filename_len;
    int cte;
    int is_attachment;
} entity;

typedef struct {
    const uint8_t *name;
    size_t name_len;
    const uint8_t *val;
    size_t val_len;
    int quoted;
} param;

/* Next `; name=value` after p; NULL when there is none. */
static const uint8_t *next_param(const uint8_t *p, const uint8_t *end, param *out) {
    for (;;) {
        while (p < end && *p != ';') {
            if (*p == '"') {
                p = p + skip_quoted(p, 0, (size_t)(end - p), NULL);
            } else {
                p++;
            }
        }
        if (p >= end) return NULL;
        p++;
        while (p < end && atlas_is_space(*p)) p++;
        const uint8_t *name = p;
        while (p < end && *p != '=' && *p != ';' && !atlas_is_space(*p)) p++;
        out->name = name;
        out->name_len = (size_t)(p - name);
        while (p < end && atlas_is_space(*p)) p++;
        if (p >= end || *p != '=') continue;
        p++;
        while (p < end && atlas_is_space(*p)) p++;
        if (p < end && *p == '"') {
            const uint8_t *q = p + skip_quoted(p, 0, (size_t)(end - p), NULL);
            out->val = p + 1;
            out->val_len = (size_t)(q - p - 1);
            if (q[-1] == '"' && q - 1 > p) out->val_len--;
            out->quoted = 1;
            p = q;
        } else {
            const uint8_t *v = p;
            while (p < end && *p != ';' && !atlas_is_space(*p)) p++;
            out->val = v;
            out->val_len = (size_t)(p - v);
            out->quoted = 0;
        }
        return p;
    }
}

/* Append a parameter value: unquoted, or %XX-decoded for RFC 2231. */
static size_t put_value(char *out, size_t len, size_t cap, const param *pr, int pct, int skip_lang) {
    const uint8_t *v = pr->val, *e = pr->val + pr->val_len;
    if (skip_lang) { /* charset'language'value */
        const uint8_t *q1 = memchr(v, '\'', (size_t)(e - v));
        const uint8_t *q2 = q1 ? memchr(q1 + 1, '\'', (size_t)(e - q1 - 1)) : NULL;
        if (q2) v = q2 + 1;
    }
    for (; v < e && len + 1 < cap; v++) {
        if (pr->quoted && *v == '\\' && v + 1 < e) {
            v++;
        } else if (pct && *v == '%' && e - v >= 3 && atlas_hexval(v[1]) >= 0 &&
                   atlas_hexval(v[2]) >= 0) {
            out[len++] = (char)(atlas_hexval(v[1]) * 16 + atlas_hexval(v[2]));
            v += 2;
            continue;
        }
        out[len++] = (char)*v;
    }
    out[len] = 0;
    return len;
}

/* Parameter `key` of a structured header value, RFC 2231 forms included. */
static size_t get_param(const uint8_t *v, size_t n, const char *key, char *out, size_t cap) {
    size_t klen = strlen(key), plain = 0, ext = 0;
    int have_plain = 0, have_ext = 0;
    char ext_buf[256];
    param pr;
    const uint8_t *p = v, *end = v + n;
    out[0] = 0;
    while ((p = next_param(p, end, &pr)) != NULL) {
        size_t i;
        for (i = 0; i < klen; i++)
            if (i >= pr.name_len || atlas_lower(pr.name[i]) != (uint8_t)key[i]) break;
        if (i < klen) continue;
        if (pr.name_len == klen) {
            if (!have_plain) plain = put_value(out, 0, cap, &pr, 0, 0), have_plain = 1;
            continue;
        }
        if (pr.name[klen] != '*') continue;
        const uint8_t *rest = pr.name + klen + 1, *rend = pr.name + pr.name_len;
        if (rest == rend) { /* key*=charset'lang'%XX */
            ext = put_value(ext_buf, 0, sizeof ext_buf, &pr, 1, 1);
            have_ext = 1;
            continue;
        }
        int starred = rend[-1] == '*';
        int first = rest[0] == '0' && (rest + 1 == rend || (starred && rest + 2 == rend));
        if (!have_ext) ext = 0;
        ext = put_value(ext_buf, ext, sizeof ext_buf, &pr, starred, starred && first);
        have_ext = 1;
    }
    if (have_ext) {
        memcpy(out, ext_buf, ext + 1 < cap ? ext + 1 : cap);
        if (ext >= cap) ext = cap - 1, out[ext] = 0;
        return ext;
    }
    return have_plain ? plain : 0;
}

static void entity_defaults(entity *e, int digest) {
    strcpy(e->ctype, digest ? "message/rfc822" : "text/plain");
    e->charset[0] = e->boundary[0] = e->filename[0] = 0;
    e->boundary_len = e->filename_len = 0;
    e->cte = ATLAS_CTE_IDENTITY;
    e->is_attachment = 0;
}

/* Main token of a structured value, lower-cased into out. */
static size_t main_token(const uint8_t *v, size_t n, char *out, size_t cap) {
    size_t i = 0, k = 0;
    while (i < n && (atlas_is_space(v[i]) || v[i] == '(')) {
        if (v[i] == '(') {
            i = skip_comment(v, i, n, NULL, NULL);
        } else {
            i++;
        }
    }
    while (i < n && v[i] != ';' && v[i] != '(' && !atlas_is_space(v[i]) && k + 1 < cap)
        out[k++] = (char)atlas_lower(v[i++]);
    out[k] = 0;
    return k;
}

size_t atlas_media_type(const uint8_t *v, size_t n, char *out, size_t cap) {
    size_t k = main_token(v, n, out, cap);
    int slashes = 0;
    for (size_t i = 0; i < k; i++) slashes += out[i] == '/';
    if (slashes == 1) return k;
    /* email: anything but exactly one '/' is text/plain. */
    memcpy(out, "text/plain", 11);
    return 10;
}

static int entity_from_headers(atlas_msg *m, const atlas_headers *h, int digest, entity *e) {
    entity_defaults(e, digest);
    int ix = h->first[ATLAS_F_CONTENT_TYPE];
    if (ix >= 0) {
        const atlas_header *hd = &h->items[ix];
        if (atlas_unfold(&m->tmp, hd->val, hd->val_len) < 0) return -1;
        atlas_media_type(m->tmp.p, m->tmp.n, e->ctype, sizeof e->ctype);
        size_t cl = get_param(m->tmp.p, m->tmp.n, "charset", e->charset, sizeof e->charset);
        for (size_t i = 0; i < cl; i++) e->charset[i] = (char)atlas_lower((uint8_t)e->charset[i]);
        while (cl && atlas_is_space((uint8_t)e->charset[cl - 1])) e->charset[--cl] = 0;
        if (!strncmp(e->ctype, "multipart/", 10)) {
            size_t bl = get_param(m->tmp.p, m->tmp.n, "boundary", e->boundary, sizeof e->boundary);
            while (bl && atlas_is_space((uint8_t)e->boundary[bl - 1])) bl--; /* get_boundary().rstrip() */
            e->boundary[bl] = 0;
            e->boundary_len = bl;
        }
        e->filename_len = get_param(m->tmp.p, m->tmp.n, "name", e->filename, sizeof e->filename);
    }
    ix = h->first[ATLAS_F_DISPOSITION];
    if (ix >= 0) {
        const atlas_header *hd = &h->items[ix];
        if (atlas_unfold(&m->tmp, hd->val, hd->val_len) < 0) return -1;
        char t[32];
        main_token(m->tmp.p, m->tmp.n, t, sizeof t);
        e->is_attachment = !strcmp(t, "attachment");
        char fn[256];
        size_t fl = get_param(m->tmp.p, m->tmp.n, "filename", fn, sizeof fn);
        if (fl) memcpy(e->filename, fn, fl + 1), e->filename_len = fl;
    }
    ix = h->first[ATLAS_F_CTE];
    if (ix >= 0) {
        const atlas_header *hd = &h->items[ix];
        if (atlas_unfold(&m->tmp, hd->val, hd->val_len) < 0) return -1;
        char t[32];
        main_token(m->tmp.p, m->tmp.n, t, sizeof t);
        if (!strcmp(t, "base64")) e->cte = ATLAS_CTE_BASE64;
        else if (!strcmp(t, "quoted-printable")) e->cte = ATLAS_CTE_QP;
    }
    return 0;
}

/* ========================================================================
 * Header-value tokens for the model
 *
 * A few headers that the author's mail program writes say which program
 * that was, whatever the text says: the charset and the shape of the MIME
 * boundary ("----=_NextPart_000_0000_01C2..." from Outlook, random runs from
 * bulk tools), priority flags, Precedence, MIME-Version and the transfer
 * encoding.  None is a relay's or a mail client's export stamp.
 * ======================================================================== */

/* Digits -> '9', upper-case -> 'A', lower-case and non-ASCII -> 'a', each
 * run of one class kept once; other bytes as they are. */
static size_t char_shape(const uint8_t *s, size_t n, char *out, size_t cap) {
    size_t k = 0;
    char last = 0;
    for (size_t i = 0; i < n && k < cap; i++) {
        uint8_t c = s[i];
        char t = (c >= '0' && c <= '9') ? '9' : (c >= 'A' && c <= 'Z') ? 'A'
                 : ((c >= 'a' && c <= 'z') || c >= 128) ? 'a' : (char)c;
        if ((t == '9' || t == 'A' || t == 'a') && t == last) continue;
        last = t;
        out[k++] = t;
    }
    return k;
}

/* atlas_header_tokens dispatches on these names' lengths and indices. */
static const char *const VALUE_HEADERS[] = {
    "x-priority", "x-msmail-priority", "importance", "precedence", "mime-version",
    "content-transfer-encoding",
};
#define N_VALUE_HEADERS (sizeof VALUE_HEADERS / sizeof VALUE_HEADERS[0])
#define VALUE_CAP 20

static int tok_put(atlas_buf *out, const char *s, size_t n) {
    if (atlas_buf_reserve(out, n + 1) < 0) return -1;
    memcpy(out->p + out->n, s, n);
    out->n += n;
    out->p[out->n++] = '\n';
    return 0;
}

int atlas_header_tokens(const atlas_headers *h, atlas_buf *tmp, atlas_buf *out) {
    char line[96], val[256];
    size_t k, n;
    unsigned seen = 0;
    out->n = 0;
    int ix = h->first[ATLAS_F_CONTENT_TYPE];
    if (ix >= 0) {
        const atlas_header *hd = &h->items[ix];
        if (atlas_unfold(tmp, hd->val, hd->val_len) < 0) return -1;
        n = get_param(tmp->p, tmp->n, "charset", val, 48);
        while (n && atlas_is_space((uint8_t)val[n - 1])) n--;
        if (n == 0) memcpy(val, "none", 4), n = 4;
        memcpy(line, "charset:", 8);
        for (k = 0; k < n; k++) line[8 + k] = (char)atlas_lower((uint8_t)val[k]);
        if (tok_put(out, line, 8 + n) < 0) return -1;
        n = get_param(tmp->p, tmp->n, "boundary", val, sizeof val);
        if (n) {
            memcpy(line, "bnd_shape:", 10);
            k = char_shape((const uint8_t *)val, n, line + 10, 16);
            if (tok_put(out, line, 10 + k) < 0) return -1;
        }
    }
    for (size_t i = 0; i < h->n; i++) {
        const atlas_header *hd = &h->items[i];
        size_t j;
        /* Dispatch on the length first: almost every name fails there. */
        if (hd->field == ATLAS_F_CTE) {
            j = 5;
        } else if (hd->field >= 0) {
            continue;
        } else if (hd->name_len == 10) {
            j = span_ieq(hd->name, 10, VALUE_HEADERS[0]) ? 0
                : span_ieq(hd->name, 10, VALUE_HEADERS[2]) ? 2
                : span_ieq(hd->name, 10, VALUE_HEADERS[3]) ? 3 : N_VALUE_HEADERS;
        } else if (hd->name_len == 17) {
            j = span_ieq(hd->name, 17, VALUE_HEADERS[1]) ? 1 : N_VALUE_HEADERS;
        } else if (hd->name_len == 12) {
            j = span_ieq(hd->name, 12, VALUE_HEADERS[4]) ? 4 : N_VALUE_HEADERS;
        } else {
            continue;
        }
        if (j == N_VALUE_HEADERS || (seen & (1u << j))) continue;
        seen |= 1u << j;
        if (atlas_unfold(tmp, hd->val, hd->val_len) < 0) return -1;
        /* Lower-cased, blanks squeezed and trimmed, at most VALUE_CAP bytes. */
        n = strlen(VALUE_HEADERS[j]);
        memcpy(line, VALUE_HEADERS[j], n);
        line[n++] = '=';
        size_t start = n, v = 0;
        int blank = 0;
        while (v < tmp->n && atlas_is_space(tmp->p[v])) v++;
        for (; v < tmp->n && n - start < VALUE_CAP; v++) {
            uint8_t c = tmp->p[v];
            if (atlas_is_space(c)) { blank = 1; continue; }
            if (blank) {
                line[n++] = ' ';
                blank = 0;
                if (n - start >= VALUE_CAP) break;
            }
            line[n++] = (char)atlas_lower(c);
        }
        if (n > start && tok_put(out, line, n) < 0) return -1;
    }
    return 0;
}

/* ========================================================================
 * MIME walk
 * ======================================================================== */

static void set_error(atlas_msg *m, int code) {
    if (!m->error) m->error = code;
}

static int push_part(atlas_msg *m, const entity *e, const uint8_t *body, size_t n) {
    if (m->n_parts == m->cap_parts) {
        size_t cap = m->cap_parts ? m->cap_parts * 2 : 8;
        atlas_part *parts = (atlas_part *)realloc(m->parts, cap * sizeof(*parts));
        if (!parts) return -1;
        m->parts = parts;
        m->cap_parts = cap;
    }
    atlas_part *p = &m->parts[m->n_parts++];
    memcpy(p->ctype, e->ctype, sizeof p->ctype);
    memcpy(p->charset, e->charset, sizeof p->charset);
    memcpy(p->filename, e->filename, e->filename_len + 1);
    p->filename_len = e->filename_len;
    p->cte = e->cte;
    p->is_attachment = e->is_attachment;
    p->body = body;
    p->body_len = n;
    return 0;
}

/* Next boundary line (feedparser's boundaryre) at or after p. */
static const uint8_t *find_boundary(const uint8_t *start, const uint8_t *p, const uint8_t *end,
                                    const uint8_t *dl, size_t dlen, int *closing,
                                    const uint8_t **after) {
    while (p < end) {
        const uint8_t *q = memmem(p, (size_t)(end - p), dl, dlen);
        if (!q) return NULL;
        p = q + 1;
        if (q != start && q[-1] != '\n') continue;
        const uint8_t *r = q + dlen;
        int close = 0;
        if (end - r >= 2 && r[0] == '-' && r[1] == '-') r += 2, close = 1;
        while (r < end && atlas_is_wsp(*r)) r++;
        if (r < end && *r == '\r') r++;
        if (r < end && *r != '\n') continue;
        *closing = close;
        *after = r < end ? r + 1 : end;
        return q;
    }
    return NULL;
}

static int walk(atlas_msg *m, const atlas_headers *h, const uint8_t *body, size_t n, int depth,
                int digest);

/* A multipart body that cannot be split (no boundary parameter, or no line
 * carries the delimiter: "--= Multipart Boundary" for "=Multipart Boundary")
 * is kept whole as one text/plain leaf, so its words still reach the text
 * instead of vanishing; the error still names the defect.  email keeps such
 * a body as the multipart's string payload in the same way. */
static int push_unsplit(atlas_msg *m, entity *e, const uint8_t *body, size_t n) {
    strcpy(e->ctype, "text/plain");
    e->boundary[0] = 0;
    e->boundary_len = 0;
    return push_part(m, e, body, n);
}

static int walk_child(atlas_msg *m, const uint8_t *p, size_t n, int depth, int digest) {
    if (atlas_headers_parse(&m->scratch, p, n) < 0) return -1;
    /* A part without headers is common and harmless; only size is an error. */
    if (m->scratch.error == ATLAS_ERR_HEADER_TOO_LARGE) set_error(m, ATLAS_ERR_HEADER_TOO_LARGE);
    return walk(m, &m->scratch, m->scratch.body, m->scratch.body_len, depth, digest);
}

static int walk(atlas_msg *m, const atlas_headers *h, const uint8_t *body, size_t n, int depth,
                int digest) {
    entity e;
    if (++m->n_entities > ATLAS_MAX_PARTS) {
        set_error(m, ATLAS_ERR_MIME_PARTS);
        return 0;
    }
    if (entity_from_headers(m, h, digest, &e) < 0) return -1;
    if (!strncmp(e.ctype, "multipart/", 10)) {
        if (!e.boundary_len) {
            set_error(m, ATLAS_ERR_NO_BOUNDARY);
            return push_unsplit(m, &e, body, n);
        }
        if (depth + 1 > ATLAS_MAX_DEPTH) {
            set_error(m, ATLAS_ERR_MIME_DEPTH);
            return 0;
        }
        uint8_t dl[260];
        dl[0] = dl[1] = '-';
        memcpy(dl + 2, e.boundary, e.boundary_len);
        size_t dlen = e.boundary_len + 2;
        int child_digest = !strcmp(e.ctype, "multipart/digest");
        const uint8_t *end = body + n, *scan = body, *part = NULL, *after;
        int closing = 0, closed = 0;
        for (;;) {
            const uint8_t *q = find_boundary(body, scan, end, dl, dlen, &closing, &after);
            if (!q) break;
            if (part) {
                const uint8_t *pe = q;
                /* The line break before a boundary belongs to the boundary. */
                if (pe > part && pe[-1] == '\n') pe--;
                if (pe > part && pe[-1] == '\r') pe--;
                if (pe < part) pe = part;
                if (walk_child(m, part, (size_t)(pe - part), depth + 1, child_digest) < 0) return -1;
                if (m->n_entities > ATLAS_MAX_PARTS) return 0;
            }
            if (closing) {
                closed = 1;
                break;
            }
            part = after;
            scan = after;
        }
        if (!closed) {
            if (!part) {
                set_error(m, ATLAS_ERR_NO_BOUNDARY);
                return push_unsplit(m, &e, body, n);
            }
            set_error(m, ATLAS_ERR_UNTERMINATED);
            if (walk_child(m, part, (size_t)(end - part), depth + 1, child_digest) < 0) return -1;
        }
        return 0;
    }
    if (!strncmp(e.ctype, "message/", 8) && strcmp(e.ctype, "message/delivery-status") != 0) {
        /* Like email: an attached message is parsed and walked, so its text
         * parts are the message's text parts too. */
        if (depth + 1 > ATLAS_MAX_DEPTH) {
            set_error(m, ATLAS_ERR_MIME_DEPTH);
            return 0;
        }
        return walk_child(m, body, n, depth + 1, 0);
    }
    return push_part(m, &e, body, n);
}

void atlas_msg_init(atlas_msg *m) { memset(m, 0, sizeof *m); }

void atlas_msg_free(atlas_msg *m) {
    free(m->top.items);
    free(m->scratch.items);
    free(m->parts);
    atlas_buf_free(&m->tmp);
    memset(m, 0, sizeof *m);
}

int atlas_msg_parse(atlas_msg *m, const uint8_t *p, size_t n) {
    m->n_parts = 0;
    m->n_entities = 0;
    m->error = ATLAS_OK;
    size_t i = 0;
    while (i < n && atlas_is_space(p[i])) i++;
    if (i == n) {
        m->error = ATLAS_ERR_EMPTY;
        m->top.n = 0;
        for (int k = 0; k < ATLAS_F_COUNT; k++) m->top.first[k] = -1;
        m->top.header_bytes = 0;
        m->top.body = p + n;
        m->top.body_len = 0;
        return 0;
    }
    if (atlas_headers_parse(&m->top, p, n) < 0) return -1;
    m->error = m->top.error;
    if (!m->error && memchr(p, 0, m->top.header_bytes)) m->error = ATLAS_ERR_NUL;
    return walk(m, &m->top, m->top.body, m->top.body_len, 0, 0);
}
