#ifndef HYVE_FIRMWARE_H
#define HYVE_FIRMWARE_H

#include <stdint.h>

/* Number of vCPUs the tables describe; set before the init levels run. */
void firmware_set_ncpus(int ncpus);
int firmware_get_ncpus(void);
/* Guest physical address of the RSDP, 0 if no tables were built. */
uint64_t firmware_rsdp(void);

#endif
