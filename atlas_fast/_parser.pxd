# Declarations of the compiled message parser (see _parser.pyx).

cdef class ParsedMessage:
    # Header fields, decoded (RFC 2047) and unfolded; None when absent.
    cdef public object message_id      # str, angle brackets kept as in the header
    cdef public object from_addr       # str, lower-cased addr-spec
    cdef public object from_domain     # str, lower-cased domain of from_addr
    cdef public object from_name       # str, decoded display name
    cdef public object to_addr         # str, first To address, lower-cased
    cdef public object reply_to_addr   # str, lower-cased
    cdef public object return_path     # str, lower-cased, no angle brackets
    cdef public object subject         # str
    cdef public object date            # str, ISO 8601 UTC "YYYY-MM-DDTHH:MM:SSZ"
    cdef public object content_type    # str, top-level type/subtype lower-cased
    cdef public object x_mailer        # str (X-Mailer or User-Agent)
    cdef public object auth_results    # str, Authentication-Results values joined by "\n"
    cdef public object received_spf    # str, first Received-SPF value
    cdef public list received          # list[str], unfolded Received values, top first
    cdef public list header_names      # list[str], lower-cased names in order
    # Body.
    cdef public object plain           # str | None, first text/plain part decoded
    cdef public object text            # str, classifier text: plain, else HTML as text
    cdef public bint has_html
    cdef public bint html_only
    cdef public list urls              # list[str], at most MAX_URLS, in order
    cdef public list attachments       # list[tuple[str, str]]: (filename, content type)
    cdef public int n_parts
    cdef public int n_attachments
    cdef public int n_urls
    cdef public int n_headers
    cdef public long long header_bytes
    cdef public object error           # str | None: short reason, e.g. "mime depth limit"
    # Added fields (appended: the ones above keep their meaning).
    cdef public object date_raw        # str | None, the Date header as written (unfolded)
    cdef public object received_date   # str | None, ISO UTC time of the newest Received hop
    cdef public list header_tokens     # list[str]: the model's tokens of selected header values,
                                       # "charset:utf-8", "bnd_shape:----=_Aa9", "x-priority=3"

cpdef list parse_chunk(const unsigned char[::1] buf, const long long[::1] starts, const long long[::1] ends)
cpdef ParsedMessage parse_message(const unsigned char[::1] raw)


# ---------------------------------------------------------------------------
# csrc/ declarations (plain C, callable without the GIL).  Added for the
# implementation; the names above are the contract other modules code against.
# ---------------------------------------------------------------------------
from libc.stdint cimport uint8_t, uint64_t

cdef extern from "common.h" nogil:
    ctypedef struct atlas_buf:
        uint8_t *p
        size_t n
        size_t cap
    int atlas_buf_reserve(atlas_buf *b, size_t extra)
    void atlas_buf_free(atlas_buf *b)
    uint8_t atlas_lower(uint8_t c)
    uint64_t atlas_fold8(uint64_t w)

cdef extern from "atlas_mime.h" nogil:
    enum:
        ATLAS_TEXT_CAP
        ATLAS_ERR_EMPTY
        ATLAS_CTE_IDENTITY
        ATLAS_CTE_QP
        ATLAS_CTE_BASE64
        ATLAS_F_MESSAGE_ID
        ATLAS_F_FROM
        ATLAS_F_TO
        ATLAS_F_REPLY_TO
        ATLAS_F_RETURN_PATH
        ATLAS_F_SUBJECT
        ATLAS_F_DATE
        ATLAS_F_CONTENT_TYPE
        ATLAS_F_X_MAILER
        ATLAS_F_USER_AGENT
        ATLAS_F_AUTH_RESULTS
        ATLAS_F_RECEIVED_SPF
        ATLAS_F_RECEIVED
    ctypedef struct atlas_header:
        const uint8_t *name
        size_t name_len
        const uint8_t *val
        size_t val_len
        int field
    ctypedef struct atlas_headers:
        atlas_header *items
        size_t n
        int *first
        size_t header_bytes
        const uint8_t *body
        size_t body_len
        int error
    ctypedef struct atlas_part:
        char *ctype
        char *charset
        char *filename
        size_t filename_len
        int cte
        int is_attachment
        const uint8_t *body
        size_t body_len
    ctypedef struct atlas_msg:
        atlas_headers top
        atlas_part *parts
        size_t n_parts
        int error
    const char *atlas_error_name(int code)
    void atlas_msg_init(atlas_msg *m)
    void atlas_msg_free(atlas_msg *m)
    int atlas_msg_parse(atlas_msg *m, const uint8_t *p, size_t n)
    int atlas_unfold(atlas_buf *out, const uint8_t *v, size_t n)
    int atlas_parse_date(const uint8_t *v, size_t n, char *out)
    int atlas_parse_address(const uint8_t *v, size_t n, atlas_buf *addr, atlas_buf *name)
    size_t atlas_media_type(const uint8_t *v, size_t n, char *out, size_t cap)
    int atlas_b64_decode(atlas_buf *out, const uint8_t *src, size_t n, size_t cap)
    int atlas_qp_decode(atlas_buf *out, const uint8_t *src, size_t n, size_t cap, int header)
    long atlas_find_urls(atlas_buf *out, const uint8_t *s, size_t n)
    int atlas_is_ascii(const uint8_t *s, size_t n)
    int atlas_has_c1(const uint8_t *s, size_t n)
    int atlas_header_tokens(const atlas_headers *h, atlas_buf *tmp, atlas_buf *out)

cdef extern from "atlas_html.h" nogil:
    int atlas_html_to_text(const uint8_t *s, size_t n, atlas_buf *text, atlas_buf *urls, long *n_urls)
