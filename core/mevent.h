/*
 * The main thread's event loop (bhyve's mevent): file descriptors and
 * timers, each with a callback run on the main thread.  Device backends
 * (stdio, sockets, timers for the RTC) live here, never on vCPU threads.
 */
#ifndef HYVE_MEVENT_H
#define HYVE_MEVENT_H

#include <stdint.h>

struct mevent;
typedef void (*mevent_cb_t)(int fd, void *arg);

enum mevent_kind { EVF_READ, EVF_WRITE };

struct mevent *mevent_add(int fd, enum mevent_kind kind, mevent_cb_t cb, void *arg);
/* Periodic (period_ns > 0) or one-shot (period_ns == 0) timer. */
struct mevent *mevent_add_timer(uint64_t first_ns, uint64_t period_ns, mevent_cb_t cb, void *arg);
int mevent_timer_set(struct mevent *ev, uint64_t first_ns, uint64_t period_ns);
int mevent_enable(struct mevent *ev);
int mevent_disable(struct mevent *ev);
int mevent_delete(struct mevent *ev);   /* closes timer fds, not caller's fds */
/* Run a function on the main thread (from any thread). */
int mevent_call(void (*fn)(void *), void *arg);

int mevent_init(void);
/* Loop until vm_request_exit(); returns the requested status. */
int mevent_dispatch(void);
void mevent_wakeup(void);
/* Free every event (at exit; main thread, after the loop returned). */
void mevent_fini(void);

#endif
