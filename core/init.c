#include <stddef.h>

#include "init.h"
#include "log.h"

#define MAX_INITS 128

static struct {
	enum init_level level;
	const char *name;
	init_fn_t fn;
} inits[MAX_INITS];
static int ninits;

void init_register(enum init_level level, const char *name, init_fn_t fn)
{
	if (ninits == MAX_INITS)
		fatal("too many init functions (raise MAX_INITS)");
	inits[ninits].level = level;
	inits[ninits].name = name;
	inits[ninits].fn = fn;
	ninits++;
}

int init_run_all(struct vmctx *ctx)
{
	for (int level = INIT_PLATFORM; level <= INIT_LATE; level++) {
		for (int i = 0; i < ninits; i++) {
			if ((int)inits[i].level != level)
				continue;
			log_debug("init: %s", inits[i].name);
			if (inits[i].fn(ctx))
				return -1;
		}
	}
	return 0;
}
