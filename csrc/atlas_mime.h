/* atlas_mime.h: RFC 5322 / MIME message scanning in plain C.
 *
 * Everything here works on byte spans of a buffer the caller owns and never
 * touches the Python API, so atlas_fast._parser can run it with the GIL
 * released.  Charset conversion is the one step left to the caller: it needs
 * Python's codec registry.
 */
#ifndef ATLAS_MIME_H
#define ATLAS_MIME_H

#include "common.h"

/* ------------------------------------------------------------------------
 * Limits.  A message beyond them is reported, never crashed on.
 * ------------------------------------------------------------------------ */
#define ATLAS_HEADER_CAP (1u << 20)   /* bytes of one header block */
#define ATLAS_MAX_DEPTH 32            /* nesting of multipart / message parts */
#define ATLAS_MAX_PARTS 1000          /* MIME entities per message */
#define ATLAS_TEXT_CAP (1u << 20)     /* decoded bytes kept per text part */

/* Error codes; atlas_error_name() gives the short reason stored in `error`. */
enum {
    ATLAS_OK = 0,
    ATLAS_ERR_EMPTY,
    ATLAS_ERR_NO_SEPARATOR,
    ATLAS_ERR_HEADER_TOO_LARGE,
    ATLAS_ERR_MIME_DEPTH,
    ATLAS_ERR_MIME_PARTS,
    ATLAS_ERR_UNTERMINATED,
    ATLAS_ERR_NO_BOUNDARY,
    ATLAS_ERR_NUL,
    ATLAS_ERR_COUNT
};
const char *atlas_error_name(int code);

/* Header fields the parser looks up by name (case-insensitive). */
enum {
    ATLAS_F_MESSAGE_ID,
    ATLAS_F_FROM,
    ATLAS_F_TO,
    ATLAS_F_REPLY_TO,
    ATLAS_F_RETURN_PATH,
    ATLAS_F_SUBJECT,
    ATLAS_F_DATE,
    ATLAS_F_CONTENT_TYPE,
    ATLAS_F_X_MAILER,
    ATLAS_F_USER_AGENT,
    ATLAS_F_AUTH_RESULTS,
    ATLAS_F_RECEIVED_SPF,
    ATLAS_F_RECEIVED,
    ATLAS_F_CTE,
    ATLAS_F_DISPOSITION,
    ATLAS_F_COUNT
};

typedef struct {
    const uint8_t *name;   /* as written, before the colon */
    size_t name_len;
    const uint8_t *val;    /* after the colon, folds included, no final EOL */
    size_t val_len;
    int field;             /* ATLAS_F_* or -1 */
} atlas_header;

typedef struct {
    atlas_header *items;
    size_t n, cap;
    int first[ATLAS_F_COUNT];  /* index of the first header of a field, -1 */
    size_t header_bytes;       /* bytes of the header block incl. blank line */
    const uint8_t *body;
    size_t body_len;
    int error;                 /* ATLAS_ERR_* of the header block */
} atlas_headers;

/* Content-Transfer-Encoding. */
enum { ATLAS_CTE_IDENTITY = 0, ATLAS_CTE_QP, ATLAS_CTE_BASE64 };

/* One leaf of the MIME tree. */
typedef struct {
    char ctype[96];        /* lower-cased type/subtype */
    char charset[48];      /* lower-cased charset parameter, "" if absent */
    char filename[256];    /* Content-Disposition filename or CT name, raw */
    size_t filename_len;
    int cte;
    int is_attachment;     /* Content-Disposition: attachment */
    const uint8_t *body;
    size_t body_len;
} atlas_part;

typedef struct {
    atlas_headers top;     /* headers of the message itself */
    atlas_headers scratch; /* headers of the part being looked at */
    atlas_part *parts;     /* leaves in document order */
    size_t n_parts, cap_parts;
    int n_entities;
    int error;             /* first ATLAS_ERR_* met anywhere */
    atlas_buf tmp;         /* unfolding scratch */
} atlas_msg;

void atlas_msg_init(atlas_msg *m);
void atlas_msg_free(atlas_msg *m);

/* Parse one message (no mbox envelope): headers and the MIME tree.
 * Returns 0, or -1 when out of memory. */
int atlas_msg_parse(atlas_msg *m, const uint8_t *p, size_t n);

/* Parse a header block at p; fills h (body = what follows).  -1 on OOM. */
int atlas_headers_parse(atlas_headers *h, const uint8_t *p, size_t n);

/* Unfold a header value the way email.policy does: strip leading blanks of
 * the first line, delete CR and LF.  Writes into out (cleared first). */
int atlas_unfold(atlas_buf *out, const uint8_t *v, size_t n);

/* Date -> "YYYY-MM-DDTHH:MM:SSZ" (21 bytes incl. NUL); 1 if parsed, else 0. */
int atlas_parse_date(const uint8_t *v, size_t n, char out[21]);

/* Address extraction from an unfolded From/To/Reply-To value.
 * addr: the first mailbox's addr-spec (not yet lower-cased);
 * name: the display name (quotes removed, still RFC 2047 encoded).
 * Spans point into v or into the buffers given.  Returns 1 if an address
 * was found. */
int atlas_parse_address(const uint8_t *v, size_t n, atlas_buf *addr, atlas_buf *name);

/* Lower-cased type/subtype of a Content-Type value (email's rule: anything
 * but exactly one '/' is text/plain); NUL-terminated, returns its length. */
size_t atlas_media_type(const uint8_t *v, size_t n, char *out, size_t cap);

/* Transfer decoders: append to out. */
int atlas_b64_decode(atlas_buf *out, const uint8_t *src, size_t n, size_t cap);
int atlas_qp_decode(atlas_buf *out, const uint8_t *src, size_t n, size_t cap, int header);

/* URL finder over text: appends each URL to out followed by '\n' and returns
 * the number found (or -1 on OOM). */
long atlas_find_urls(atlas_buf *out, const uint8_t *s, size_t n);

/* Model tokens of selected header values ("charset:utf-8", "bnd_shape:----=_Aa9",
 * "x-priority=3 (normal)"), each followed by '\n', into out (cleared first);
 * tmp is unfolding scratch.  -1 on OOM. */
int atlas_header_tokens(const atlas_headers *h, atlas_buf *tmp, atlas_buf *out);

/* 1 if no byte has the high bit set. */
int atlas_is_ascii(const uint8_t *s, size_t n);
/* Does s hold a byte 0x80-0x9F (a C1 control in Latin-1)? */
int atlas_has_c1(const uint8_t *s, size_t n);

#endif /* ATLAS_MIME_H */
