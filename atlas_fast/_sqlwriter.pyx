"""Compiled bulk writer: SQLite's C API, bound straight from Python rows.

The stdlib ``sqlite3`` module spends most of an ``executemany`` in per-value
dispatch (about 0.4 µs per bound value here); this binds each value with one
type test and borrows the UTF-8 buffer CPython already caches in every str
(``SQLITE_STATIC``: the row list outlives the statement step).  A prefix of
values shared by all rows (run id, source) is bound once per call: SQLite
keeps bindings across ``sqlite3_reset``.

A wheel may bundle its own copy of SQLite.  Two copies of SQLite in one
process must never open the same database (POSIX locks would be released
behind each other's back), so only the writer process, which opens nothing
through the ``sqlite3`` module, uses this class.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_AsLongLong
from cpython.unicode cimport PyUnicode_AsUTF8AndSize


cdef inline int _bind(BulkConnection conn, sqlite3_stmt *stmt, int i, object value) except -1:
    cdef Py_ssize_t n
    cdef const char *text
    cdef int rc
    if value is None:
        rc = sqlite3_bind_null(stmt, i)
    elif type(value) is str:
        text = PyUnicode_AsUTF8AndSize(value, &n)  # raises on lone surrogates
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
            raise RuntimeError(f"{self.path}: {what}: {sqlite3_errmsg(self.db).decode('utf-8', 'replace')} (code {rc})")
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
            raise RuntimeError(f"{self.path}: {msg} (code {rc})")

    cpdef long long execute(self, str sql, tuple params=()) except -1:
        """Run one statement with parameters; returns the rows it changed."""
        return self.executemany(sql, [params])

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

    cpdef close(self):
        """Finalise statements and close; safe to call twice."""
        if self.db == NULL:
            return
        for ptr in self._statements.values():
            sqlite3_finalize(<sqlite3_stmt *><size_t>ptr)
        self._statements.clear()
        sqlite3_close_v2(self.db)
        self.db = NULL
