/*
 * Main-thread event loop on epoll.  Timers are timerfds; cross-thread calls
 * go through a mutex-protected queue and an eventfd that wakes the loop.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "exitcode.h"
#include "log.h"
#include "mevent.h"

struct mevent {
	struct mevent *next_all;   /* every live event, for mevent_fini() */
	int fd;
	enum mevent_kind kind;
	bool is_timer;
	bool enabled;
	mevent_cb_t cb;
	void *arg;
};

struct mevent_callq {
	void (*fn)(void *);
	void *arg;
	struct mevent_callq *next;
};

static int epfd = -1, wakefd = -1;
static struct mevent *all_events;
static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t callq_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mevent_callq *callq_head, **callq_tail = &callq_head;

int mevent_init(void)
{
	epfd = epoll_create1(EPOLL_CLOEXEC);
	wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (epfd < 0 || wakefd < 0)
		return -1;
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	return epoll_ctl(epfd, EPOLL_CTL_ADD, wakefd, &ev);
}

static int mevent_arm(struct mevent *ev, int op)
{
	struct epoll_event e = {
		.events = ev->kind == EVF_READ ? EPOLLIN : EPOLLOUT,
		.data.ptr = ev,
	};
	return epoll_ctl(epfd, op, ev->fd, &e);
}

struct mevent *mevent_add(int fd, enum mevent_kind kind, mevent_cb_t cb, void *arg)
{
	struct mevent *ev = calloc(1, sizeof(*ev));
	if (!ev)
		return NULL;
	ev->fd = fd;
	ev->kind = kind;
	ev->cb = cb;
	ev->arg = arg;
	ev->enabled = true;
	if (mevent_arm(ev, EPOLL_CTL_ADD)) {
		/* Regular files cannot be polled: they are always ready. */
		log_debug("mevent: fd %d: %s", fd, strerror(errno));
		free(ev);
		return NULL;
	}
	pthread_mutex_lock(&all_lock);
	ev->next_all = all_events;
	all_events = ev;
	pthread_mutex_unlock(&all_lock);
	return ev;
}

int mevent_timer_set(struct mevent *ev, uint64_t first_ns, uint64_t period_ns)
{
	struct itimerspec its = {
		.it_value = { (time_t)(first_ns / 1000000000ULL), (long)(first_ns % 1000000000ULL) },
		.it_interval = { (time_t)(period_ns / 1000000000ULL), (long)(period_ns % 1000000000ULL) },
	};
	/* A zero it_value disarms; callers asking for "now" get 1 ns. */
	if (first_ns == 0)
		its.it_value.tv_nsec = 1;
	return timerfd_settime(ev->fd, 0, &its, NULL);
}

struct mevent *mevent_add_timer(uint64_t first_ns, uint64_t period_ns, mevent_cb_t cb, void *arg)
{
	int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (fd < 0)
		return NULL;
	struct mevent *ev = mevent_add(fd, EVF_READ, cb, arg);
	if (!ev) {
		close(fd);
		return NULL;
	}
	ev->is_timer = true;
	if (mevent_timer_set(ev, first_ns, period_ns)) {
		mevent_delete(ev);
		return NULL;
	}
	return ev;
}

int mevent_enable(struct mevent *ev)
{
	if (ev->enabled)
		return 0;
	ev->enabled = true;
	return mevent_arm(ev, EPOLL_CTL_ADD);
}

int mevent_disable(struct mevent *ev)
{
	if (!ev->enabled)
		return 0;
	ev->enabled = false;
	return epoll_ctl(epfd, EPOLL_CTL_DEL, ev->fd, NULL);
}

int mevent_delete(struct mevent *ev)
{
	pthread_mutex_lock(&all_lock);
	for (struct mevent **p = &all_events; *p; p = &(*p)->next_all)
		if (*p == ev) {
			*p = ev->next_all;
			break;
		}
	pthread_mutex_unlock(&all_lock);
	mevent_disable(ev);
	if (ev->is_timer)
		close(ev->fd);
	free(ev);
	return 0;
}

void mevent_fini(void)
{
	while (all_events)
		mevent_delete(all_events);
}

void mevent_wakeup(void)
{
	uint64_t one = 1;
	ssize_t r = write(wakefd, &one, sizeof(one));
	(void)r;
}

int mevent_call(void (*fn)(void *), void *arg)
{
	struct mevent_callq *c = malloc(sizeof(*c));
	if (!c)
		return -1;
	c->fn = fn;
	c->arg = arg;
	c->next = NULL;
	pthread_mutex_lock(&callq_lock);
	*callq_tail = c;
	callq_tail = &c->next;
	pthread_mutex_unlock(&callq_lock);
	mevent_wakeup();
	return 0;
}

static void run_callq(void)
{
	pthread_mutex_lock(&callq_lock);
	struct mevent_callq *c = callq_head;
	callq_head = NULL;
	callq_tail = &callq_head;
	pthread_mutex_unlock(&callq_lock);
	while (c) {
		struct mevent_callq *next = c->next;
		c->fn(c->arg);
		free(c);
		c = next;
	}
}

int mevent_dispatch(void)
{
	struct epoll_event evs[32];
	for (;;) {
		int st = vm_exit_requested();
		if (st >= 0)
			return st;
		int n = epoll_wait(epfd, evs, 32, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_err("epoll_wait: %s", strerror(errno));
			return HYVE_EXIT_ERROR;
		}
		for (int i = 0; i < n; i++) {
			struct mevent *ev = evs[i].data.ptr;
			if (!ev) {
				uint64_t cnt;
				ssize_t r = read(wakefd, &cnt, sizeof(cnt));
				(void)r;
				run_callq();
				continue;
			}
			if (ev->is_timer) {
				uint64_t expirations;
				if (read(ev->fd, &expirations, sizeof(expirations)) != sizeof(expirations))
					continue;
			}
			ev->cb(ev->fd, ev->arg);
		}
	}
}
