"""Compiled bulk writer: SQLite's C API, bound straight from the wire.

The stdlib ``sqlite3`` module spends most of an ``executemany`` in per-value
dispatch (about 0.4 µs per bound value here).  This module binds rows two
ways:

* :meth:`BulkConnection.insert_records` walks a msgspec-encoded record batch
  (:class:`RecordCursor`, see :mod:`atlas_fast.records`) and binds every field
  straight from the received bytes: no Python object per row or per field,
  text borrowed from the buffer (``SQLITE_STATIC``), several rows per
  statement so that SQLite opens its cursors once per statement rather than
  once per row.
* :meth:`BulkConnection.executemany` binds Python tuples, each value with one
  type test, borrowing the UTF-8 buffer CPython caches in every str.

A prefix of values shared by all rows (run id, source) is bound once per
call: SQLite keeps bindings across ``sqlite3_reset``.

A wheel may bundle its own copy of SQLite.  Two copies of SQLite in one
process must never open the same database (POSIX locks would be released
behind each other's back), so only the writer process, which opens nothing
through the ``sqlite3`` module, uses this class.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_AsLongLong
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.string cimport memcmp

from atlas_fast.errors import StorageError


cdef inline int _bind(BulkConnection conn, sqlite3_stmt *stmt, int i, object value) except -1:
    cdef Py_ssize_t n
    cdef const char *text
    cdef int rc
    if value is None:
        rc = sqlite3_bind_null(stmt, i)
    elif type(value) is str:
        try:
            text = PyUnicode_AsUTF8AndSize(value, &n)
        except UnicodeEncodeError:
            # A lone surrogate: UTF-8 cannot carry it.  Store the row with
            # '?' in its place (as the workers' scrub does) rather than lose it.
            encoded = (<str>value).encode("utf-8", "replace")
            rc = sqlite3_bind_text(stmt, i, PyBytes_AS_STRING(encoded),
                                   <int>PyBytes_GET_SIZE(encoded), SQLITE_TRANSIENT)
            return conn._check(rc, "bind")
        rc = sqlite3_bind_text(stmt, i, text, <int>n, SQLITE_STATIC)
    elif type(value) is int or type(value) is bool:
        rc = sqlite3_bind_int64(stmt, i, PyLong_AsLongLong(value))
    elif type(value) is float:
        rc = sqlite3_bind_double(stmt, i, PyFloat_AS_DOUBLE(value))
    elif type(value) is bytes:
        rc = sqlite3_bind_blob(stmt, i, PyBytes_AS_STRING(value),
                               <int>PyBytes_GET_SIZE(value), SQLITE_STATIC)
    else:
        raise TypeError(f"cannot bind {type(value).__name__} as SQL parameter {i}")
    return conn._check(rc, "bind")


# ---------------------------------------------------------------------------
# Record batches on the wire
# ---------------------------------------------------------------------------

cdef str _KINDS = "Iisf"


cdef class RecordLayout:
    """The field types of one record, in wire order.

    Parameters
    ----------
    kinds : str
        One letter per field: ``I`` int (required), ``i`` int (default 0),
        ``s`` str or None, ``f`` float or None (an int is taken as a float).
        Required fields come first.
    allowed : dict[int, tuple[str, ...]], optional
        For some ``s`` fields, the only values a row may hold besides None
        (the table's CHECK constraints); a batch with another value counts
        it in :attr:`RecordCursor.violations`.
    """

    def __cinit__(self, str kinds, dict allowed=None):
        cdef int i
        if not kinds or any(k not in _KINDS for k in kinds):
            raise ValueError(f"record layout: kinds must be letters of {_KINDS!r}, got {kinds!r}")
        self.nrequired = len(kinds) - len(kinds.lstrip("I"))
        if "I" in kinds[self.nrequired:]:
            raise ValueError("record layout: required fields must come first")
        self.kinds = kinds.encode("ascii")
        self.kind = self.kinds
        self.nfields = len(kinds)
        self.allowed = [None] * self.nfields
        for i, values in (allowed or {}).items():
            if not 0 <= i < self.nfields or kinds[i] != "s":
                raise ValueError(f"record layout: field {i} is not a str field")
            self.allowed[i] = tuple(v.encode() for v in values)


cdef inline bint _is_allowed(tuple allowed, const char *s, Py_ssize_t n):
    for value in allowed:
        if PyBytes_GET_SIZE(value) == n and memcmp(PyBytes_AS_STRING(value), s, n) == 0:
            return True
    return False


cdef class RecordCursor:
    """One encoded :class:`~atlas_fast.records.RecordBatch`, read in place.

    Building it checks the whole batch as strictly as msgspec's decoder
    would (array lengths, every field's type, UTF-8 of every string) and
    raises ``ValueError`` if anything is off, so a bad batch fails before
    any of its rows is bound.  :meth:`BulkConnection.insert_records` then
    consumes the records in order; :attr:`remaining` counts those left.

    Parameters
    ----------
    layout : RecordLayout
        The fields of one record.
    data : bytes
        ``records.encode_batch(batch)``; kept alive (and borrowed by SQLite)
        while rows are bound.
    """

    def __cinit__(self, RecordLayout layout, bytes data):
        self.layout = layout
        self.data = data
        self.wire.p = <const uint8_t *>PyBytes_AS_STRING(data)
        self.wire.end = self.wire.p + PyBytes_GET_SIZE(data)
        self.metrics_at = -1
        self._validate()
        self.remaining = self.n_records

    def metrics(self):
        """The encoded ``metrics`` map of the batch (bytes), or None if absent."""
        if self.metrics_at < 0:
            return None
        return self.data[self.metrics_at:]

    cdef int _validate(self) except -1:
        cdef atlas_wire w = self.wire
        cdef atlas_wire_value v
        cdef const uint8_t *base = w.p
        cdef const char *kind = self.layout.kind
        cdef list allowed = self.layout.allowed
        cdef int nfields = self.layout.nfields
        cdef int nrequired = self.layout.nrequired
        cdef Py_ssize_t r, nouter
        cdef unsigned int j
        cdef int t
        cdef char k
        if atlas_wire_next(&w, &v) != ATLAS_WIRE_ARRAY or not 4 <= v.n <= 5:
            raise ValueError("record batch: expected an array of 4 or 5 items (byte 0)")
        nouter = v.n
        for j in range(3):
            if atlas_wire_next(&w, &v) != ATLAS_WIRE_INT:
                raise ValueError(f"record batch: item {j} is not an int (byte {w.p - base})")
            if j == 0:
                self.seq = v.i
            elif j == 1:
                self.start = v.i
            else:
                self.end = v.i
        if atlas_wire_next(&w, &v) != ATLAS_WIRE_ARRAY:
            raise ValueError(f"record batch: records are not an array (byte {w.p - base})")
        self.n_records = v.n
        self.wire.p = w.p  # binding starts at the first record
        for r in range(self.n_records):
            if (atlas_wire_next(&w, &v) != ATLAS_WIRE_ARRAY
                    or not nrequired <= <int>v.n <= nfields):
                raise ValueError(
                    f"record batch: record {r} is not an array of {nrequired} to {nfields} "
                    f"fields (byte {w.p - base})")
            for j in range(v.n):
                t = atlas_wire_next(&w, &v)
                k = kind[j]
                if t == ATLAS_WIRE_INT and (k == b"I" or k == b"i" or k == b"f"):
                    continue
                if t == ATLAS_WIRE_NIL and (k == b"s" or k == b"f"):
                    continue
                if t == ATLAS_WIRE_FLOAT and k == b"f":
                    continue
                if t == ATLAS_WIRE_STR and k == b"s":
                    if v.n > 0x7fffffff or not atlas_utf8_valid(<const uint8_t *>v.s, v.n):
                        raise ValueError(
                            f"record batch: record {r} field {j}: invalid UTF-8 (byte {w.p - base})")
                    if allowed[j] is not None and not _is_allowed(<tuple>allowed[j], v.s, v.n):
                        self.violations += 1
                    continue
                raise ValueError(
                    f"record batch: record {r} field {j}: unexpected value for kind "
                    f"{chr(k)!r} (byte {w.p - base})")
        if nouter == 5:
            if w.p == w.end:
                raise ValueError(f"record batch: the metrics are missing (byte {w.p - base})")
            self.metrics_at = w.p - base
        elif w.p != w.end:
            raise ValueError(f"record batch: trailing data (byte {w.p - base})")
        return 0

    cdef int _bind_next(self, BulkConnection conn, sqlite3_stmt *stmt, int first) except -1:
        """Binds the next record as parameters ``first`` ... (validated already)."""
        cdef atlas_wire_value v
        cdef const char *kind = self.layout.kind
        cdef int nfields = self.layout.nfields
        cdef int j, rc, t, n
        atlas_wire_next(&self.wire, &v)
        n = <int>v.n
        for j in range(nfields):
            if j < n:
                t = atlas_wire_next(&self.wire, &v)
                if t == ATLAS_WIRE_STR:
                    rc = sqlite3_bind_text(stmt, first + j, v.s, <int>v.n, SQLITE_STATIC)
                elif t == ATLAS_WIRE_NIL:
                    rc = sqlite3_bind_null(stmt, first + j)
                elif t == ATLAS_WIRE_INT:
                    if kind[j] == b"f":
                        rc = sqlite3_bind_double(stmt, first + j, <double>v.i)
                    else:
                        rc = sqlite3_bind_int64(stmt, first + j, v.i)
                else:
                    rc = sqlite3_bind_double(stmt, first + j, v.d)
            elif kind[j] == b"i":
                rc = sqlite3_bind_int64(stmt, first + j, 0)
            else:
                rc = sqlite3_bind_null(stmt, first + j)
            if rc != SQLITE_OK:
                conn._check(rc, "bind")
        self.remaining -= 1
        return 0


cdef class BulkConnection:
    """One SQLite connection for bulk writes, outside the ``sqlite3`` module.

    Parameters
    ----------
    path : str
        Database file; it must exist with its schema (see
        :mod:`atlas_fast.migrations`).
    timeout_ms : int
        How long to wait for a lock held by a reader.
    """

    def __cinit__(self, str path, int timeout_ms=60000):
        self.db = NULL
        self.path = path
        self._statements = {}
        rc = sqlite3_open_v2(path.encode(), &self.db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL)
        if rc != SQLITE_OK:
            msg = sqlite3_errmsg(self.db).decode("utf-8", "replace") if self.db else "out of memory"
            sqlite3_close_v2(self.db)
            self.db = NULL
            raise OSError(f"{path}: cannot open database: {msg}")
        sqlite3_busy_timeout(self.db, timeout_ms)

    def __dealloc__(self):
        self.close()

    cdef int _check(self, int rc, str what) except -1:
        if rc != SQLITE_OK and rc != SQLITE_DONE and rc != SQLITE_ROW:
            raise StorageError(f"{self.path}: {what}: {sqlite3_errmsg(self.db).decode('utf-8', 'replace')} (code {rc})")
        return 0

    cdef sqlite3_stmt *_prepare(self, str sql) except NULL:
        cdef sqlite3_stmt *stmt = NULL
        cached = self._statements.get(sql)
        if cached is not None:
            return <sqlite3_stmt *><size_t>cached
        if self.db == NULL:
            raise RuntimeError("connection is closed")
        encoded = sql.encode()
        self._check(sqlite3_prepare_v2(self.db, encoded, <int>len(encoded), &stmt, NULL), "prepare")
        if stmt == NULL:
            raise ValueError("empty SQL statement")
        self._statements[sql] = <size_t>stmt
        return stmt

    cpdef exec(self, str sql):
        """Run one or more statements without parameters (BEGIN, COMMIT, PRAGMA...)."""
        cdef char *err = NULL
        if self.db == NULL:
            raise RuntimeError("connection is closed")
        rc = sqlite3_exec(self.db, sql.encode(), NULL, NULL, &err)
        if rc != SQLITE_OK:
            msg = err.decode("utf-8", "replace") if err else "error"
            sqlite3_free(err)
            raise StorageError(f"{self.path}: {msg} (code {rc})")

    cpdef long long execute(self, str sql, tuple params=()) except -1:
        """Run one statement with parameters; returns the rows it changed."""
        return self.executemany(sql, [params])

    cpdef long long scalar_int(self, str sql) except? -1:
        """The first column of the first row of ``sql`` as an int (``PRAGMA page_size``)."""
        cdef sqlite3_stmt *stmt = self._prepare(sql)
        cdef int rc = sqlite3_step(stmt)
        cdef long long value
        try:
            if rc != SQLITE_ROW:
                self._check(rc, "step")
                raise ValueError(f"{sql!r} returned no row")
            value = sqlite3_column_int64(stmt, 0)
        finally:
            sqlite3_reset(stmt)
        return value

    cpdef long long executemany(self, str sql, list rows, tuple prefix=()) except -1:
        """Run ``sql`` once per row of ``rows``, each bound after ``prefix``.

        Returns
        -------
        int
            Rows inserted, updated or deleted (``INSERT OR IGNORE`` skips do
            not count).
        """
        cdef sqlite3_stmt *stmt = self._prepare(sql)
        cdef int nparams = sqlite3_bind_parameter_count(stmt)
        cdef int nprefix = <int>len(prefix)
        cdef int i, rc
        cdef tuple row
        cdef long long before = sqlite3_total_changes64(self.db)
        for i in range(nprefix):
            _bind(self, stmt, i + 1, prefix[i])
        try:
            for obj in rows:
                row = <tuple?>obj
                if len(row) + nprefix != nparams:
                    raise ValueError(
                        f"row has {len(row)} values, statement takes {nparams - nprefix} after the prefix")
                for i in range(len(row)):
                    _bind(self, stmt, nprefix + i + 1, row[i])
                rc = sqlite3_step(stmt)
                if rc != SQLITE_DONE and rc != SQLITE_ROW:
                    sqlite3_reset(stmt)
                    self._check(rc, "step")
                sqlite3_reset(stmt)
        finally:
            sqlite3_reset(stmt)
        return sqlite3_total_changes64(self.db) - before

    cpdef long long insert_records(self, RecordCursor records, long long max_rows, tuple prefix,
                                   str sql_one, str sql_many=None, int rows_per_statement=1) except -1:
        """Insert up to ``max_rows`` of the records left in ``records``.

        ``sql_one`` inserts one row: ``prefix`` then the record's fields.
        ``sql_many``, if given, inserts ``rows_per_statement`` rows at once:
        parameters ``1 .. len(prefix)`` are the prefix, shared by every row,
        then each row's fields in turn (``?NNN`` numbering).

        Returns
        -------
        int
            Rows inserted (``INSERT OR IGNORE`` skips do not count).
        """
        cdef int nfields = records.layout.nfields
        cdef int nprefix = <int>len(prefix)
        cdef int k = rows_per_statement if sql_many is not None else 1
        cdef sqlite3_stmt *one = self._prepare(sql_one)
        cdef sqlite3_stmt *many = NULL
        cdef long long n = min(max_rows, <long long>records.remaining)
        cdef long long before = sqlite3_total_changes64(self.db)
        cdef int i, r, rc
        if sqlite3_bind_parameter_count(one) != nprefix + nfields:
            raise ValueError(f"statement takes {sqlite3_bind_parameter_count(one)} values, "
                             f"not {nprefix} + {nfields}")
        if k > 1:
            many = self._prepare(sql_many)
            if sqlite3_bind_parameter_count(many) != nprefix + k * nfields:
                raise ValueError(f"statement takes {sqlite3_bind_parameter_count(many)} values, "
                                 f"not {nprefix} + {k} * {nfields}")
        try:
            for i in range(nprefix):
                _bind(self, one, i + 1, prefix[i])
                if many != NULL:
                    _bind(self, many, i + 1, prefix[i])
            while many != NULL and n >= k:
                for r in range(k):
                    records._bind_next(self, many, nprefix + r * nfields + 1)
                rc = sqlite3_step(many)
                if rc != SQLITE_DONE and rc != SQLITE_ROW:
                    sqlite3_reset(many)
                    self._check(rc, "step")
                sqlite3_reset(many)
                n -= k
            while n > 0:
                records._bind_next(self, one, nprefix + 1)
                rc = sqlite3_step(one)
                if rc != SQLITE_DONE and rc != SQLITE_ROW:
                    sqlite3_reset(one)
                    self._check(rc, "step")
                sqlite3_reset(one)
                n -= 1
        finally:
            # No binding may point into a batch or a prefix that is gone.
            sqlite3_reset(one)
            sqlite3_clear_bindings(one)
            if many != NULL:
                sqlite3_reset(many)
                sqlite3_clear_bindings(many)
        return sqlite3_total_changes64(self.db) - before

    cpdef close(self):
        """Finalise statements and close; safe to call twice."""
        if self.db == NULL:
            return
        for ptr in self._statements.values():
            sqlite3_finalize(<sqlite3_stmt *><size_t>ptr)
        self._statements.clear()
        sqlite3_close_v2(self.db)
        self.db = NULL
