/*
 * MMIO dispatch: a sorted array of ranges searched by bisection.  Few
 * ranges exist (LAPIC/IOAPIC are in the kernel), so a copy-on-register
 * array under a rwlock is simple and fast.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mmio.h"

static struct mmio_range *ranges;
static size_t nranges;
static pthread_rwlock_t mmio_lock = PTHREAD_RWLOCK_INITIALIZER;

int register_mmio(const struct mmio_range *mr)
{
	if (mr->size == 0 || mr->base + mr->size < mr->base)
		return -1;
	pthread_rwlock_wrlock(&mmio_lock);
	size_t i = 0;
	while (i < nranges && ranges[i].base < mr->base)
		i++;
	if ((i > 0 && ranges[i - 1].base + ranges[i - 1].size > mr->base) ||
	    (i < nranges && mr->base + mr->size > ranges[i].base)) {
		const char *other = i > 0 && ranges[i - 1].base + ranges[i - 1].size > mr->base ?
		                        ranges[i - 1].name : ranges[i].name;
		pthread_rwlock_unlock(&mmio_lock);
		log_err("MMIO 0x%llx: %s overlaps %s", (unsigned long long)mr->base, mr->name, other);
		return -1;
	}
	struct mmio_range *n = realloc(ranges, (nranges + 1) * sizeof(*n));
	if (!n) {
		pthread_rwlock_unlock(&mmio_lock);
		return -1;
	}
	ranges = n;
	memmove(&ranges[i + 1], &ranges[i], (nranges - i) * sizeof(*ranges));
	ranges[i] = *mr;
	nranges++;
	pthread_rwlock_unlock(&mmio_lock);
	return 0;
}

int unregister_mmio(uint64_t base)
{
	pthread_rwlock_wrlock(&mmio_lock);
	for (size_t i = 0; i < nranges; i++) {
		if (ranges[i].base == base) {
			memmove(&ranges[i], &ranges[i + 1], (nranges - i - 1) * sizeof(*ranges));
			nranges--;
			pthread_rwlock_unlock(&mmio_lock);
			return 0;
		}
	}
	pthread_rwlock_unlock(&mmio_lock);
	return -1;
}

int mmio_dispatch(struct vcpu *vcpu, bool write, uint64_t addr, int size, uint64_t *val)
{
	int rc = 1;
	struct mmio_range r = { 0 };
	/* As for port I/O, call the handler without the lock held. */
	pthread_rwlock_rdlock(&mmio_lock);
	size_t lo = 0, hi = nranges;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (addr < ranges[mid].base)
			hi = mid;
		else if (addr - ranges[mid].base >= ranges[mid].size)
			lo = mid + 1;
		else {
			if (addr - ranges[mid].base + (uint64_t)size <= ranges[mid].size)
				r = ranges[mid];
			break;
		}
	}
	pthread_rwlock_unlock(&mmio_lock);
	if (r.handler)
		rc = r.handler(vcpu, write, addr, size, val, r.arg);
	if (rc == 1) {
		if (!write)
			*val = ~0ULL;
		log_debug("unhandled MMIO %s 0x%llx", write ? "write" : "read", (unsigned long long)addr);
	}
	return rc < 0 ? -1 : rc;
}
