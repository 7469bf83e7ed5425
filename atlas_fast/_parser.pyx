# cython: freethreading_compatible = False
"""Compiled message parser: raw RFC 5322 / MIME bytes to :class:`ParsedMessage`.

The scanning (header block, MIME tree, transfer decoding, HTML to text, URL
finding, dates) is C in ``csrc/atlas_mime.c`` and ``csrc/atlas_html.c`` and
runs without the GIL.  This module turns its spans into Python objects; the
one thing it asks Python for is charset conversion (the codec registry).

Choices worth knowing:

* ``message/*`` parts (except ``message/delivery-status``) are parsed and
  walked like ``email`` does, so a forwarded message's text parts count.
* ``plain`` is the first ``text/plain`` leaf whose Content-Disposition is not
  ``attachment`` (``email``'s ``is_attachment()``); a missing charset is read
  as UTF-8 with replacement (``email`` reads ASCII: the two only differ where
  the bytes are valid UTF-8).
* An attachment (counted, never decoded) is a leaf with disposition
  ``attachment``, or a filename, or a type that is not ``text/*``.
* ``urls``: URLs of ``plain``, then href/src targets of the first HTML part,
  then URLs in that part's text; de-duplicated in order, at most
  ``MAX_URLS``.  ``n_urls`` counts every occurrence before de-duplication.
* A multipart whose body cannot be split (no boundary parameter, or no
  delimiter line matches it) is one text/plain leaf with its whole body;
  ``error`` says "multipart boundary not found".
* Charset labels are read as the WHATWG Encoding Standard reads them where
  mail needs it: Latin-1 labels as windows-1252 at bytes 0x80-0x9F, gb2312
  and gbk as gb18030, euc-kr as cp949, big5 as big5-hkscs.
* NUL bytes are data.  ``error`` is "nul bytes" only when the header block
  holds one (and nothing worse happened).
"""
from cpython.unicode cimport (
    PyUnicode_AsUTF8AndSize,
    PyUnicode_Decode,
    PyUnicode_DecodeCharmap,
    PyUnicode_DecodeASCII,
    PyUnicode_DecodeLatin1,
    PyUnicode_DecodeUTF8,
)
from libc.stdint cimport uint8_t, uint64_t
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from libc.string cimport memchr, memcmp, memcpy, memset, strcmp, strlen

cdef extern from "Python.h":
    int PyUnicode_KIND(object s)
    int PyUnicode_1BYTE_KIND
    # PyUnicode_AsUTF8AndSize, NULL with an exception set when the str
    # holds what UTF-8 cannot carry.
    const char *PyUnicode_AsUTF8AndSize_or_null "PyUnicode_AsUTF8AndSize"(object s,
                                                                        Py_ssize_t *size)
    void PyErr_Clear()

import codecs
import re

DEF_MAX_URLS = 64
MAX_URLS = DEF_MAX_URLS
# Re-exported for callers that report limits.
TEXT_CAP = ATLAS_TEXT_CAP

cdef const uint8_t *EMPTY = <const uint8_t *>b""


cdef class ParsedMessage:
    """One parsed message; see ``_parser.pxd`` for the fields."""

    def __cinit__(self):
        self.received = []
        self.header_names = []
        self.urls = []
        self.attachments = []
        self.header_tokens = []
        self.text = ""

    def __repr__(self):
        return (f"ParsedMessage(from_addr={self.from_addr!r}, subject={self.subject!r}, "
                f"date={self.date!r}, n_parts={self.n_parts}, error={self.error!r})")


# ===========================================================================
# Scratch buffers, reused for every message of a chunk
# ===========================================================================

cdef struct Scratch:
    atlas_msg msg
    atlas_buf unf     # an unfolded header value
    atlas_buf addr
    atlas_buf name
    atlas_buf dec     # transfer-decoded part body
    atlas_buf html    # HTML as text
    atlas_buf urls    # URLs, '\n'-terminated
    atlas_buf toks    # header-value tokens, '\n'-terminated


cdef void scratch_init(Scratch *sc) noexcept nogil:
    memset(sc, 0, sizeof(Scratch))
    atlas_msg_init(&sc.msg)


cdef void scratch_free(Scratch *sc) noexcept nogil:
    atlas_msg_free(&sc.msg)
    atlas_buf_free(&sc.unf)
    atlas_buf_free(&sc.addr)
    atlas_buf_free(&sc.name)
    atlas_buf_free(&sc.dec)
    atlas_buf_free(&sc.html)
    atlas_buf_free(&sc.urls)
    atlas_buf_free(&sc.toks)


# ===========================================================================
# Bytes to str
# ===========================================================================

# charset name (bytes, lower-cased) -> encoding name for PyUnicode_Decode
# (bytes), or None for a charset Python does not know.
cdef dict _codec_cache = {}


# Mail programs label text with the old standard's name and write its
# vendor superset (Windows code pages); decoding with the superset turns
# those extra characters into text instead of U+FFFD and changes nothing
# else.  These are the WHATWG Encoding Standard's readings of the labels
# (it reads "ks_c_5601-1987", which Python calls EUC-KR, as windows-949 too).
cdef dict _SUPERSETS = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "euc_kr": "cp949",
    "big5": "big5hkscs",
}


# Text codecs of Python's that no mail charset label names: read as unknown.
cdef frozenset _NOT_CHARSETS = frozenset({
    "unicode-escape", "raw-unicode-escape", "punycode", "idna", "undefined",
})


cdef object _codec_for(const char *charset):
    key = <bytes>charset
    try:
        return _codec_cache[key]
    except KeyError:
        pass
    name = None
    try:
        info = codecs.lookup(key.decode("ascii"))
        # Only text encodings ("base64" or "rot13" as a charset is junk),
        # and only charsets: Python's own escape and IDNA codecs are not
        # (unicode_escape turned '\\ud800' into a lone surrogate and warned
        # about every other backslash).
        if getattr(info, "_is_text_encoding", True) and info.name not in _NOT_CHARSETS:
            name = _SUPERSETS.get(info.name, info.name).encode("ascii")
    except (LookupError, UnicodeError, ValueError):
        pass
    if len(_codec_cache) < 1024:  # junk charsets must not grow it forever
        _codec_cache[key] = name
    return name


# Latin-1 with windows-1252 at 0x80-0x9F: a 256-character decoding table
# for PyUnicode_DecodeCharmap (one table load per byte, no per-character
# lookups); its five unassigned bytes stay the C1 code points, as in the
# WHATWG mapping.
cdef str _CP1252_TABLE = "".join(
    bytes([c]).decode("cp1252", "ignore") or chr(c) for c in range(256))


cdef str latin1_text(const uint8_t *p, Py_ssize_t n):
    if atlas_has_c1(p, n):
        # Mail labelled Latin-1 is written on Windows: 0x80-0x9F are its
        # quotes, dashes and euro sign, never C1 controls (the WHATWG
        # Encoding Standard reads the label as windows-1252 too).
        return PyUnicode_DecodeCharmap(<const char *>p, n, _CP1252_TABLE, NULL)
    return PyUnicode_DecodeLatin1(<const char *>p, n, NULL)


cdef str text_from_bytes(const uint8_t *p, Py_ssize_t n, const char *charset):
    """Decode with the given charset, replacing what does not decode; an
    unknown charset is read as UTF-8 (with replacement)."""
    if charset[0] == 0 or strcmp(charset, "utf-8") == 0 or strcmp(charset, "utf8") == 0:
        return PyUnicode_DecodeUTF8(<const char *>p, n, "replace")
    if strcmp(charset, "us-ascii") == 0 or strcmp(charset, "ascii") == 0:
        return PyUnicode_DecodeASCII(<const char *>p, n, "replace")
    if strcmp(charset, "iso-8859-1") == 0 or strcmp(charset, "latin1") == 0:
        return latin1_text(p, n)
    name = _codec_for(charset)
    if name is None:
        return PyUnicode_DecodeUTF8(<const char *>p, n, "replace")
    if name == b"iso8859-1":  # "latin-1", "iso_8859-1", "l1", ...
        return latin1_text(p, n)
    try:
        text = PyUnicode_Decode(<const char *>p, n, <const char *>(<bytes>name), "replace")
    except (UnicodeError, TypeError, ValueError, LookupError):
        return PyUnicode_DecodeUTF8(<const char *>p, n, "replace")
    return _no_surrogates(text)


_SURROGATE = re.compile(r"[\ud800-\udfff]")


cdef str _no_surrogates(str text):
    """``text`` with each lone surrogate as U+FFFD.  UTF-7 ("+2D3AAA-")
    decodes to them, "replace" or not, and UTF-8 cannot carry them: the
    parser's own UTF-8 reads (URLs, HTML), the featurizer and the writer
    would fail on the message."""
    cdef Py_ssize_t n
    if PyUnicode_KIND(text) == PyUnicode_1BYTE_KIND:
        return text  # no code point above U+00FF (ASCII included)
    if PyUnicode_AsUTF8AndSize_or_null(text, &n) != NULL:
        return text  # (its UTF-8 stays cached: the parser and featurizer read it)
    PyErr_Clear()
    return _SURROGATE.sub("\ufffd", text)


cdef inline str header_text(const uint8_t *p, Py_ssize_t n):
    """Raw header bytes: ASCII, else UTF-8 with replacement (what
    email.policy.default's surrogate sanitising gives)."""
    if atlas_is_ascii(p, n):
        return PyUnicode_DecodeLatin1(<const char *>p, n, NULL)
    return PyUnicode_DecodeUTF8(<const char *>p, n, "replace")


cdef inline bint is_wsp(uint8_t c) noexcept nogil:
    return c == 32 or c == 9


cdef inline Py_ssize_t find2(const uint8_t *s, Py_ssize_t i, Py_ssize_t n,
                             uint8_t a, uint8_t b) noexcept nogil:
    """Index of the pair a, b at or after i, or -1."""
    while i + 1 < n:
        if s[i] == a and s[i + 1] == b:
            return i
        i += 1
    return -1


# ===========================================================================
# RFC 2047 encoded words (email's get_unstructured, in C-level loops)
# ===========================================================================

cdef int parse_ew(const uint8_t *s, Py_ssize_t i, Py_ssize_t n, Py_ssize_t *end,
                  Py_ssize_t *cs, Py_ssize_t *cs_len, int *enc,
                  Py_ssize_t *txt, Py_ssize_t *txt_len) noexcept nogil:
    """The encoded word at s[i:] ("=?"): 1 valid, 0 no "?=" at all (email's
    HeaderParseError), -1 malformed (_InvalidEwError)."""
    cdef Py_ssize_t q = find2(s, i + 2, n, 63, 61)  # "?="
    cdef Py_ssize_t tok_end, k, q1 = -1, q2 = -1, marks = 0
    if q < 0:
        return 0
    tok_end = q
    end[0] = q + 2
    for k in range(i + 2, q):
        if s[k] == 63:
            marks += 1
    # "?=" right after the encoding letter is the start of a Q escape "=XX".
    if (n - (q + 2) > 1 and marks < 2 and _hex(s[q + 2]) and _hex(s[q + 3])):
        k = find2(s, q + 2, n, 63, 61)
        if k < 0:
            tok_end = n
            end[0] = n
        else:
            tok_end = k
            end[0] = k + 2
    # charset ? encoding ? text: exactly two '?' inside.
    marks = 0
    for k in range(i + 2, tok_end):
        if s[k] == 63:
            marks += 1
            if q1 < 0:
                q1 = k
            elif q2 < 0:
                q2 = k
    if marks != 2 or q2 != q1 + 2:
        return -1
    if s[q1 + 1] == 66 or s[q1 + 1] == 98:
        enc[0] = 1
    elif s[q1 + 1] == 81 or s[q1 + 1] == 113:
        enc[0] = 2
    else:
        return -1
    cs[0] = i + 2
    cs_len[0] = q1 - (i + 2)
    txt[0] = q2 + 1
    txt_len[0] = tok_end - (q2 + 1)
    return 1


cdef inline bint _hex(uint8_t c) noexcept nogil:
    return (48 <= c <= 57) or (65 <= c <= 70) or (97 <= c <= 102)


cdef bint has_ew_pattern(const uint8_t *s, Py_ssize_t i, Py_ssize_t j) noexcept nogil:
    """email's rfc2047_matcher: =?charset?[QB]?...?= somewhere in s[i:j]."""
    cdef Py_ssize_t k = find2(s, i, j, 61, 63), m
    while k >= 0:
        m = k + 2
        while m < j and s[m] != 63:
            m += 1
        if (m + 2 < j and s[m + 2] == 63 and
                (s[m + 1] == 81 or s[m + 1] == 113 or s[m + 1] == 66 or s[m + 1] == 98) and
                find2(s, m + 3, j, 63, 61) >= 0):
            return True
        k = find2(s, k + 1, j, 61, 63)
    return False


cdef str decode_ew_text(Scratch *sc, const uint8_t *s, Py_ssize_t cs, Py_ssize_t cs_len,
                        int enc, Py_ssize_t txt, Py_ssize_t txt_len):
    cdef char charset[48]
    cdef Py_ssize_t k, m = 0
    for k in range(cs, cs + cs_len):
        if s[k] == 42 or m >= 47:  # '*' starts an RFC 2231 language tag
            break
        charset[m] = <char>(s[k] + 32 if 65 <= s[k] <= 90 else s[k])
        m += 1
    charset[m] = 0
    sc.dec.n = 0
    if enc == 1:
        rc = atlas_b64_decode(&sc.dec, s + txt, txt_len, txt_len + 4)
    else:
        rc = atlas_qp_decode(&sc.dec, s + txt, txt_len, txt_len + 4, 1)
    if rc < 0:
        raise MemoryError()
    if m == 0:
        # email: an empty charset is an unknown one, read as UTF-8 here too.
        charset[0] = 0
    return text_from_bytes(sc.dec.p, sc.dec.n, charset)


cdef str decode_words(Scratch *sc, const uint8_t *s, Py_ssize_t n):
    """Unfolded header text to str, decoding RFC 2047 encoded words as
    email.policy.default does (whitespace between adjacent words dropped,
    malformed words kept literally)."""
    cdef Py_ssize_t i = 0, j, lit = 0, prev_ew_end = -1, end, cs, cs_len, txt, txt_len, k
    cdef int enc, r
    cdef bint valid, blank
    if n == 0:
        return ""
    if find2(s, 0, n, 61, 63) < 0:
        return header_text(s, n)
    pieces = []
    while i < n:
        if is_wsp(s[i]):
            i += 1
            continue
        valid = True
        if s[i] == 61 and i + 1 < n and s[i + 1] == 63:
            r = parse_ew(s, i, n, &end, &cs, &cs_len, &enc, &txt, &txt_len)
            if r == 1:
                blank = True
                for k in range(lit, i):
                    if not is_wsp(s[k]):
                        blank = False
                        break
                if not (prev_ew_end == lit and blank and i > lit):
                    if i > lit:
                        pieces.append(header_text(s + lit, i - lit))
                pieces.append(decode_ew_text(sc, s, cs, cs_len, enc, txt, txt_len))
                i = end
                lit = end
                prev_ew_end = end
                continue
            if r < 0:
                valid = False
        j = i
        while j < n and not is_wsp(s[j]):
            j += 1
        if valid and has_ew_pattern(s, i, j):
            k = find2(s, i, j, 61, 63)
            if k > i:
                j = k
        i = j
    if n > lit:
        pieces.append(header_text(s + lit, n - lit))
    return "".join(pieces)


# ===========================================================================
# Header fields
# ===========================================================================

cdef inline int unfold(Scratch *sc, const atlas_header *h) except -1:
    if atlas_unfold(&sc.unf, h.val, h.val_len) < 0:
        raise MemoryError()
    return 0


cdef str field_text(Scratch *sc, const atlas_headers *hs, int field, bint strip):
    """A header's unfolded value as str (no RFC 2047), or None if absent."""
    cdef int ix = hs.first[field]
    cdef Py_ssize_t a = 0, b
    if ix < 0:
        return None
    unfold(sc, &hs.items[ix])
    b = sc.unf.n
    if strip:
        while a < b and (is_wsp(sc.unf.p[a])):
            a += 1
        while b > a and (is_wsp(sc.unf.p[b - 1])):
            b -= 1
    return header_text(sc.unf.p + a, b - a)


cdef inline str lower_ascii_text(const uint8_t *p, Py_ssize_t n):
    """Lower-cased str of address bytes (ASCII fast path)."""
    if atlas_is_ascii(p, n):
        return PyUnicode_DecodeLatin1(<const char *>p, n, NULL).lower()
    return PyUnicode_DecodeUTF8(<const char *>p, n, "replace").lower()


cdef object address_field(Scratch *sc, const atlas_headers *hs, int field, bint want_name,
                          ParsedMessage pm):
    """First mailbox of an address header: lower-cased addr-spec, or None."""
    cdef int ix = hs.first[field]
    cdef int found
    if ix < 0:
        return None
    unfold(sc, &hs.items[ix])
    found = atlas_parse_address(sc.unf.p, sc.unf.n, &sc.addr, &sc.name)
    if found < 0:
        raise MemoryError()
    if want_name and sc.name.n:
        # The name lives in sc.name; decode_words only touches sc.dec.
        pm.from_name = decode_words(sc, sc.name.p, sc.name.n)
    if not found:
        return None
    return lower_ascii_text(sc.addr.p, sc.addr.n)


# ---------------------------------------------------------------------------
# Header names, interned
# ---------------------------------------------------------------------------
# Every message repeats the same few dozen header names; making a new str for
# each (and freeing it with the message) was ~8 % of parse time.  A fixed
# open-addressing table of lower-cased names keeps one str per name for the
# life of the process; its size bounds memory whatever names a hostile
# mailbox invents (a full probe window just means "not interned").

cdef enum:
    NAME_SLOTS = 4096
    NAME_PROBES = 8
    NAME_MAX = 47

cdef struct NameSlot:
    unsigned long long hash
    Py_ssize_t n
    PyObject *text
    char bytes[NAME_MAX + 1]

cdef NameSlot _name_table[NAME_SLOTS]


cdef inline uint64_t _word(const char *p) noexcept nogil:
    cdef uint64_t w
    memcpy(&w, p, 8)
    return w


cdef inline void _lower_copy(char *dst, const char *src, Py_ssize_t n) noexcept nogil:
    # ASCII lower case of src[:n] into dst, 8 bytes at a time; no byte past
    # src + n is read (a header name can end its buffer).
    cdef Py_ssize_t i = 0
    cdef uint64_t w
    while i + 8 <= n:
        w = atlas_fold8(_word(src + i))
        memcpy(dst + i, &w, 8)
        i += 8
    while i < n:
        dst[i] = <char>atlas_lower(<uint8_t>src[i])
        i += 1


cdef object interned_name(const char *p, Py_ssize_t n):
    # The hash mixes a word at a time; no byte past p + n is read.
    cdef unsigned long long h = 1469598103934665603ULL ^ <unsigned long long>n
    cdef Py_ssize_t i = 0
    cdef uint64_t w
    cdef NameSlot *slot
    if n > NAME_MAX:
        return PyUnicode_DecodeLatin1(p, n, NULL)
    while i + 8 <= n:
        h = (h ^ _word(p + i)) * 0x9E3779B97F4A7C15ULL
        h ^= h >> 29
        i += 8
    if i < n:
        w = 0
        memcpy(&w, p + i, <size_t>(n - i))
        h = (h ^ w) * 0x9E3779B97F4A7C15ULL
        h ^= h >> 29
    for i in range(NAME_PROBES):
        slot = &_name_table[(h + <unsigned long long>i) & (NAME_SLOTS - 1)]
        if slot.text == NULL:
            text = PyUnicode_DecodeLatin1(p, n, NULL)
            Py_INCREF(text)  # owned by the table for the life of the process
            slot.text = <PyObject *>text
            slot.hash = h
            slot.n = n
            memcpy(slot.bytes, p, <size_t>n)
            return text
        if slot.hash == h and slot.n == n and memcmp(slot.bytes, p, <size_t>n) == 0:
            return <object>slot.text
    return PyUnicode_DecodeLatin1(p, n, NULL)


cdef int fill_headers(Scratch *sc, ParsedMessage pm) except -1:
    cdef const atlas_headers *hs = &sc.msg.top
    cdef const atlas_header *h
    cdef size_t k
    cdef Py_ssize_t j, at
    cdef char lname[128]
    cdef char date[21]
    cdef int ix
    names = pm.header_names
    received = pm.received
    auth = None
    for k in range(hs.n):
        h = &hs.items[k]
        if h.name_len < 128:
            _lower_copy(lname, <const char *>h.name, <Py_ssize_t>h.name_len)
            names.append(interned_name(lname, <Py_ssize_t>h.name_len))
        else:
            names.append(PyUnicode_DecodeLatin1(<const char *>h.name, h.name_len, NULL).lower())
        if h.field == ATLAS_F_RECEIVED:
            unfold(sc, h)
            if not received:
                # The newest hop's time stamp: what follows its last ';'.
                j = <Py_ssize_t>sc.unf.n
                while j > 0 and sc.unf.p[j - 1] != 59:
                    j -= 1
                if j > 0 and atlas_parse_date(sc.unf.p + j, sc.unf.n - <size_t>j, date):
                    pm.received_date = PyUnicode_DecodeLatin1(date, 20, NULL)
            received.append(header_text(sc.unf.p, sc.unf.n))
        elif h.field == ATLAS_F_AUTH_RESULTS:
            unfold(sc, h)
            if auth is None:
                auth = []
            auth.append(header_text(sc.unf.p, sc.unf.n))
    pm.n_headers = hs.n
    pm.header_bytes = hs.header_bytes
    if auth is not None:
        pm.auth_results = "\n".join(auth)

    ix = hs.first[ATLAS_F_SUBJECT]
    if ix >= 0:
        unfold(sc, &hs.items[ix])
        pm.subject = decode_words(sc, sc.unf.p, sc.unf.n)
    ix = hs.first[ATLAS_F_DATE]
    if ix >= 0:
        if atlas_parse_date(hs.items[ix].val, hs.items[ix].val_len, date):
            pm.date = PyUnicode_DecodeLatin1(date, 20, NULL)
        unfold(sc, &hs.items[ix])
        pm.date_raw = header_text(sc.unf.p, sc.unf.n).strip()
    pm.message_id = field_text(sc, hs, ATLAS_F_MESSAGE_ID, True)
    pm.from_addr = address_field(sc, hs, ATLAS_F_FROM, True, pm)
    if pm.from_addr is not None:
        at = (<str>pm.from_addr).rfind("@")
        if at >= 0 and at + 1 < len(<str>pm.from_addr):
            pm.from_domain = (<str>pm.from_addr)[at + 1:]
    pm.to_addr = address_field(sc, hs, ATLAS_F_TO, False, pm)
    pm.reply_to_addr = address_field(sc, hs, ATLAS_F_REPLY_TO, False, pm)
    rp = field_text(sc, hs, ATLAS_F_RETURN_PATH, True)
    if rp is not None:
        rp = (<str>rp).strip().strip("<>").strip().lower()
        pm.return_path = rp
    ix = hs.first[ATLAS_F_CONTENT_TYPE]
    if ix >= 0:
        unfold(sc, &hs.items[ix])
        j = atlas_media_type(sc.unf.p, sc.unf.n, lname, sizeof(lname))
        pm.content_type = PyUnicode_DecodeLatin1(lname, j, NULL)
    pm.x_mailer = field_text(sc, hs, ATLAS_F_X_MAILER, True)
    if pm.x_mailer is None:
        pm.x_mailer = field_text(sc, hs, ATLAS_F_USER_AGENT, True)
    pm.received_spf = field_text(sc, hs, ATLAS_F_RECEIVED_SPF, True)
    return 0


cdef int fill_header_tokens(Scratch *sc, ParsedMessage pm) except -1:
    """pm.header_tokens: the model's tokens of selected header values
    (csrc atlas_header_tokens), as interned str: they repeat across mail."""
    cdef size_t a = 0, b
    cdef list out = []
    if atlas_header_tokens(&sc.msg.top, &sc.unf, &sc.toks) < 0:
        raise MemoryError()
    for b in range(sc.toks.n):
        if sc.toks.p[b] == 10:
            out.append(interned_name(<const char *>sc.toks.p + a, <Py_ssize_t>(b - a)))
            a = b + 1
    pm.header_tokens = out
    return 0


# ===========================================================================
# Body
# ===========================================================================

cdef inline bint utf8_compatible(const char *charset) noexcept nogil:
    return (charset[0] == 0 or strcmp(charset, "utf-8") == 0 or strcmp(charset, "utf8") == 0
            or strcmp(charset, "us-ascii") == 0 or strcmp(charset, "ascii") == 0)


cdef int transfer_decode(Scratch *sc, const atlas_part *part, const uint8_t **out,
                         size_t *out_len) except -1:
    """Undo the transfer encoding (capped at ATLAS_TEXT_CAP bytes)."""
    cdef int rc = 0
    sc.dec.n = 0
    if part.cte == ATLAS_CTE_BASE64:
        with nogil:
            rc = atlas_b64_decode(&sc.dec, part.body, part.body_len, ATLAS_TEXT_CAP)
    elif part.cte == ATLAS_CTE_QP:
        with nogil:
            rc = atlas_qp_decode(&sc.dec, part.body, part.body_len, ATLAS_TEXT_CAP, 0)
    else:
        out[0] = part.body
        out_len[0] = part.body_len if part.body_len < ATLAS_TEXT_CAP else ATLAS_TEXT_CAP
        return 0
    if rc < 0:
        raise MemoryError()
    out[0] = sc.dec.p
    out_len[0] = sc.dec.n
    return 0


cdef int find_urls(Scratch *sc, const uint8_t *p, size_t n, long *count) except -1:
    cdef long r
    with nogil:
        r = atlas_find_urls(&sc.urls, p, n)
    if r < 0:
        raise MemoryError()
    count[0] += r
    return 0


cdef int fill_body(Scratch *sc, ParsedMessage pm) except -1:
    cdef const atlas_part *part
    cdef const uint8_t *body
    cdef size_t body_len, k, a, b
    cdef Py_ssize_t u8_len
    cdef const char *u8
    cdef long n_urls = 0
    cdef int rc
    cdef bint is_plain, is_html, have_html = False
    html_text = None
    sc.urls.n = 0
    sc.html.n = 0
    attachments = pm.attachments
    for k in range(sc.msg.n_parts):
        part = &sc.msg.parts[k]
        is_plain = strcmp(part.ctype, "text/plain") == 0
        is_html = strcmp(part.ctype, "text/html") == 0
        if part.is_attachment or part.filename_len or memcmp(part.ctype, b"text/", 5) != 0:
            attachments.append((PyUnicode_DecodeUTF8(part.filename, part.filename_len, "replace"),
                                PyUnicode_DecodeLatin1(part.ctype, strlen(part.ctype), NULL)))
        if part.is_attachment:
            continue
        if is_plain and pm.plain is None:
            transfer_decode(sc, part, &body, &body_len)
            pm.plain = text_from_bytes(body, body_len, part.charset)
            if utf8_compatible(part.charset):
                find_urls(sc, body, body_len, &n_urls)
            else:
                u8 = PyUnicode_AsUTF8AndSize(pm.plain, &u8_len)
                find_urls(sc, <const uint8_t *>u8, u8_len, &n_urls)
        elif is_html:
            pm.has_html = True
            if have_html:
                continue
            have_html = True
            transfer_decode(sc, part, &body, &body_len)
            if not utf8_compatible(part.charset):
                decoded = text_from_bytes(body, body_len, part.charset)
                u8 = PyUnicode_AsUTF8AndSize(decoded, &u8_len)
                body = <const uint8_t *>u8
                body_len = u8_len
            with nogil:
                rc = atlas_html_to_text(body, body_len, &sc.html, &sc.urls, &n_urls)
            if rc < 0:
                raise MemoryError()
            html_text = PyUnicode_DecodeUTF8(<const char *>sc.html.p, sc.html.n, "replace")
            find_urls(sc, sc.html.p, sc.html.n, &n_urls)
    pm.n_parts = sc.msg.n_parts
    pm.n_attachments = len(attachments)
    pm.html_only = pm.has_html and pm.plain is None
    if pm.plain is not None and not (<str>pm.plain).isspace() and len(<str>pm.plain):
        pm.text = pm.plain
    elif html_text is not None:
        pm.text = html_text
    elif pm.plain is not None:
        pm.text = pm.plain
    pm.n_urls = n_urls
    if n_urls:
        urls = pm.urls
        seen = set()
        a = 0
        while a < sc.urls.n and len(urls) < DEF_MAX_URLS:
            b = a
            while sc.urls.p[b] != 10:
                b += 1
            url = PyUnicode_DecodeUTF8(<const char *>sc.urls.p + a, b - a, "replace")
            if url not in seen:
                seen.add(url)
                urls.append(url)
            a = b + 1
    return 0


# ===========================================================================
# Entry points
# ===========================================================================

cdef ParsedMessage parse_one(Scratch *sc, const uint8_t *p, size_t n):
    cdef ParsedMessage pm = ParsedMessage.__new__(ParsedMessage)
    cdef int rc
    cdef const char *err
    with nogil:
        rc = atlas_msg_parse(&sc.msg, p, n)
    if rc < 0:
        raise MemoryError()
    if sc.msg.error != ATLAS_ERR_EMPTY:
        fill_headers(sc, pm)
        fill_header_tokens(sc, pm)
        fill_body(sc, pm)
    err = atlas_error_name(sc.msg.error)
    if err != NULL:
        pm.error = PyUnicode_DecodeLatin1(err, strlen(err), NULL)
    return pm


cdef inline size_t skip_envelope(const uint8_t *p, size_t n) noexcept nogil:
    """Length of a leading mbox "From " line (0 if none): it is the
    mailbox's, not the message's, and would leak the label."""
    cdef const uint8_t *nl
    if n >= 5 and memcmp(p, b"From ", 5) == 0:
        nl = <const uint8_t *>memchr(p, 10, n)
        return n if nl == NULL else <size_t>(nl - p) + 1
    return 0


cpdef list parse_chunk(const unsigned char[::1] buf, const long long[::1] starts,
                       const long long[::1] ends):
    """Parse every message of an mbox chunk.

    Parameters
    ----------
    buf : buffer of uint8
        Raw mbox bytes holding whole messages (e.g. a shared-memory slot).
    starts, ends : buffer of int64
        ``buf[starts[i]:ends[i]]`` is message ``i``, envelope line included.

    Returns
    -------
    list[ParsedMessage]
        One per message, in order.  The envelope line is skipped and one
        trailing empty line (the mbox separator) is dropped.

    Raises
    ------
    ValueError
        If ``starts`` and ``ends`` differ in length or a range is outside
        ``buf``.
    """
    cdef Py_ssize_t m = starts.shape[0], i
    cdef long long size = buf.shape[0], s, e
    cdef const uint8_t *base = EMPTY
    cdef const uint8_t *p
    cdef size_t n, skip
    cdef Scratch sc
    if size > 0:
        base = &buf[0]
    if ends.shape[0] != m:
        raise ValueError(f"starts has {m} entries but ends has {ends.shape[0]}")
    out = []
    scratch_init(&sc)
    try:
        for i in range(m):
            s = starts[i]
            e = ends[i]
            if s < 0 or e < s or e > size:
                raise ValueError(f"message {i}: range {s}..{e} is outside the buffer "
                                 f"of {size} bytes")
            p = base + s
            n = <size_t>(e - s)
            skip = skip_envelope(p, n)
            p += skip
            n -= skip
            # The mbox separator: one empty line after the message's last line.
            if n >= 2 and p[n - 1] == 10:
                if p[n - 2] == 10:
                    n -= 1
                elif n >= 3 and p[n - 2] == 13 and p[n - 3] == 10:
                    n -= 2
            out.append(parse_one(&sc, p, n))
    finally:
        scratch_free(&sc)
    return out


cpdef ParsedMessage parse_message(const unsigned char[::1] raw):
    """Parse one message.

    Parameters
    ----------
    raw : bytes-like
        The message; a leading mbox ``From `` line is skipped.

    Returns
    -------
    ParsedMessage
        With ``error`` set (and whatever could be extracted) when the message
        is malformed; this never raises for bad input.
    """
    cdef Py_ssize_t size = raw.shape[0]
    cdef const uint8_t *p = EMPTY
    cdef size_t skip
    cdef Scratch sc
    if size > 0:
        p = &raw[0]
    skip = skip_envelope(p, size)
    scratch_init(&sc)
    try:
        return parse_one(&sc, p + skip, size - skip)
    finally:
        scratch_free(&sc)
