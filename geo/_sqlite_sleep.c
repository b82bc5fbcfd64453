/*
 * civicgrid.geo._sqlite_sleep: short sleeps for the SQLite inside DuckDB's sqlite_scanner extension.
 *
 * The SQLite compiled into PyPI's duckdb-extension-sqlite-scanner 1.5.5 was built without usleep/nanosleep, so its
 * unix VFS's xSleep rounds every sleep up to whole seconds (sqlite3_sleep(5) takes one second). A SQLite catalog's
 * reads beside a writer then stall for a second: a reader racing a writer's WAL commit waits 1-351 us in
 * walTryBeginRead, and a busy handler retries after 1,000,000 us (bench/DUCKLAKE.md section 12).
 *
 * install() gives SQLite's unix VFSs an xSleep that sleeps what is asked, except a request of a second or more
 * (only a busy handler of such a build asks it), which sleeps busy_step_us instead; the caller raises the busy
 * timeout so the handler's patience stays what it was (civicgrid.geo.store). The function is plain C: it never
 * touches Python, so DuckDB's threads can call it without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <errno.h>
#include <time.h>

/* The head of SQLite's sqlite3_vfs (sqlite3.h), up to xSleep: unchanged since SQLite 3.5 (iVersion 1). */
typedef struct vfs_head vfs_head;
typedef int (*sleep_fn)(vfs_head *, int);
struct vfs_head {
    int iVersion;
    int szOsFile;
    int mxPathname;
    vfs_head *pNext;
    const char *zName;
    void *pAppData;
    void *xOpen;
    void *xDelete;
    void *xAccess;
    void *xFullPathname;
    void *xDlOpen;
    void *xDlError;
    void *xDlSym;
    void *xDlClose;
    void *xRandomness;
    sleep_fn xSleep;
};
typedef vfs_head *(*find_fn)(const char *);

static long busy_step_us = 2000;
static long calls = 0;
static long busy_calls = 0;

static int short_sleep(vfs_head *vfs, int microseconds) {
    (void)vfs;
    long us = microseconds;
    __atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED);
    if (us >= 1000000) {
        us = __atomic_load_n(&busy_step_us, __ATOMIC_RELAXED);
        __atomic_add_fetch(&busy_calls, 1, __ATOMIC_RELAXED);
    }
    if (us > 0) {
        struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
        }
    }
    return microseconds;
}

/* SQLite's own VFSs on unix; each is looked up by name under SQLite's mutex (never by walking the list). */
static const char *const NAMES[] = {"unix", "unix-excl", "unix-dotfile", "unix-none", "unix-flock", "unix-afp",
                                    "unix-posix", "unix-proxy", NULL};

static PyObject *install(PyObject *self, PyObject *args) {
    const char *path;
    long step;
    (void)self;
    if (!PyArg_ParseTuple(args, "sl", &path, &step)) {
        return NULL;
    }
    if (step <= 0 || step >= 1000000) {
        PyErr_SetString(PyExc_ValueError, "the busy step must be between 1 and 999,999 microseconds");
        return NULL;
    }
    /* the copy of the extension DuckDB loaded, never a second one */
    void *handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (handle == NULL) {
        PyErr_Format(PyExc_RuntimeError, "%s is not loaded in this process", path);
        return NULL;
    }
    find_fn find = (find_fn)dlsym(handle, "sqlite3_vfs_find");
    if (find == NULL) {
        dlclose(handle);
        PyErr_Format(PyExc_RuntimeError, "%s does not export sqlite3_vfs_find", path);
        return NULL;
    }
    __atomic_store_n(&busy_step_us, step, __ATOMIC_RELAXED);
    long patched = 0;
    (void)find(NULL);  /* initializes SQLite */
    vfs_head *unix_vfs = find("unix");  /* every unix VFS shares its unixSleep */
    sleep_fn original = unix_vfs ? __atomic_load_n(&unix_vfs->xSleep, __ATOMIC_ACQUIRE) : NULL;
    for (const char *const *name = NAMES; *name != NULL; name++) {
        vfs_head *vfs = find(*name);
        if (vfs == NULL) {
            continue;
        }
        sleep_fn current = __atomic_load_n(&vfs->xSleep, __ATOMIC_ACQUIRE);
        if (current == short_sleep) {
            patched++;
        } else if (current == original) {
            __atomic_store_n(&vfs->xSleep, short_sleep, __ATOMIC_RELEASE);
            patched++;
        }
    }
    dlclose(handle);  /* DuckDB's own reference keeps the extension loaded */
    return PyLong_FromLong(patched);
}

static PyObject *counts(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return Py_BuildValue("(ll)", __atomic_load_n(&calls, __ATOMIC_RELAXED),
                         __atomic_load_n(&busy_calls, __ATOMIC_RELAXED));
}

static PyMethodDef methods[] = {
    {"install", install, METH_VARARGS,
     "install(path, busy_step_us) -> int: give the unix VFSs of the loaded SQLite extension at path the short\n"
     "xSleep; returns how many VFSs have it."},
    {"counts", counts, METH_NOARGS, "counts() -> (sleeps, busy sleeps) since the process started."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_sqlite_sleep",
                                    "Short sleeps for the SQLite inside sqlite_scanner.", -1, methods};

PyMODINIT_FUNC PyInit__sqlite_sleep(void) { return PyModule_Create(&module); }
