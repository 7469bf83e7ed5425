# Declarations of the compiled bulk SQLite writer (see _sqlwriter.pyx).

from libc.stdint cimport int64_t, uint8_t

cdef extern from "sqlite3.h" nogil:
    ctypedef struct sqlite3
    ctypedef struct sqlite3_stmt
    ctypedef void (*sqlite3_destructor_type)(void *)
    int SQLITE_OK
    int SQLITE_ROW
    int SQLITE_DONE
    int SQLITE_OPEN_READWRITE
    int SQLITE_OPEN_CREATE
    int SQLITE_OPEN_NOMUTEX
    sqlite3_destructor_type SQLITE_STATIC
    sqlite3_destructor_type SQLITE_TRANSIENT
    int sqlite3_open_v2(const char *filename, sqlite3 **db, int flags, const char *vfs)
    int sqlite3_close_v2(sqlite3 *db)
    int sqlite3_busy_timeout(sqlite3 *db, int ms)
    int sqlite3_exec(sqlite3 *db, const char *sql, void *callback, void *arg, char **errmsg)
    int sqlite3_prepare_v2(sqlite3 *db, const char *sql, int nbyte, sqlite3_stmt **stmt,
                           const char **tail)
    int sqlite3_bind_parameter_count(sqlite3_stmt *stmt)
    int sqlite3_bind_int64(sqlite3_stmt *stmt, int i, long long value)
    int sqlite3_bind_double(sqlite3_stmt *stmt, int i, double value)
    int sqlite3_bind_text(sqlite3_stmt *stmt, int i, const char *text, int n,
                          sqlite3_destructor_type destructor)
    int sqlite3_bind_blob(sqlite3_stmt *stmt, int i, const void *data, int n,
                          sqlite3_destructor_type destructor)
    int sqlite3_bind_null(sqlite3_stmt *stmt, int i)
    int sqlite3_step(sqlite3_stmt *stmt)
    int sqlite3_reset(sqlite3_stmt *stmt)
    int sqlite3_finalize(sqlite3_stmt *stmt)
    int sqlite3_clear_bindings(sqlite3_stmt *stmt)
    long long sqlite3_column_int64(sqlite3_stmt *stmt, int i)
    long long sqlite3_total_changes64(sqlite3 *db)
    const char *sqlite3_errmsg(sqlite3 *db)
    void sqlite3_free(void *ptr)


cdef extern from "atlas_wire.h" nogil:
    enum:
        ATLAS_WIRE_NIL
        ATLAS_WIRE_INT
        ATLAS_WIRE_FLOAT
        ATLAS_WIRE_STR
        ATLAS_WIRE_ARRAY
        ATLAS_WIRE_MAP
        ATLAS_WIRE_BOOL
        ATLAS_WIRE_OTHER
        ATLAS_WIRE_TRUNCATED
    ctypedef struct atlas_wire:
        const uint8_t *p
        const uint8_t *end
    ctypedef struct atlas_wire_value:
        int type
        unsigned int n
        int64_t i
        double d
        const char *s
    int atlas_wire_next(atlas_wire *w, atlas_wire_value *v)
    int atlas_utf8_valid(const uint8_t *s, size_t n)


cdef class RecordLayout:
    cdef bytes kinds
    cdef const char *kind
    cdef readonly int nfields
    cdef readonly int nrequired
    cdef list allowed


cdef class RecordCursor:
    cdef readonly RecordLayout layout
    cdef bytes data
    cdef atlas_wire wire
    cdef Py_ssize_t metrics_at
    cdef readonly long long seq
    cdef readonly long long start
    cdef readonly long long end
    cdef readonly Py_ssize_t n_records
    cdef readonly Py_ssize_t remaining
    cdef readonly Py_ssize_t violations
    cdef int _validate(self) except -1
    cdef int _bind_next(self, BulkConnection conn, sqlite3_stmt *stmt, int first) except -1


cdef class BulkConnection:
    cdef sqlite3 *db
    cdef readonly str path
    cdef dict _statements
    cdef sqlite3_stmt *_prepare(self, str sql) except NULL
    cdef int _check(self, int rc, str what) except -1
    cpdef exec(self, str sql)
    cpdef long long execute(self, str sql, tuple params=*) except -1
    cpdef long long scalar_int(self, str sql) except? -1
    cpdef long long executemany(self, str sql, list rows, tuple prefix=*) except -1
    cpdef long long insert_records(self, RecordCursor records, long long max_rows, tuple prefix,
                                   str sql_one, str sql_many=*, int rows_per_statement=*) except -1
    cpdef close(self)
