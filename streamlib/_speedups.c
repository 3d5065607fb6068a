/* streamlib._speedups: the message path between two actors, in C.
 *
 * Why: a message crossing a chain of pass-through actors spends most of its time in the
 * runtime's bookkeeping -- the mailbox's counters, the checks that decide whether the
 * receiver's tick may run at once (hand-off), entering the receiver's task and context --
 * written in Python, ~230 bytecodes a hop. This module runs exactly that bookkeeping in C
 * and calls Python only for the user's `process` and for the rare paths.
 *
 * How it stays the same program: the Python code is the specification and the fallback.
 * `install()` (called by streamlib.speedups) replaces four functions of the Python code --
 * `Mailbox.put_nowait`, `Mailbox.get_nowait`, `ActorRuntime.woken`, `ports.deliver` -- with C
 * versions that handle the common case and call the original Python function for everything
 * else (a full or closed mailbox, an actor that may not hand off now, ...). The C code reads and writes
 * the classes' own `__slots__`, at the offsets their member descriptors give: one object
 * layout, owned by the Python classes, so every other line of Python keeps working on the
 * same objects. STREAMLIB_PURE_PYTHON=1 skips the install; CI runs the core tests both ways.
 *
 * Everything here runs with the GIL held and never releases it, so, like the deque
 * operations it replaces, each C function is atomic with respect to other threads up to
 * the point where it calls back into Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#ifdef Py_GIL_DISABLED
#error "streamlib._speedups relies on the GIL; the pure-Python path serves free-threaded builds"
#endif

/* ------------------------------------------------------------------ slots by offset */

typedef struct {
    const char *name;
    Py_ssize_t offset;
} Slot;

/* Read the offset of `cls`'s slot `name` from its member descriptor. */
static int
slot_offset(PyObject *cls, Slot *slot)
{
    PyObject *descr = PyObject_GetAttrString(cls, slot->name);
    if (descr == NULL) {
        return -1;
    }
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%R.%s is not a slot", cls, slot->name);
        Py_DECREF(descr);
        return -1;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "%R.%s is not an object slot", cls, slot->name);
        Py_DECREF(descr);
        return -1;
    }
    slot->offset = member->offset;
    Py_DECREF(descr);
    return 0;
}

/* Python 3.12's exception API, on 3.11 too: one normalized exception object with its traceback. */
static PyObject *
fetch_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
        Py_DECREF(tb);
    }
    Py_DECREF(type);
    return value;
#endif
}

static void
restore_exception(PyObject *exc) /* steals exc */
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyObject *type = Py_NewRef((PyObject *)Py_TYPE(exc));
    PyErr_Restore(type, exc, PyException_GetTraceback(exc));
#endif
}

/* time.perf_counter() and time.monotonic(): on Linux both read CLOCK_MONOTONIC, which C reads
 * directly; elsewhere the Python functions are called (their clocks differ by platform). */
#ifdef __linux__
#include <time.h>
static inline int
now_seconds(PyObject *unused, double *out)
{
    struct timespec ts;
    (void)unused;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    *out = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    return 0;
}
#else
static inline int
now_seconds(PyObject *clock, double *out)
{
    PyObject *now = PyObject_CallNoArgs(clock);
    if (now == NULL) {
        return -1;
    }
    *out = PyFloat_AsDouble(now);
    Py_DECREF(now);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}
#endif

#define SLOT(obj, s) (*(PyObject **)((char *)(obj) + (s).offset))

/* Borrowed value of a slot; NULL with AttributeError if it is unset. */
static inline PyObject *
get_slot(PyObject *obj, Slot s)
{
    PyObject *value = SLOT(obj, s);
    if (value == NULL) {
        PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%s'", Py_TYPE(obj)->tp_name, s.name);
    }
    return value;
}

/* Store a new reference in a slot (steals `value`). */
static inline void
set_slot(PyObject *obj, Slot s, PyObject *value)
{
    PyObject *old = SLOT(obj, s);
    SLOT(obj, s) = value;
    Py_XDECREF(old);
}

static inline void
set_slot_borrowed(PyObject *obj, Slot s, PyObject *value)
{
    Py_INCREF(value);
    set_slot(obj, s, value);
}

/* slot += delta, for the int counters. */
static int
add_to_slot(PyObject *obj, Slot s, Py_ssize_t delta)
{
    PyObject *value = get_slot(obj, s);
    if (value == NULL) {
        return -1;
    }
    PyObject *result;
    Py_ssize_t n = PyLong_CheckExact(value) ? PyLong_AsSsize_t(value) : -1;
    if (n >= 0) {
        result = PyLong_FromSsize_t(n + delta);
    }
    else {
        PyErr_Clear();
        PyObject *d = PyLong_FromSsize_t(delta);
        if (d == NULL) {
            return -1;
        }
        result = PyNumber_Add(value, d);
        Py_DECREF(d);
    }
    if (result == NULL) {
        return -1;
    }
    set_slot(obj, s, result);
    return 0;
}

/* ------------------------------------------------------------------ what install() binds */

/* Mailbox */
static PyTypeObject *Mailbox_type;
static PyTypeObject *Output_type;
static PyTypeObject *Input_type;
static PyTypeObject *Slice_type;
static Slot mb_items = {"_items"}, mb_maxsize = {"maxsize"}, mb_closed = {"closed"}, mb_received = {"received"},
            mb_taken = {"taken"}, mb_getters = {"_getters"}, mb_putters = {"_putters"}, mb_waker = {"waker"};
/* StreamOutput */
static Slot out_msg_type = {"msg_type"}, out_sent = {"sent"}, out_snapshot = {"_snapshot"};
/* StreamInput */
static Slot in_mailbox = {"mailbox"}, in_tick_mark = {"tick_mark"};
/* ActorRuntime */
static PyTypeObject *Runtime_type;
static Slot rt_loop = {"loop"}, rt_loop_thread = {"loop_thread"}, rt_handoff_port = {"handoff_port"},
            rt_handoffs = {"handoffs"}, rt_ticked = {"ticked"}, rt_ticks = {"ticks"}, rt_handed_off = {"handed_off"},
            rt_sampled = {"sampled"}, rt_inline_tick = {"inline_tick"}, rt_task = {"task"}, rt_doorbell = {"doorbell"},
            rt_in_process = {"in_process"}, rt_context = {"context"}, rt_driver_id = {"driver_id"},
            rt_last_fps = {"last_fps"};
/* LoopSlice */
static Slot ls_depth = {"depth"}, ls_ends = {"ends"}, ls_open = {"open"};
/* TimedTick */
static PyTypeObject *TimedTick_type;
static Slot tt_timestamp = {"timestamp"}, tt_frame_number = {"frame_number"}, tt_clock_source_id = {"clock_source_id"},
            tt_fps = {"fps"};

static PyObject *EMPTY;              /* streamlib.mailbox.EMPTY */
static PyObject *Message_type;       /* streamlib.messages.Message */
static PyObject *current_tasks;      /* asyncio.tasks._current_tasks: loop -> running task */
static PyObject *perf_counter, *monotonic;
static PyObject *py_put_nowait;      /* the Python Mailbox.put_nowait: full or closed mailboxes */
static PyObject *py_woken;           /* the Python ActorRuntime.woken: every case but a hand-off */
static PyObject *wake_one;           /* Mailbox._wake_one(waiters) */
static PyObject *deque_popleft, *deque_append;
static Py_ssize_t max_depth;
static PyObject *str_clock_rate, *str_timestamp, *str_frame_number, *str_clock_source_id;
static PyObject *str_mark_inputs, *str_handoff_waits, *str_handoff_failed, *str_open_slice,
    *str_done, *str_await, *str_check, *str_subscribers, *str_put_nowait;
static PyObject *object_type = (PyObject *)&PyBaseObject_Type;

static int installed = 0;

/* ------------------------------------------------------------------ the receiver's side */

static int hand_off(PyObject *runtime, PyObject *port, PyObject *mailbox, PyObject *items, PyObject *running);

/* ActorRuntime.woken(port): hand the tick off if everything allows it, else the Python path.
 * The checks are the Python method's first branch, in the same order. Returns 1 if handed
 * off, 0 if the Python path should run, -1 on error. */
static int
try_hand_off(PyObject *runtime, PyObject *port)
{
    if (!PyObject_TypeCheck(runtime, Runtime_type)) {
        return 0;
    }
    PyObject *loop = get_slot(runtime, rt_loop);
    PyObject *handoff_port = SLOT(runtime, rt_handoff_port);
    if (loop == NULL || port != handoff_port) {
        PyErr_Clear();
        return 0;
    }
    PyObject *running = PyDict_GetItemWithError(current_tasks, loop); /* borrowed */
    if (running == NULL) {
        return PyErr_Occurred() ? -1 : 0; /* not inside a task of the actor's loop */
    }
    PyObject *thread = get_slot(runtime, rt_loop_thread);
    if (thread == NULL) {
        return -1;
    }
    unsigned long ident = PyLong_AsUnsignedLong(thread);
    if (ident == (unsigned long)-1 && PyErr_Occurred()) {
        return -1;
    }
    if (ident != PyThread_get_thread_ident()) {
        return 0; /* another thread with a loop of its own: the Python path queues the wake-up */
    }
    PyObject *handoffs = get_slot(runtime, rt_handoffs);
    if (handoffs == NULL) {
        return -1;
    }
    if (!PyObject_TypeCheck(handoffs, Slice_type)) {
        return 0; /* not the runtime's own budget: the Python path knows what to do with it */
    }
    PyObject *depth = get_slot(handoffs, ls_depth);
    if (depth == NULL) {
        return -1;
    }
    Py_ssize_t d = PyLong_AsSsize_t(depth);
    if (d == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (d >= max_depth) {
        return 0;
    }
    PyObject *open = get_slot(handoffs, ls_open);
    if (open == NULL) {
        return -1;
    }
    if (open == Py_True) {
        double now, ends;
        PyObject *slice_end = get_slot(handoffs, ls_ends);
        if (slice_end == NULL || now_seconds(perf_counter, &now) < 0) {
            return -1;
        }
        ends = PyFloat_AsDouble(slice_end);
        if (ends == -1.0 && PyErr_Occurred()) {
            return -1;
        }
        if (now >= ends) {
            return 0; /* this turn's slice is spent: the wake-up takes the ready queue */
        }
    }
    else {
        PyObject *opened = PyObject_CallMethodNoArgs(handoffs, str_open_slice);
        if (opened == NULL) {
            return -1;
        }
        int ok = PyObject_IsTrue(opened);
        Py_DECREF(opened);
        if (ok <= 0) {
            return ok;
        }
    }
    if (!PyObject_TypeCheck(port, Input_type)) {
        return 0;
    }
    PyObject *mailbox = get_slot(port, in_mailbox);
    if (mailbox == NULL) {
        return -1;
    }
    if (!PyObject_TypeCheck(mailbox, Mailbox_type)) {
        return 0; /* the slots read below are a Mailbox's */
    }
    PyObject *received = get_slot(mailbox, mb_received);
    PyObject *ticked = get_slot(runtime, rt_ticked);
    if (received == NULL || ticked == NULL) {
        return -1;
    }
    int same = PyObject_RichCompareBool(received, ticked, Py_EQ);
    if (same != 0) {
        return same < 0 ? -1 : 0; /* this arrival is ticked already */
    }
    PyObject *items = get_slot(mailbox, mb_items);
    if (items == NULL) {
        return -1;
    }
    Py_ssize_t n = PyObject_Size(items);
    if (n <= 0) {
        return n < 0 ? -1 : 0; /* a call from another thread's send comes late: it may be gone */
    }
    return hand_off(runtime, port, mailbox, items, running) < 0 ? -1 : 1;
}

/* The tick for a message that is not a Message: now, numbered by the actor's tick count
 * (ActorRuntime.tick_of's second branch), built without running TimedTick.__init__. */
static PyObject *
plain_tick(PyObject *runtime)
{
    PyObject *ticks = get_slot(runtime, rt_ticks);
    PyObject *driver_id = get_slot(runtime, rt_driver_id);
    if (ticks == NULL || driver_id == NULL) {
        return NULL;
    }
    double seconds;
    if (now_seconds(monotonic, &seconds) < 0) {
        return NULL;
    }
    PyObject *now = PyFloat_FromDouble(seconds);
    if (now == NULL) {
        return NULL;
    }
    PyObject *tick = TimedTick_type->tp_alloc(TimedTick_type, 0);
    if (tick == NULL) {
        Py_DECREF(now);
        return NULL;
    }
    SLOT(tick, tt_timestamp) = now;
    SLOT(tick, tt_frame_number) = Py_NewRef(ticks);
    SLOT(tick, tt_clock_source_id) = Py_NewRef(driver_id);
    SLOT(tick, tt_fps) = Py_NewRef(Py_None);
    return tick;
}

/* asyncio's _leave_task(loop, current) then _enter_task(loop, next), in one step on the same
 * table (asyncio.tasks._current_tasks), with their check: the loop runs `current` now. */
/* The tick for a Message: its clock metadata (ActorRuntime.tick_of's first branch). */
static PyObject *
message_tick(PyObject *runtime, PyObject *head)
{
    PyObject *fields[4] = {NULL, NULL, NULL, NULL}; /* clock_rate, timestamp, frame_number, clock_source_id */
    PyObject *names[4] = {str_clock_rate, str_timestamp, str_frame_number, str_clock_source_id};
    for (int i = 0; i < 4; i++) {
        fields[i] = PyObject_GetAttr(head, names[i]);
        if (fields[i] == NULL) {
            for (int j = 0; j < i; j++) {
                Py_DECREF(fields[j]);
            }
            return NULL;
        }
    }
    set_slot_borrowed(runtime, rt_last_fps, fields[0]);
    int named = PyObject_IsTrue(fields[3]);
    PyObject *tick = named < 0 ? NULL : TimedTick_type->tp_alloc(TimedTick_type, 0);
    if (tick == NULL) {
        for (int i = 0; i < 4; i++) {
            Py_DECREF(fields[i]);
        }
        return NULL;
    }
    if (!named) { /* `head.clock_source_id or self.driver_id` */
        PyObject *driver_id = SLOT(runtime, rt_driver_id);
        Py_SETREF(fields[3], Py_NewRef(driver_id != NULL ? driver_id : Py_None));
    }
    SLOT(tick, tt_timestamp) = fields[1];
    SLOT(tick, tt_frame_number) = fields[2];
    SLOT(tick, tt_clock_source_id) = fields[3];
    SLOT(tick, tt_fps) = fields[0];
    return tick;
}

static int
switch_task(PyObject *loop, PyObject *current, PyObject *next)
{
    PyObject *running = PyDict_GetItemWithError(current_tasks, loop);
    if (running != current) {
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_RuntimeError, "Leaving task %R does not match the current task %R.", current,
                         running ? running : Py_None);
        }
        return -1;
    }
    return PyDict_SetItem(current_tasks, loop, next);
}

/* Step the call `process` returned until it returns (0) or first waits (1, *waiting_on set);
 * -1 with the exception set if it raised. */
static int
step(PyObject *work, PyObject **waiting_on, PyObject **steps)
{
    *steps = NULL;
    if (work == Py_None) {
        return 0; /* a plain function's `process` has run */
    }
    PyObject *iter;
    if (PyCoro_CheckExact(work)) {
        iter = Py_NewRef(work);
    }
    else {
        iter = PyObject_CallMethodNoArgs(work, str_await); /* another awaitable */
        if (iter == NULL) {
            return -1;
        }
    }
    PyObject *result = NULL;
    PySendResult sent = PyIter_Send(iter, Py_None, &result);
    if (sent == PYGEN_ERROR) {
        Py_DECREF(iter);
        return -1;
    }
    if (sent == PYGEN_RETURN) {
        Py_XDECREF(result);
        Py_DECREF(iter);
        return 0;
    }
    *waiting_on = result;
    *steps = iter;
    return 1;
}

/* ActorRuntime.hand_off, in C: run the tick for the message that just landed on `port`, the
 * driver, now, as this actor -- in its context, with its task marked as the running one
 * instead of `running` (the sender's, never NULL here: outside a task the Python path runs). The call `process` returns is stepped directly (no
 * tick driver: from C, a return costs no StopIteration); if it waits or raises, the task
 * takes the rest over (ActorRuntime.handoff_waits / handoff_failed). */
static int
hand_off(PyObject *runtime, PyObject *port, PyObject *mailbox, PyObject *items, PyObject *running)
{
    PyObject *received = get_slot(mailbox, mb_received);
    PyObject *taken = get_slot(mailbox, mb_taken);
    if (!received || !taken) {
        return -1;
    }
    set_slot_borrowed(runtime, rt_ticked, received);
    set_slot_borrowed(port, in_tick_mark, taken);
    /* What the tick uses, held from here on: the Python code it runs (a Message's properties,
     * mark_inputs, process itself) may replace any of these slots or drop the sender's task. */
    enum { LOOP, TASK, BELL, CONTEXT, INLINE_TICK, HANDOFFS, SAMPLED, RUNNING, HELD };
    PyObject *held[HELD] = {
        SLOT(runtime, rt_loop),        SLOT(runtime, rt_task),        SLOT(runtime, rt_doorbell),
        SLOT(runtime, rt_context),     SLOT(runtime, rt_inline_tick), SLOT(runtime, rt_handoffs),
        SLOT(runtime, rt_sampled),     running,
    };
    for (int i = 0; i < HELD; i++) {
        if (held[i] == NULL) {
            PyErr_SetString(PyExc_AttributeError, "an actor's runtime is missing a slot the hand-off needs");
            return -1;
        }
    }
    for (int i = 0; i < HELD; i++) {
        Py_INCREF(held[i]);
    }
    PyObject *loop = held[LOOP], *task = held[TASK], *bell = held[BELL], *context = held[CONTEXT];
    PyObject *inline_tick = held[INLINE_TICK], *handoffs = held[HANDOFFS], *sampled = held[SAMPLED];
    PyObject *tick = NULL;
    int status = 0; /* -1: an error of the runtime's own, to propagate to the sender */

    if (!PyContext_CheckExact(context)) {
        PyErr_SetString(PyExc_TypeError, "an actor's context must be a contextvars.Context");
        status = -1;
        goto release;
    }
    PyObject *head = PySequence_GetItem(items, 0);
    if (head == NULL) {
        status = -1;
        goto release;
    }
    int is_message = PyObject_IsInstance(head, Message_type);
    tick = is_message < 0 ? NULL : is_message ? message_tick(runtime, head) : plain_tick(runtime);
    Py_DECREF(head);
    if (tick == NULL) {
        status = -1;
        goto release;
    }
    int marks = PyTuple_CheckExact(sampled) ? PyTuple_GET_SIZE(sampled) > 0 : PyObject_IsTrue(sampled);
    if (marks < 0) {
        status = -1;
        goto release;
    }
    if (marks) {
        PyObject *r = PyObject_CallMethodOneArg(runtime, str_mark_inputs, sampled);
        if (r == NULL) {
            status = -1;
            goto release;
        }
        Py_DECREF(r);
    }
    if (add_to_slot(runtime, rt_ticks, 1) < 0 || add_to_slot(runtime, rt_handed_off, 1) < 0 ||
        add_to_slot(handoffs, ls_depth, 1) < 0) {
        status = -1;
        goto release;
    }
    set_slot_borrowed(runtime, rt_handoff_port, Py_None); /* a message arriving meanwhile rings instead */

    if (switch_task(loop, running, task) < 0) {
        status = -1;
        goto restore_none;
    }
    set_slot_borrowed(runtime, rt_in_process, Py_True);

    PyObject *waiting_on = NULL, *steps = NULL;
    int stepped;
    if (PyContext_Enter(context) < 0) {
        stepped = -1;
    }
    else {
        PyObject *work = PyObject_CallOneArg(inline_tick, tick);
        stepped = work == NULL ? -1 : step(work, &waiting_on, &steps);
        Py_XDECREF(work);
        if (PyContext_Exit(context) < 0 && stepped >= 0) {
            stepped = -1; /* cannot happen: the context is the one entered */
        }
    }
    if (stepped == 0) {
        set_slot_borrowed(runtime, rt_in_process, Py_False);
    }
    else if (stepped == 1) {
        PyObject *r = PyObject_CallMethodObjArgs(runtime, str_handoff_waits, steps, waiting_on, NULL);
        Py_DECREF(steps);
        Py_DECREF(waiting_on);
        if (r == NULL) {
            status = -1;
        }
        Py_XDECREF(r);
    }
    else { /* the tick raised: re-raised in the task, so failures take their usual path */
        PyObject *exc = fetch_exception();
        PyObject *r = PyObject_CallMethodObjArgs(runtime, str_handoff_failed, exc, NULL);
        Py_DECREF(exc);
        if (r == NULL) {
            status = -1;
        }
        Py_XDECREF(r);
    }

    /* finally: the sender's task runs again, one level up */
    {
        PyObject *exc = status < 0 ? fetch_exception() : NULL;
        if (switch_task(loop, task, running) < 0) {
            Py_XDECREF(exc);
            exc = fetch_exception();
            status = -1;
        }
        if (exc != NULL) {
            restore_exception(exc);
        }
    }
restore_none:
    {
        PyObject *exc = status < 0 ? fetch_exception() : NULL;
        if (add_to_slot(handoffs, ls_depth, -1) < 0) {
            Py_XDECREF(exc);
            exc = fetch_exception();
            status = -1;
        }
        PyObject *done = PyObject_CallMethodNoArgs(bell, str_done);
        if (done == NULL) {
            Py_XDECREF(exc);
            exc = fetch_exception();
            status = -1;
        }
        else {
            if (done == Py_False) { /* else rung meanwhile: awake now */
                set_slot_borrowed(runtime, rt_handoff_port, port);
            }
            Py_DECREF(done);
        }
        if (exc != NULL) {
            restore_exception(exc);
        }
    }
release:
    Py_XDECREF(tick);
    for (int i = 0; i < HELD; i++) {
        Py_DECREF(held[i]);
    }
    return status;
}

static PyObject *
call_py_woken(PyObject *runtime, PyObject *port)
{
    PyObject *args[2] = {runtime, port};
    return PyObject_Vectorcall(py_woken, args, 2, NULL);
}

/* ActorRuntime.woken(self, port) */
static PyObject *
runtime_woken(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "woken() takes exactly one argument (the port)");
        return NULL;
    }
    int handed = try_hand_off(self, args[0]);
    if (handed < 0) {
        return NULL;
    }
    if (handed) {
        Py_RETURN_NONE;
    }
    return call_py_woken(self, args[0]);
}

/* ------------------------------------------------------------------ Waker */

/* What a sleeping actor installs on a mailbox: `waker()` is `runtime.woken(port)`; a C
 * mailbox calls it without a Python call in between. */
typedef struct {
    PyObject_HEAD
    PyObject *runtime;
    PyObject *port;
    vectorcallfunc vectorcall;
} Waker;

static PyObject *
waker_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 0 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "a waker takes no arguments");
        return NULL;
    }
    Waker *w = (Waker *)self;
    PyObject *arg = w->port;
    return runtime_woken(w->runtime, &arg, 1);
}

static PyObject *
waker_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *runtime, *port;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "Waker(runtime, port) takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OO:Waker", &runtime, &port)) {
        return NULL;
    }
    Waker *w = (Waker *)type->tp_alloc(type, 0);
    if (w == NULL) {
        return NULL;
    }
    w->runtime = Py_NewRef(runtime);
    w->port = Py_NewRef(port);
    w->vectorcall = waker_call;
    return (PyObject *)w;
}

static int
waker_traverse(Waker *w, visitproc visit, void *arg)
{
    Py_VISIT(w->runtime);
    Py_VISIT(w->port);
    return 0;
}

static int
waker_clear(Waker *w)
{
    Py_CLEAR(w->runtime);
    Py_CLEAR(w->port);
    return 0;
}

static void
waker_dealloc(Waker *w)
{
    PyObject_GC_UnTrack(w);
    waker_clear(w);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static PyMemberDef waker_members[] = {
    {"runtime", T_OBJECT, offsetof(Waker, runtime), READONLY, "the sleeping actor's runtime"},
    {"port", T_OBJECT, offsetof(Waker, port), READONLY, "the input it watches"},
    {NULL},
};

static PyTypeObject Waker_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "streamlib._speedups.Waker",
    .tp_basicsize = sizeof(Waker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Waker(runtime, port): calling it is runtime.woken(port).",
    .tp_new = waker_new,
    .tp_traverse = (traverseproc)waker_traverse,
    .tp_clear = (inquiry)waker_clear,
    .tp_dealloc = (destructor)waker_dealloc,
    .tp_vectorcall_offset = offsetof(Waker, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_members = waker_members,
};

/* ------------------------------------------------------------------ the mailbox */

/* Mailbox._wake_one(waiters) if the queue of waiters in slot `s` (made on first use) has any. */
static int
wake_a_waiter(PyObject *mailbox, Slot s)
{
    PyObject *waiters = get_slot(mailbox, s);
    if (waiters == NULL) {
        return -1;
    }
    if (waiters == Py_None) {
        return 0;
    }
    int waiting = PyObject_IsTrue(waiters);
    if (waiting <= 0) {
        return waiting;
    }
    Py_INCREF(waiters);
    PyObject *r = PyObject_CallOneArg(wake_one, waiters);
    Py_DECREF(waiters);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* Mailbox.put_nowait(self, item): a mailbox with room; the Python method for the rest. */
static PyObject *
mailbox_put_nowait(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "put_nowait() takes exactly one argument (the item)");
        return NULL;
    }
    PyObject *item = args[0];
    PyObject *items = get_slot(self, mb_items);
    PyObject *maxsize = get_slot(self, mb_maxsize);
    PyObject *closed = get_slot(self, mb_closed);
    if (items == NULL || maxsize == NULL || closed == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyObject_Size(items);
    Py_ssize_t limit = PyLong_AsSsize_t(maxsize);
    if (n < 0 || (limit == -1 && PyErr_Occurred())) {
        return NULL;
    }
    if (n >= limit || closed != Py_False) { /* full or closed: the policies live in Python */
        PyObject *call[2] = {self, item};
        return PyObject_Vectorcall(py_put_nowait, call, 2, NULL);
    }
    PyObject *appended = PyObject_Vectorcall(deque_append, (PyObject *[]){items, item}, 2, NULL);
    if (appended == NULL) {
        return NULL;
    }
    Py_DECREF(appended);
    if (add_to_slot(self, mb_received, 1) < 0) {
        return NULL;
    }
    if (wake_a_waiter(self, mb_getters) < 0) {
        return NULL;
    }
    PyObject *waker = get_slot(self, mb_waker);
    if (waker == NULL) {
        return NULL;
    }
    if (waker != Py_None) {
        PyObject *r;
        Py_INCREF(waker);
        if (Py_IS_TYPE(waker, &Waker_type)) {
            Waker *w = (Waker *)waker;
            PyObject *port = w->port;
            r = runtime_woken(w->runtime, &port, 1);
        }
        else {
            r = PyObject_CallNoArgs(waker);
        }
        Py_DECREF(waker);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);
    }
    Py_RETURN_TRUE;
}

/* Mailbox.get_nowait(self): the oldest message, or EMPTY. */
static PyObject *
mailbox_get_nowait(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 0) {
        PyErr_SetString(PyExc_TypeError, "get_nowait() takes no arguments");
        return NULL;
    }
    PyObject *items = get_slot(self, mb_items);
    if (items == NULL) {
        return NULL;
    }
    if (PyObject_Size(items) == 0) {
        return Py_NewRef(EMPTY); /* checked first: a raised IndexError costs more than the call */
    }
    PyObject *item = PyObject_CallOneArg(deque_popleft, items);
    if (item == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_IndexError)) {
            return NULL;
        }
        PyErr_Clear();
        return Py_NewRef(EMPTY);
    }
    if (add_to_slot(self, mb_taken, 1) < 0) {
        Py_DECREF(item);
        return NULL;
    }
    if (wake_a_waiter(self, mb_putters) < 0) {
        Py_DECREF(item);
        return NULL;
    }
    return item;
}

/* streamlib.ports.deliver(output, message): the part of StreamOutput.send that never waits --
 * check the type, count, offer the message to each subscriber in order -- stopping at the
 * first full "block" input: (subscribers, that port) is returned, and the send waits for it. */
static PyObject *
deliver(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "deliver() takes two arguments (output, message)");
        return NULL;
    }
    PyObject *output = args[0], *message = args[1];
    if (!PyObject_TypeCheck(output, Output_type)) {
        PyErr_Format(PyExc_TypeError, "deliver() needs a StreamOutput, got %R", output);
        return NULL;
    }
    PyObject *msg_type = get_slot(output, out_msg_type);
    if (msg_type == NULL) {
        return NULL;
    }
    if (msg_type != object_type) {
        int ok = PyObject_IsInstance(message, msg_type);
        if (ok < 0) {
            return NULL;
        }
        if (!ok) {
            PyObject *r = PyObject_CallMethodOneArg(output, str_check, message); /* raises the TypeError */
            if (r == NULL) {
                return NULL;
            }
            Py_DECREF(r);
        }
    }
    if (add_to_slot(output, out_sent, 1) < 0) {
        return NULL;
    }
    PyObject *subscribers = get_slot(output, out_snapshot);
    if (subscribers == NULL) {
        return NULL;
    }
    if (subscribers == Py_None) {
        subscribers = PyObject_GetAttr(output, str_subscribers); /* rebuilt under the wiring lock */
        if (subscribers == NULL) {
            return NULL;
        }
    }
    else {
        Py_INCREF(subscribers);
    }
    if (!PyTuple_CheckExact(subscribers)) {
        PyErr_Format(PyExc_TypeError, "%R: subscribers must be a tuple", output);
        Py_DECREF(subscribers);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(subscribers); i++) {
        PyObject *port = PyTuple_GET_ITEM(subscribers, i);
        if (!PyObject_TypeCheck(port, Input_type)) {
            PyErr_Format(PyExc_TypeError, "%R: subscriber %R is not a StreamInput", output, port);
            Py_DECREF(subscribers);
            return NULL;
        }
        PyObject *mailbox = get_slot(port, in_mailbox);
        if (mailbox == NULL) {
            Py_DECREF(subscribers);
            return NULL;
        }
        PyObject *accepted;
        Py_INCREF(mailbox);
        if (Py_IS_TYPE(mailbox, Mailbox_type)) {
            accepted = mailbox_put_nowait(mailbox, &message, 1);
        }
        else { /* a subclass may add checks of its own */
            accepted = PyObject_CallMethodOneArg(mailbox, str_put_nowait, message);
        }
        Py_DECREF(mailbox);
        if (accepted == NULL) {
            Py_DECREF(subscribers);
            return NULL;
        }
        if (accepted == Py_None) { /* a full blocking input: the send waits from here */
            PyObject *pending = PyTuple_Pack(2, subscribers, port);
            Py_DECREF(accepted);
            Py_DECREF(subscribers);
            return pending;
        }
        Py_DECREF(accepted);
    }
    Py_DECREF(subscribers);
    Py_RETURN_NONE;
}

static PyMethodDef mailbox_put_def = {"put_nowait", (PyCFunction)(void (*)(void))mailbox_put_nowait, METH_FASTCALL,
                                      "Offer an item (see the Python method this replaces)."};
static PyMethodDef mailbox_get_def = {"get_nowait", (PyCFunction)(void (*)(void))mailbox_get_nowait, METH_FASTCALL,
                                      "Take the oldest message, or EMPTY."};
static PyMethodDef runtime_woken_def = {"woken", (PyCFunction)(void (*)(void))runtime_woken, METH_FASTCALL,
                                        "A message landed on port while the actor slept (hand-off in C)."};

/* ------------------------------------------------------------------ install */

static int
offsets(PyObject *cls, Slot **slots)
{
    for (; *slots != NULL; slots++) {
        if (slot_offset(cls, *slots) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Replace cls.<def->ml_name> with a C method; return the Python original (new reference). */
static PyObject *
replace_method(PyTypeObject *cls, PyMethodDef *def)
{
    PyObject *original = PyObject_GetAttrString((PyObject *)cls, def->ml_name);
    if (original == NULL) {
        return NULL;
    }
    if (!PyFunction_Check(original)) {
        PyErr_Format(PyExc_TypeError, "%R.%s is not a Python function (installed twice?)", cls, def->ml_name);
        Py_DECREF(original);
        return NULL;
    }
    PyObject *descr = PyDescr_NewMethod(cls, def);
    if (descr == NULL || PyObject_SetAttrString((PyObject *)cls, def->ml_name, descr) < 0) {
        Py_XDECREF(descr);
        Py_DECREF(original);
        return NULL;
    }
    Py_DECREF(descr);
    return original;
}

static PyObject *
install(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"Mailbox", "StreamInput", "StreamOutput", "ActorRuntime", "LoopSlice", "TimedTick", "Message",
                               "EMPTY", "current_tasks", "max_depth", NULL};
    PyObject *mailbox_cls, *input_cls, *output_cls, *runtime_cls, *slice_cls, *tick_cls, *message_cls, *empty, *tasks;
    Py_ssize_t depth;
    if (installed) {
        PyErr_SetString(PyExc_RuntimeError, "streamlib._speedups is installed already");
        return NULL;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!O!O!O!O!OO!n:install", keywords, &PyType_Type, &mailbox_cls,
                                     &PyType_Type, &input_cls, &PyType_Type, &output_cls, &PyType_Type, &runtime_cls, &PyType_Type, &slice_cls,
                                     &PyType_Type, &tick_cls, &PyType_Type, &message_cls, &empty, &PyDict_Type, &tasks,
                                     &depth)) {
        return NULL;
    }
    Slot *mailbox_slots[] = {&mb_items, &mb_maxsize, &mb_closed, &mb_received, &mb_taken,
                             &mb_getters, &mb_putters, &mb_waker, NULL};
    Slot *input_slots[] = {&in_mailbox, &in_tick_mark, NULL};
    Slot *output_slots[] = {&out_msg_type, &out_sent, &out_snapshot, NULL};
    Slot *runtime_slots[] = {&rt_loop, &rt_loop_thread, &rt_handoff_port, &rt_handoffs, &rt_ticked,
                             &rt_ticks, &rt_handed_off, &rt_sampled, &rt_inline_tick, &rt_task,
                             &rt_doorbell, &rt_in_process, &rt_context, &rt_driver_id, &rt_last_fps, NULL};
    Slot *slice_slots[] = {&ls_depth, &ls_ends, &ls_open, NULL};
    Slot *tick_slots[] = {&tt_timestamp, &tt_frame_number, &tt_clock_source_id, &tt_fps, NULL};
    if (offsets(mailbox_cls, mailbox_slots) < 0 || offsets(input_cls, input_slots) < 0 || offsets(output_cls, output_slots) < 0 ||
        offsets(runtime_cls, runtime_slots) < 0 || offsets(slice_cls, slice_slots) < 0 ||
        offsets(tick_cls, tick_slots) < 0) {
        return NULL;
    }
    /* A TimedTick is built without its __init__: only if __init__ does nothing else. */
    PyObject *post_init = PyObject_GetAttrString(tick_cls, "__post_init__");
    if (post_init != NULL) {
        Py_DECREF(post_init);
        PyErr_SetString(PyExc_TypeError, "TimedTick has a __post_init__: the C hand-off cannot build it");
        return NULL;
    }
    PyErr_Clear();

    PyObject *deque_mod = PyImport_ImportModule("collections");
    PyObject *deque_cls = deque_mod ? PyObject_GetAttrString(deque_mod, "deque") : NULL;
    Py_XDECREF(deque_mod);
    PyObject *time_mod = PyImport_ImportModule("time");
    if (deque_cls == NULL || time_mod == NULL) {
        Py_XDECREF(deque_cls);
        Py_XDECREF(time_mod);
        return NULL;
    }
    deque_popleft = PyObject_GetAttrString(deque_cls, "popleft");
    deque_append = PyObject_GetAttrString(deque_cls, "append");
    Py_DECREF(deque_cls);
    perf_counter = PyObject_GetAttrString(time_mod, "perf_counter");
    monotonic = PyObject_GetAttrString(time_mod, "monotonic");
    Py_DECREF(time_mod);
    wake_one = PyObject_GetAttrString(mailbox_cls, "_wake_one");
    if (deque_popleft == NULL || deque_append == NULL || perf_counter == NULL || monotonic == NULL || wake_one == NULL) {
        return NULL;
    }

    Mailbox_type = (PyTypeObject *)Py_NewRef(mailbox_cls);
    Runtime_type = (PyTypeObject *)Py_NewRef(runtime_cls);
    Output_type = (PyTypeObject *)Py_NewRef(output_cls);
    Input_type = (PyTypeObject *)Py_NewRef(input_cls);
    Slice_type = (PyTypeObject *)Py_NewRef(slice_cls);
    TimedTick_type = (PyTypeObject *)Py_NewRef(tick_cls);
    Message_type = Py_NewRef(message_cls);
    EMPTY = Py_NewRef(empty);
    current_tasks = Py_NewRef(tasks);
    max_depth = depth;

    py_put_nowait = replace_method(Mailbox_type, &mailbox_put_def);
    if (py_put_nowait == NULL) {
        return NULL;
    }
    PyObject *py_get_nowait = replace_method(Mailbox_type, &mailbox_get_def);
    if (py_get_nowait == NULL) {
        return NULL;
    }
    Py_DECREF(py_get_nowait); /* EMPTY or a message: nothing left for Python */
    py_woken = replace_method(Runtime_type, &runtime_woken_def);
    if (py_woken == NULL) {
        return NULL;
    }
    installed = 1;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"deliver", (PyCFunction)(void (*)(void))deliver, METH_FASTCALL,
     "deliver(output, message): StreamOutput.send up to its first wait (see streamlib.ports.deliver)."},
    {"install", (PyCFunction)(void (*)(void))install, METH_VARARGS | METH_KEYWORDS,
     "install(Mailbox=, StreamInput=, StreamOutput=, ActorRuntime=, LoopSlice=, TimedTick=, Message=, EMPTY=, current_tasks=,"
     " max_depth=): put the C message path in place (once per process)."},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "streamlib._speedups",
    .m_doc = "The message path between two actors, in C (see streamlib.speedups).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&Waker_type) < 0) {
        return NULL;
    }
    str_clock_rate = PyUnicode_InternFromString("clock_rate");
    str_timestamp = PyUnicode_InternFromString("timestamp");
    str_frame_number = PyUnicode_InternFromString("frame_number");
    str_clock_source_id = PyUnicode_InternFromString("clock_source_id");
    str_mark_inputs = PyUnicode_InternFromString("mark_inputs");
    str_handoff_waits = PyUnicode_InternFromString("handoff_waits");
    str_handoff_failed = PyUnicode_InternFromString("handoff_failed");
    str_open_slice = PyUnicode_InternFromString("open_slice");
    str_done = PyUnicode_InternFromString("done");
    str_await = PyUnicode_InternFromString("__await__");
    str_check = PyUnicode_InternFromString("_check");
    str_subscribers = PyUnicode_InternFromString("subscribers");
    str_put_nowait = PyUnicode_InternFromString("put_nowait");
    if (!str_clock_rate || !str_timestamp || !str_frame_number || !str_clock_source_id || !str_mark_inputs || !str_handoff_waits || !str_handoff_failed || !str_open_slice ||
        !str_done || !str_await || !str_check || !str_subscribers || !str_put_nowait) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "Waker", (PyObject *)&Waker_type) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
