/* hyve's process exit status, as bhyve(8). */
#ifndef HYVE_EXITCODE_H
#define HYVE_EXITCODE_H

enum hyve_exit {
	HYVE_EXIT_REBOOT = 0,
	HYVE_EXIT_POWEROFF = 1,
	HYVE_EXIT_HALT = 2,
	HYVE_EXIT_TRIPLEFAULT = 3,
	HYVE_EXIT_ERROR = 4,
	/* The VM now runs on a migration destination (which confirmed it). */
	HYVE_EXIT_MIGRATED = 0,
};

/*
 * Ask the whole VM to stop with this status: vCPU threads leave their run
 * loops, the main loop returns, and hyve exits with it.  The first request
 * wins.  Safe from any thread.
 */
void vm_request_exit(int status);
int vm_exit_requested(void);   /* -1 while running */

#endif
