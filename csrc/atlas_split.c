/* mbox boundary scan.
 *
 * The scan is memmem() for "\nFrom " (glibc's is vectorised) plus a check of
 * the one or two bytes before it.  It never looks at a byte twice and never
 * allocates, so the splitter runs at memory bandwidth. */
#define _GNU_SOURCE
#include <string.h>

#include "atlas_split.h"

static const char ATLAS_FROM_NL[] = "\nFrom ";

/* ------------------------------------------------------------------------ */
/* Boundary test                                                            */
/* ------------------------------------------------------------------------ */

/* nl is the index of the '\n' that ends the line before "From ".  That line
 * must be empty: the byte before nl is '\n' (LF file), or "\n\r" (CRLF). */
static inline int atlas_after_empty_line(const unsigned char *buf, size_t begin,
                                         size_t nl)
{
    if (nl >= begin + 1 && buf[nl - 1] == '\n')
        return 1;
    if (nl >= begin + 2 && buf[nl - 1] == '\r' && buf[nl - 2] == '\n')
        return 1;
    return 0;
}

size_t atlas_split_scan(const unsigned char *buf, size_t begin, size_t end,
                        int stream_start, int64_t *out, size_t max,
                        size_t *resume)
{
    size_t n = 0;
    size_t pos = begin;

    if (max == 0) {
        *resume = begin;
        return 0;
    }
    if (begin == 0 && stream_start && end >= 5 && memcmp(buf, "From ", 5) == 0) {
        out[n++] = 0;
        pos = 1;
    }
    while (pos + 6 <= end) {
        const unsigned char *hit =
            memmem(buf + pos, end - pos, ATLAS_FROM_NL, sizeof(ATLAS_FROM_NL) - 1);
        if (hit == NULL)
            break;
        size_t nl = (size_t)(hit - buf);
        /* The empty line may sit before `begin` only if begin is a message
         * start, and then "From " is at begin, not after it: look back only
         * inside [begin, ...). */
        if (atlas_after_empty_line(buf, begin, nl)) {
            out[n++] = (int64_t)(nl + 1);
            if (UNLIKELY(n == max)) {
                *resume = nl + 1;
                return n;
            }
        }
        pos = nl + 1;
    }
    /* A "\nFrom " may straddle `end`; the caller rescans from here. */
    *resume = end >= 5 ? (end - 5 > pos ? end - 5 : pos) : pos;
    return n;
}

int atlas_split_sniff(const unsigned char *buf, size_t len, int64_t *first)
{
    size_t i = 0, resume = 0;
    int64_t start = -1;

    *first = -1;
    while (i < len && (buf[i] == '\n' || buf[i] == '\r'))
        i++;
    if (len - i >= 5 && memcmp(buf + i, "From ", 5) == 0) {
        *first = (int64_t)i;
        return 1;
    }
    if (atlas_split_scan(buf, 0, len, 0, &start, 1, &resume) == 1) {
        *first = start;
        return 1;
    }
    return 0;
}
