/* A key's admission and settle on its slot of counters, in C: gateway/billing/lane.py's `PyLane`,
 * which is the reference and the fallback, says what each call does; this file does the same.
 *
 * Every limited request calls `admit` once and `settle` once. In Python they cost ~13k instructions
 * of the ~34k the limits added to a request (docs/performance.md); here, ~3k. A slot is a buffer of
 * doubles (a process's own, or its part of the counters file `workers: N` map); the layout's offsets
 * come from gateway/billing/counters.py when the lane is made, so it is written down in one place.
 *
 * Built at install when a compiler is there (setup.py: an optional extension); the gateway runs on
 * the Python lanes without it, or with GATEWAY_NO_EXTENSIONS=1.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    Py_buffer view;  /* the slot; held until `close` */
    double *s;       /* NULL once closed */
    int column;      /* this worker's reservations in the file (0: none, in memory) */
    int fd;          /* the counters file, locked around each call (-1: none, in memory) */
    int rpm, tpm, period, spent, held, reserved, seconds;  /* the layout (counters.py) */
} Lane;

static PyObject *LIMIT_BUDGET, *LIMIT_REQUESTS, *LIMIT_TOKENS;

enum { NEWEST = 0, TOTAL = 1, FIRST = 2 };  /* a window's fields (gateway/billing/window.py) */

static int
lane_init(Lane *self, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"slot", "column", "fd", "layout", NULL};
    PyObject *slot;
    if (self->s != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a lane is made once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oii(iiiiiii)", names, &slot, &self->column, &self->fd,
                                     &self->rpm, &self->tpm, &self->period, &self->spent, &self->held,
                                     &self->reserved, &self->seconds))
        return -1;
    if (PyObject_GetBuffer(slot, &self->view, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    Py_ssize_t size = self->view.len / (Py_ssize_t)sizeof(double);
    int last = self->rpm > self->tpm ? self->rpm : self->tpm;
    if (self->view.itemsize != sizeof(double) || self->view.format == NULL || strcmp(self->view.format, "d") != 0
        || self->seconds < 1 || last + FIRST + self->seconds > size || self->period >= size || self->spent >= size
        || self->held >= size || self->reserved >= size || self->column >= size || self->rpm < 0 || self->tpm < 0
        || self->period < 0 || self->spent < 0 || self->held < 0 || self->reserved < 0 || self->column < 0) {
        PyBuffer_Release(&self->view);
        PyErr_SetString(PyExc_ValueError, "a lane needs a writable slot of doubles that holds its layout");
        return -1;
    }
    self->s = (double *)self->view.buf;
    return 0;
}

static void
lane_release(Lane *self)
{
    if (self->s != NULL) {
        self->s = NULL;
        PyBuffer_Release(&self->view);
    }
}

static void
lane_dealloc(Lane *self)
{
    lane_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The file's lock, as fcntl.lockf(fd, LOCK_EX) takes it: a POSIX record lock on the whole file, waited
 * for without the GIL if another worker holds it. */
static int
lock(int fd, short type)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    if (fcntl(fd, F_SETLK, &fl) == 0)
        return 0;
    if (type == F_UNLCK || (errno != EAGAIN && errno != EACCES)) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    int rc;
    do {
        Py_BEGIN_ALLOW_THREADS
        rc = fcntl(fd, F_SETLKW, &fl);
        Py_END_ALLOW_THREADS
    } while (rc < 0 && errno == EINTR && PyErr_CheckSignals() == 0);
    if (rc < 0) {
        if (!PyErr_Occurred())
            PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

/* window.advance: empty the buckets of seconds that left the minute ending at `now_s`. */
static void
advance(double *s, int at, int seconds, long long now_s)
{
    long long newest = (long long)s[at + NEWEST];
    if (now_s <= newest)
        return;
    if (now_s - newest >= seconds) {
        for (int i = at + FIRST; i < at + FIRST + seconds; i++)
            s[i] = 0;
        s[at + TOTAL] = 0;
    }
    else {
        double total = s[at + TOTAL];
        for (long long x = newest + 1; x <= now_s; x++) {
            int i = at + FIRST + (int)(x % seconds);
            total -= s[i];
            s[i] = 0;
        }
        s[at + TOTAL] = total > 0 ? total : 0;
    }
    s[at + NEWEST] = (double)now_s;
}

/* A number argument; None (when `none` points somewhere) sets *none. -1 on a bad argument. */
static int
number(PyObject *arg, double *out, int *none)
{
    if (none != NULL) {
        *none = arg == Py_None;
        if (*none)
            return 0;
    }
    *out = PyFloat_CheckExact(arg) ? PyFloat_AS_DOUBLE(arg) : PyFloat_AsDouble(arg);
    return *out == -1.0 && PyErr_Occurred() ? -1 : 0;
}

static PyObject *
count(double value)
{
    return PyLong_FromLongLong((long long)value);
}

static double *
open_slot(Lane *self)
{
    if (self->s == NULL)
        PyErr_SetString(PyExc_ValueError, "the lane is closed");
    return self->s;
}

/* admit(now, rpm, tpm, tokens, budget, period, reserve): PyLane.admit. */
static PyObject *
lane_admit(Lane *self, PyObject *const *args, Py_ssize_t nargs)
{
    double now, rpm = 0, tpm = 0, tokens, budget = 0, period, reserve;
    int no_rpm, no_tpm, no_budget;
    if (nargs != 7) {
        PyErr_Format(PyExc_TypeError, "admit() takes 7 arguments (%zd given)", nargs);
        return NULL;
    }
    if (number(args[0], &now, NULL) < 0 || number(args[1], &rpm, &no_rpm) < 0 || number(args[2], &tpm, &no_tpm) < 0
        || number(args[3], &tokens, NULL) < 0 || number(args[4], &budget, &no_budget) < 0
        || number(args[5], &period, NULL) < 0 || number(args[6], &reserve, NULL) < 0)
        return NULL;
    if (!isfinite(now)) {  /* (as int() of it in Python) */
        PyErr_SetString(PyExc_ValueError, "admit() needs a finite time");
        return NULL;
    }
    double *s = open_slot(self);
    if (s == NULL || (self->fd >= 0 && lock(self->fd, F_WRLCK) < 0))
        return NULL;
    long long now_s = (long long)now;
    PyObject *limit = NULL, *out;
    if (!no_budget) {
        if (s[self->period] != period) {  /* a new period starts at zero */
            s[self->period] = period;
            s[self->spent] = 0;
        }
        if (s[self->spent] + s[self->held] + s[self->reserved] >= budget)
            limit = LIMIT_BUDGET;
    }
    if (!no_rpm) {
        if (s[self->rpm + NEWEST] < now_s)
            advance(s, self->rpm, self->seconds, now_s);
        if (s[self->rpm + TOTAL] >= rpm && limit == NULL)
            limit = LIMIT_REQUESTS;
    }
    if (!no_tpm) {
        if (s[self->tpm + NEWEST] < now_s)
            advance(s, self->tpm, self->seconds, now_s);
        if (s[self->tpm + TOTAL] + tokens > tpm && limit == NULL)
            limit = LIMIT_TOKENS;
    }
    if (limit != NULL) {
        out = Py_NewRef(limit);
    }
    else {
        if (reserve != 0 && !no_budget) {
            s[self->reserved] += reserve;
            if (self->column)
                s[self->column] += reserve;
        }
        int bucket = FIRST + (int)(now_s % self->seconds);
        double tokens_used = 0, requests_used;
        if (!no_tpm) {
            if (tokens != 0) {
                s[self->tpm + bucket] += tokens;
                s[self->tpm + TOTAL] += tokens;
            }
            tokens_used = s[self->tpm + TOTAL];
        }
        if (!no_rpm) {
            s[self->rpm + bucket] += 1;
            requests_used = s[self->rpm + TOTAL] += 1;
            out = no_tpm ? PyTuple_New(1) : PyTuple_New(2);
            if (out != NULL) {
                PyTuple_SET_ITEM(out, 0, count(rpm - requests_used));
                if (!no_tpm)
                    PyTuple_SET_ITEM(out, 1, count(tpm - tokens_used));
            }
        }
        else if (!no_tpm) {
            out = PyTuple_New(1);
            if (out != NULL)
                PyTuple_SET_ITEM(out, 0, count(tpm - tokens_used));
        }
        else {
            out = PyTuple_New(0);
        }
        /* (a count that failed to convert leaves NULL in the tuple: only out of memory) */
        if (out != NULL) {
            for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(out); i++) {
                if (PyTuple_GET_ITEM(out, i) == NULL) {
                    Py_CLEAR(out);
                    break;
                }
            }
        }
    }
    if (self->fd >= 0 && lock(self->fd, F_UNLCK) < 0)
        Py_CLEAR(out);
    return out;
}

/* settle(second, tokens, reserve, cost, period): PyLane.settle. */
static PyObject *
lane_settle(Lane *self, PyObject *const *args, Py_ssize_t nargs)
{
    double second, tokens, reserve, cost, period;
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "settle() takes 5 arguments (%zd given)", nargs);
        return NULL;
    }
    if (number(args[0], &second, NULL) < 0 || number(args[1], &tokens, NULL) < 0 || number(args[2], &reserve, NULL) < 0
        || number(args[3], &cost, NULL) < 0 || number(args[4], &period, NULL) < 0)
        return NULL;
    if (!isfinite(second)) {
        PyErr_SetString(PyExc_ValueError, "settle() needs a finite second");
        return NULL;
    }
    double *s = open_slot(self);
    if (s == NULL || (self->fd >= 0 && lock(self->fd, F_WRLCK) < 0))
        return NULL;
    int at = self->tpm;
    double newest = s[at + NEWEST];
    /* window.correct: only a second the window still holds */
    if (tokens != 0 && newest - second < self->seconds && second <= newest) {
        int i = at + FIRST + (int)((long long)second % self->seconds);
        if (tokens < -s[i])  /* an estimate is never taken back below zero */
            tokens = -s[i];
        s[i] += tokens;
        double total = s[at + TOTAL] + tokens;
        s[at + TOTAL] = total > 0 ? total : 0;
    }
    if (reserve != 0) {
        if (self->column) {  /* this worker's own, so a restarted worker can drop what it held */
            double held = s[self->column];
            if (reserve > held)
                reserve = held;
            s[self->column] = held - reserve;
        }
        double left = s[self->reserved] - reserve;
        s[self->reserved] = left > 0 ? left : 0;
    }
    if (cost != 0) {
        if (s[self->period] != period) {
            s[self->period] = period;
            s[self->spent] = cost;
        }
        else {
            s[self->spent] += cost;
        }
    }
    if (self->fd >= 0 && lock(self->fd, F_UNLCK) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
lane_close(Lane *self, PyObject *Py_UNUSED(ignored))
{
    lane_release(self);
    Py_RETURN_NONE;
}

static PyMethodDef lane_methods[] = {
    {"admit", (PyCFunction)(void (*)(void))lane_admit, METH_FASTCALL,
     "admit(now, rpm, tpm, tokens, budget, period, reserve): check every limit and charge them all, or none"},
    {"settle", (PyCFunction)(void (*)(void))lane_settle, METH_FASTCALL,
     "settle(second, tokens, reserve, cost, period): correct the token estimate, release, spend"},
    {"close", (PyCFunction)lane_close, METH_NOARGS, "let go of the slot"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gateway.billing._lane.Lane",
    .tp_doc = "Lane(slot, column, fd, layout): a key's admission and settle on its slot (PyLane, in C)",
    .tp_basicsize = sizeof(Lane),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)lane_init,
    .tp_dealloc = (destructor)lane_dealloc,
    .tp_methods = lane_methods,
};

static struct PyModuleDef lane_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gateway.billing._lane",
    .m_doc = "gateway/billing/lane.py's PyLane, in C",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__lane(void)
{
    if (PyType_Ready(&LaneType) < 0)
        return NULL;
    LIMIT_BUDGET = PyUnicode_InternFromString("budget");
    LIMIT_REQUESTS = PyUnicode_InternFromString("requests");
    LIMIT_TOKENS = PyUnicode_InternFromString("tokens");
    if (LIMIT_BUDGET == NULL || LIMIT_REQUESTS == NULL || LIMIT_TOKENS == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&lane_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Lane", (PyObject *)&LaneType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
