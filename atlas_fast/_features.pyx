# cython: freethreading_compatible=False
"""Tokenising, feature hashing and the linear model, over a whole chunk.

One call handles every message of a chunk.  Fields are read from each
``ParsedMessage`` (any object with the same attributes works, which keeps the
unit tests free of the parser), hashed into ``2**nbits`` buckets and either
returned as a CSR matrix (training) or dotted with the model's weights
(scoring).  Readable feature names are built only for the few features that
end up in a message's ``reasons``.

Tokens: runs of ASCII letters and digits and of non-ASCII bytes (so UTF-8
words stay whole), with ``'``, ``.``, ``-`` and ``_`` allowed inside a run;
``$`` and ``!`` are tokens of their own.  ASCII is lower-cased; tokens with a
digit and more than four characters become a shape (``#n7``), so prices,
phone numbers and ids generalise; runs longer than 30 bytes become ``#long``.
Each field's tokens share a weight of ``1/sqrt(count)`` so that long messages
do not swamp short ones.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_Check
from libc.math cimport exp, log, sqrt
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

import numpy as np

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size) except NULL

# Bump when tokenising or feature naming changes: a model trained with another
# version would be scored against the wrong buckets.
FEATURE_VERSION = 1

cdef Py_ssize_t MAX_TEXT_BYTES = 32768     # body text read for tokens
cdef Py_ssize_t MAX_FIELD_TOKENS = 4096
cdef int MAX_TOKEN_LEN = 30

# ---------------------------------------------------------------------------
# Hashing
# ---------------------------------------------------------------------------

cdef inline uint32_t fnv_bytes(uint32_t h, const char *s, Py_ssize_t n, bint fold) noexcept nogil:
    cdef Py_ssize_t i
    cdef unsigned char c
    for i in range(n):
        c = <unsigned char>s[i]
        if fold and c >= 65 and c <= 90:
            c += 32
        h = (h ^ c) * 16777619u
    return h


cdef inline uint32_t fmix32(uint32_t h) noexcept nogil:
    # murmur3's finaliser: spreads FNV's weak low bits before masking.
    h ^= h >> 16
    h *= 0x85ebca6bu
    h ^= h >> 13
    h *= 0xc2b2ae35u
    h ^= h >> 16
    return h


cdef inline Py_ssize_t cstrlen(const char *s) noexcept nogil:
    cdef Py_ssize_t n = 0
    while s[n] != 0:
        n += 1
    return n


cdef inline uint32_t prefix_seed(const char *prefix) noexcept nogil:
    cdef Py_ssize_t n = cstrlen(prefix)
    return fnv_bytes(2166136261u, prefix, n, 0)


def feature_bucket(str name, int nbits):
    """Bucket of a feature given by its readable name (``"subj:free"``).

    The part up to and including the first ``:`` is the prefix; the rest is
    hashed as the featuriser hashes tokens (lower-cased ASCII).  Used by the
    tests and by tools that inspect a model.
    """
    cdef bytes raw = name.encode("utf-8")
    cdef Py_ssize_t cut = raw.find(b":") + 1
    cdef bytes prefix = raw[:cut]
    cdef bytes rest = raw[cut:]
    cdef uint32_t h = fnv_bytes(prefix_seed(prefix), rest, len(rest), 1)
    return fmix32(h) & ((1u << nbits) - 1)


# ---------------------------------------------------------------------------
# Static names of structure features
# ---------------------------------------------------------------------------

cdef const char *P_SUBJ = "subj:"
cdef const char *P_SUBJ2 = "subj2:"
cdef const char *P_NAME = "name:"
cdef const char *P_WORD = "w:"
cdef const char *P_WORD2 = "w2:"
cdef const char *P_HDR = "hdr:"
cdef const char *P_ATT_EXT = "att_ext:"
cdef const char *P_ATT_TYPE = "att_type:"
cdef const char *P_CTYPE = "ctype:"
cdef const char *P_MAILER = "mailer:"
cdef const char *P_STRUCT = "struct:"
cdef const char *P_NONE = ""

cdef const char *SHAPES[9]
SHAPES[:] = [b"#n5", b"#n6", b"#n7", b"#n8", b"#n9", b"#n10", b"#n11", b"#n12", b"#n13+"]
cdef const char *LONG_TOKEN = "#long"
cdef const char *URL_BUCKETS[6]
URL_BUCKETS[:] = [b"urls_0", b"urls_1", b"urls_2_3", b"urls_4_7", b"urls_8_15", b"urls_16+"]
cdef const char *UPPER_BUCKETS[6]
UPPER_BUCKETS[:] = [b"upper_0_5", b"upper_5_10", b"upper_10_20", b"upper_20_35",
                    b"upper_35_60", b"upper_60+"]
cdef const char *SUBJ_UPPER_BUCKETS[3]
SUBJ_UPPER_BUCKETS[:] = [b"subj_upper_low", b"subj_upper_mid", b"subj_upper_high"]
cdef const char *LEN_BUCKETS[8]
LEN_BUCKETS[:] = [b"text_0", b"text_1_63", b"text_64_255", b"text_256_1k", b"text_1k_4k",
                  b"text_4k_16k", b"text_16k_64k", b"text_64k+"]
cdef const char *ATT_BUCKETS[4]
ATT_BUCKETS[:] = [b"att_0", b"att_1", b"att_2_3", b"att_4+"]


cdef inline int bucket_index(Py_ssize_t n, int last) noexcept nogil:
    # 0 -> 0, 1 -> 1, 2..3 -> 2, 4..7 -> 3, ...
    cdef int b = 0
    while n > 0 and b < last:
        n >>= 1
        b += 1
    return b


cdef inline bint is_token_byte(unsigned char c) noexcept nogil:
    return (c >= 48 and c <= 57) or (c >= 65 and c <= 90) or (c >= 97 and c <= 122) or c >= 128


# ---------------------------------------------------------------------------
# Featuriser
# ---------------------------------------------------------------------------

cdef class Featurizer:
    """Hash the features of ParsedMessage-like objects into ``2**nbits`` buckets.

    Parameters
    ----------
    nbits : int
        Number of hash bits (buckets = ``2**nbits``).
    header_allow : frozenset of str
        Lower-cased header names whose presence is a feature (``hdr:<name>``);
        every other header, and in particular mail-client export headers, is
        ignored.
    """

    def __cinit__(self, int nbits=20, header_allow=frozenset()):
        if nbits < 8 or nbits > 28:
            raise ValueError(f"nbits must be in 8..28, got {nbits}")
        self.nbits = nbits
        self.mask = (1u << nbits) - 1
        self.header_allow = frozenset(header_allow)
        self.cap_feats = 4096
        self.n_feats = 0
        self.feats = <Feat *>malloc(self.cap_feats * sizeof(Feat))
        if self.feats == NULL:
            raise MemoryError()
        self.keep = []

    def __dealloc__(self):
        free(self.feats)

    cdef int _reserve(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t cap = self.cap_feats
        cdef Feat *grown
        if self.n_feats + extra <= cap:
            return 0
        while cap < self.n_feats + extra:
            cap *= 2
        grown = <Feat *>realloc(self.feats, cap * sizeof(Feat))
        if grown == NULL:
            raise MemoryError()
        self.feats = grown
        self.cap_feats = cap
        return 0

    cdef int _push(self, uint32_t h, float value, const char *prefix,
                   const char *name, Py_ssize_t name_len, int fold) except -1:
        cdef Feat *f
        if self.n_feats == self.cap_feats:
            self._reserve(1)
        f = &self.feats[self.n_feats]
        f.bucket = fmix32(h) & self.mask
        f.value = value
        f.prefix = prefix
        f.name = name
        f.name_len = <int32_t>name_len
        f.fold = fold
        self.n_feats += 1
        return 0

    cdef int _push_str(self, const char *prefix, uint32_t seed, str text, float value) except -1:
        # A whole string is one feature (header name, attachment type, extras).
        cdef Py_ssize_t n
        cdef const char *s = PyUnicode_AsUTF8AndSize(text, &n)
        if n > 200:
            n = 200
        return self._push(fnv_bytes(seed, s, n, 1), value, prefix, s, n, 1)

    cdef Py_ssize_t _tokens(self, const char *prefix, uint32_t seed, const char *s,
                            Py_ssize_t n, Py_ssize_t max_tokens, bint bigrams,
                            Py_ssize_t *upper, Py_ssize_t *letters) except -1:
        """Push the tokens (and bigrams) of ``s[:n]`` with value 1; return how many."""
        cdef Py_ssize_t i = 0, start, end, count = 0, tlen
        cdef Py_ssize_t prev_start = -1
        cdef unsigned char c
        cdef bint digit
        cdef uint32_t h, prev_h = 0, seed2 = 0
        cdef int shape
        cdef const char *prefix2 = P_SUBJ2 if prefix == P_SUBJ else P_WORD2
        if bigrams:
            seed2 = prefix_seed(prefix2)
        while i < n and count < max_tokens:
            c = <unsigned char>s[i]
            if c == 36 or c == 33:          # '$' '!'
                self._push(fnv_bytes(seed, s + i, 1, 0), 1.0, prefix, s + i, 1, 0)
                count += 1
                i += 1
                prev_start = -1
                continue
            if not is_token_byte(c):
                i += 1
                continue
            start = i
            digit = False
            while i < n:
                c = <unsigned char>s[i]
                if is_token_byte(c):
                    if c >= 65 and c <= 90:
                        upper[0] += 1
                        letters[0] += 1
                    elif c >= 97 and c <= 122:
                        letters[0] += 1
                    elif c >= 48 and c <= 57:
                        digit = True
                    i += 1
                elif (c == 39 or c == 46 or c == 45 or c == 95) and i + 1 < n \
                        and is_token_byte(<unsigned char>s[i + 1]):
                    i += 1
                else:
                    break
            end = i
            tlen = end - start
            if tlen > MAX_TOKEN_LEN:
                h = fnv_bytes(seed, LONG_TOKEN, 5, 0)
                self._push(h, 1.0, prefix, LONG_TOKEN, 5, 0)
            elif digit and tlen > 4:
                shape = tlen - 5 if tlen < 13 else 8
                h = fnv_bytes(seed, SHAPES[shape], cstrlen(SHAPES[shape]), 0)
                self._push(h, 1.0, prefix, SHAPES[shape], cstrlen(SHAPES[shape]), 0)
            else:
                h = fnv_bytes(seed, s + start, tlen, 1)
                self._push(h, 1.0, prefix, s + start, tlen, 1)
                if bigrams and prev_start >= 0:
                    self._push(fnv_bytes(seed2 ^ prev_h, s + start, tlen, 1), 1.0, prefix2,
                               s + prev_start, end - prev_start, 1)
                    count += 1
                prev_h = h
                prev_start = start
            count += 1
        return count

    cdef int _featurize(self, object msg, object extras) except -1:
        cdef Py_ssize_t n, i, first, count, upper = 0, letters = 0
        cdef Py_ssize_t subj_upper = 0, subj_letters = 0, dummy = 0
        cdef const char *s
        cdef float scale
        cdef object value
        self.n_feats = 0

        value = msg.subject
        if value is not None and PyUnicode_Check(value):
            s = PyUnicode_AsUTF8AndSize(value, &n)
            first = self.n_feats
            count = self._tokens(P_SUBJ, prefix_seed(P_SUBJ), s, n, 64, True,
                                 &subj_upper, &subj_letters)
            self._share(first, count)
        else:
            self._push_static("no_subject")

        value = msg.from_name
        if value is not None and PyUnicode_Check(value) and len(<str>value):
            s = PyUnicode_AsUTF8AndSize(value, &n)
            first = self.n_feats
            count = self._tokens(P_NAME, prefix_seed(P_NAME), s, n, 16, False, &dummy, &dummy)
            self._share(first, count)
        else:
            self._push_static("no_from_name")

        value = msg.text
        n = 0
        if value is not None and PyUnicode_Check(value):
            s = PyUnicode_AsUTF8AndSize(value, &n)
            first = self.n_feats
            count = self._tokens(P_WORD, prefix_seed(P_WORD), s,
                                 n if n < MAX_TEXT_BYTES else MAX_TEXT_BYTES,
                                 MAX_FIELD_TOKENS, True, &upper, &letters)
            self._share(first, count)
        self._push_static(LEN_BUCKETS[bucket_index(n >> 5, 7) if n else 0])
        if letters >= 20:
            i = upper * 100 // letters
            self._push_static(UPPER_BUCKETS[0 if i < 5 else 1 if i < 10 else 2 if i < 20
                                            else 3 if i < 35 else 4 if i < 60 else 5])
        if subj_letters >= 6:
            i = subj_upper * 100 // subj_letters
            self._push_static(SUBJ_UPPER_BUCKETS[0 if i < 30 else 1 if i < 70 else 2])

        if msg.html_only:
            self._push_static("html_only")
        elif msg.has_html:
            self._push_static("has_html")
        self._push_static(URL_BUCKETS[bucket_index(msg.n_urls, 5)])

        attachments = msg.attachments
        if attachments:
            self._push_static(ATT_BUCKETS[bucket_index(len(attachments), 3)])
            for item in attachments:
                fname, ctype = item
                if ctype:
                    self._push_str(P_ATT_TYPE, prefix_seed(P_ATT_TYPE), ctype, 1.0)
                if fname:
                    dot = fname.rfind(".")
                    if 0 <= dot and len(fname) - dot <= 8:
                        self._push_str(P_ATT_EXT, prefix_seed(P_ATT_EXT), fname[dot + 1:], 1.0)

        value = msg.content_type
        if value is not None and PyUnicode_Check(value):
            self._push_str(P_CTYPE, prefix_seed(P_CTYPE), value, 1.0)
        value = msg.x_mailer
        if value is not None and PyUnicode_Check(value):
            # The product name only: versions are too specific to generalise.
            word = (<str>value).split(None, 1)
            if word:
                self._push_str(P_MAILER, prefix_seed(P_MAILER), word[0], 1.0)
        names = msg.header_names
        if names:
            for name in names:
                if name in self.header_allow:
                    self._push_str(P_HDR, prefix_seed(P_HDR), name, 1.0)
        if extras:
            for item in extras:
                self._push_str(P_NONE, 2166136261u, item, 1.0)
        return 0

    cdef void _share(self, Py_ssize_t first, Py_ssize_t count) noexcept:
        # A field's tokens share a weight of 1/sqrt(count).
        cdef Py_ssize_t i
        cdef float scale
        if count:
            scale = 1.0 / sqrt(<double>count)
            for i in range(first, self.n_feats):
                self.feats[i].value = scale

    cdef int _push_static(self, const char *name) except -1:
        cdef Py_ssize_t n = cstrlen(name)
        return self._push(fnv_bytes(prefix_seed(P_STRUCT), name, n, 0), 1.0, P_STRUCT, name, n, 0)

    cpdef tuple csr(self, list msgs, list extras):
        """Features of ``msgs`` as a CSR matrix ``(indptr, indices, data)``.

        ``extras[i]`` is a list of whole-string features of message ``i``
        (enrichment: ``"from_dom:example.com"``, ``"spf:pass"``) or None.
        Repeated tokens appear as repeated columns; consumers sum them.
        """
        cdef Py_ssize_t m = len(msgs), i, j, total = 0
        indptr = np.zeros(m + 1, dtype=np.int64)
        cdef int64_t[::1] ip = indptr
        chunks_idx = []
        chunks_val = []
        cdef int32_t[::1] idx
        cdef float[::1] val
        for i in range(m):
            self._featurize(msgs[i], extras[i] if extras is not None else None)
            a = np.empty(self.n_feats, dtype=np.int32)
            b = np.empty(self.n_feats, dtype=np.float32)
            idx = a
            val = b
            for j in range(self.n_feats):
                idx[j] = <int32_t>self.feats[j].bucket
                val[j] = self.feats[j].value
            chunks_idx.append(a)
            chunks_val.append(b)
            total += self.n_feats
            ip[i + 1] = total
        if m:
            return indptr, np.concatenate(chunks_idx), np.concatenate(chunks_val)
        return indptr, np.zeros(0, np.int32), np.zeros(0, np.float32)

    cpdef tuple score(self, list msgs, list extras, const float[::1] weights, double bias,
                      int top_k=3):
        """Margins (``bias + w . x``) of ``msgs`` and their top features.

        Returns
        -------
        (numpy.ndarray of float64, list of tuple)
            The margins, and per message ``(spam_names, ham_names)``: the
            ``top_k`` features pushing towards spam and towards ham, as
            readable names, strongest first.
        """
        if weights.shape[0] != (1 << self.nbits):
            raise ValueError(f"weights have {weights.shape[0]} entries, expected {1 << self.nbits}")
        cdef Py_ssize_t m = len(msgs), i, j, k
        cdef double z, c
        cdef Feat *f
        cdef int K = top_k if top_k < 8 else 8
        cdef double pos_c[8]
        cdef double neg_c[8]
        cdef Py_ssize_t pos_i[8]
        cdef Py_ssize_t neg_i[8]
        margins = np.empty(m, dtype=np.float64)
        cdef double[::1] out = margins
        reasons = []
        for i in range(m):
            self._featurize(msgs[i], extras[i] if extras is not None else None)
            z = bias
            for k in range(K):
                pos_c[k] = 0.0
                neg_c[k] = 0.0
                pos_i[k] = -1
                neg_i[k] = -1
            for j in range(self.n_feats):
                f = &self.feats[j]
                c = weights[f.bucket] * f.value
                z += c
                if K:
                    if c > 0:
                        _rank(pos_c, pos_i, K, c, j, self.feats)
                    elif c < 0:
                        _rank(neg_c, neg_i, K, -c, j, self.feats)
            out[i] = z
            if K:
                reasons.append((self._names(pos_i, K), self._names(neg_i, K)))
            else:
                reasons.append(((), ()))
        return margins, reasons

    cdef tuple _names(self, Py_ssize_t *order, int K):
        cdef list names = []
        cdef Feat *f
        cdef int k
        cdef bytearray buf
        cdef Py_ssize_t p
        for k in range(K):
            if order[k] < 0:
                break
            f = &self.feats[order[k]]
            buf = bytearray(f.prefix)
            buf += f.name[:f.name_len]
            if f.fold:
                for p in range(len(buf)):
                    if 65 <= buf[p] <= 90:
                        buf[p] += 32
            names.append(buf.decode("utf-8", "replace").replace(",", "_").replace("\n", " "))
        return tuple(names)


cdef inline void _rank(double *best, Py_ssize_t *where, int K, double c, Py_ssize_t j,
                       Feat *feats) noexcept:
    # Keep the K largest contributions; a bucket already held accumulates.
    cdef int k, low = 0
    for k in range(K):
        if where[k] >= 0 and feats[where[k]].bucket == feats[j].bucket:
            best[k] += c
            _bubble(best, where, k)
            return
    for k in range(1, K):
        if best[k] < best[low]:
            low = k
    if c > best[low]:
        best[low] = c
        where[low] = j
        _bubble(best, where, low)


cdef inline void _bubble(double *best, Py_ssize_t *where, int k) noexcept:
    cdef double tc
    cdef Py_ssize_t ti
    while k > 0 and best[k] > best[k - 1]:
        tc = best[k]; best[k] = best[k - 1]; best[k - 1] = tc
        ti = where[k]; where[k] = where[k - 1]; where[k - 1] = ti
        k -= 1


# ---------------------------------------------------------------------------
# Digests (cache keys)
# ---------------------------------------------------------------------------

cdef inline uint64_t mix64(uint64_t h, const char *s, Py_ssize_t n, uint64_t mul) noexcept nogil:
    cdef Py_ssize_t i = 0
    cdef uint64_t word
    while i + 8 <= n:
        memcpy(&word, s + i, 8)
        h = (h ^ word) * mul
        h ^= h >> 29
        i += 8
    word = 0
    if i < n:
        memcpy(&word, s + i, n - i)
    h = (h ^ word ^ (<uint64_t>n << 56)) * mul
    h ^= h >> 32
    return h


cdef inline uint64_t mix_obj(uint64_t h, object value, uint64_t mul) except? 0:
    cdef Py_ssize_t n
    cdef const char *s
    if value is None:
        return (h ^ 0x5bd1e995) * mul
    if PyUnicode_Check(value):
        s = PyUnicode_AsUTF8AndSize(value, &n)
    else:
        value = str(value)
        s = PyUnicode_AsUTF8AndSize(value, &n)
    return mix64(h, s, n, mul) | 1


cpdef uint64_t text_digest(object text, uint64_t seed=0) except? 0:
    """64-bit digest of a str (its UTF-8 bytes); not cryptographic."""
    return mix_obj(seed ^ 0x9E3779B97F4A7C15, text, 0xff51afd7ed558ccd)


cpdef list chunk_digests(list msgs, list contexts, uint64_t seed=0):
    """128-bit digests (as 32 hex digits) of everything a verdict depends on.

    Covers sender, display name, subject, body text, URLs, attachments, the
    header fields rules read, header names, structure flags and
    ``contexts[i]`` (a str the caller builds from enrichment results), mixed
    with ``seed`` (the model and rule-set identity).
    """
    cdef Py_ssize_t i, m = len(msgs)
    cdef uint64_t a, b
    cdef list out = [None] * m
    cdef uint64_t MA = 0x9E3779B97F4A7C15, MB = 0xC2B2AE3D27D4EB4F
    for i in range(m):
        msg = msgs[i]
        a = seed ^ 0x243F6A8885A308D3
        b = seed ^ 0x13198A2E03707344
        for value in (msg.from_addr, msg.from_name, msg.subject, msg.text, msg.to_addr,
                      msg.reply_to_addr, msg.return_path, msg.x_mailer, msg.content_type,
                      contexts[i]):
            a = mix_obj(a, value, MA)
            b = mix_obj(b, value, MB)
        for seq in (msg.urls, msg.header_names):
            if seq:
                for value in seq:
                    a = mix_obj(a, value, MA)
                    b = mix_obj(b, value, MB)
            a = (a ^ 0xA5) * MA
            b = (b ^ 0xA5) * MB
        if msg.attachments:
            for value in msg.attachments:
                a = mix_obj(a, value[0], MA)
                a = mix_obj(a, value[1], MA)
                b = mix_obj(b, value[0], MB)
                b = mix_obj(b, value[1], MB)
        a = (a ^ (<uint64_t>(1 if msg.html_only else 0) | (<uint64_t>(1 if msg.has_html else 0) << 1)
                  | (<uint64_t>msg.n_urls << 2))) * MA
        a ^= a >> 31
        b ^= b >> 31
        out[i] = "%016x%016x" % (a, b)
    return out


# ---------------------------------------------------------------------------
# Training: logistic regression by AdaGrad SGD over a CSR matrix
# ---------------------------------------------------------------------------

cpdef double sgd_train(const int64_t[::1] indptr, const int32_t[::1] indices,
                       const float[::1] data, const double[::1] y,
                       const double[::1] sample_weight, const int64_t[::1] order,
                       double[::1] w, double lr, double l2) except? -1:
    """Run AdaGrad SGD steps of L2-regularised logistic regression.

    ``w`` has one entry per bucket plus the bias last; it is updated in place.
    ``order`` lists the sample visited at each step (the caller shuffles with
    its seed, so training is reproducible).  ``y`` is 0/1.  Returns the mean
    weighted log loss over the steps, measured before each update.
    """
    cdef Py_ssize_t dim = w.shape[0] - 1, t, i, j, p
    cdef double z, pr, g, gj, loss = 0.0
    cdef double *G = <double *>malloc((dim + 1) * sizeof(double))
    if G == NULL:
        raise MemoryError()
    try:
        for j in range(dim + 1):
            G[j] = 1e-6
        with nogil:
            for t in range(order.shape[0]):
                i = order[t]
                z = w[dim]
                for p in range(indptr[i], indptr[i + 1]):
                    z += w[indices[p]] * data[p]
                if z >= 0:
                    pr = 1.0 / (1.0 + exp(-z))
                else:
                    pr = exp(z) / (1.0 + exp(z))
                if y[i] > 0.5:
                    loss += -log(pr if pr > 1e-15 else 1e-15) * sample_weight[i]
                else:
                    loss += -log(1.0 - pr if 1.0 - pr > 1e-15 else 1e-15) * sample_weight[i]
                g = (pr - y[i]) * sample_weight[i]
                for p in range(indptr[i], indptr[i + 1]):
                    j = indices[p]
                    gj = g * data[p] + l2 * w[j]
                    G[j] += gj * gj
                    w[j] -= lr * gj / sqrt(G[j])
                G[dim] += g * g
                w[dim] -= lr * g / sqrt(G[dim])
    finally:
        free(G)
    return loss / order.shape[0] if order.shape[0] else 0.0


cpdef object margins_csr(const int64_t[::1] indptr, const int32_t[::1] indices,
                         const float[::1] data, const double[::1] w, double bias):
    """``bias + X . w`` for a CSR matrix, as a float64 array."""
    cdef Py_ssize_t m = indptr.shape[0] - 1, i, p
    out = np.empty(m, dtype=np.float64)
    cdef double[::1] o = out
    cdef double z
    with nogil:
        for i in range(m):
            z = bias
            for p in range(indptr[i], indptr[i + 1]):
                z += w[indices[p]] * data[p]
            o[i] = z
    return out
