#ifndef HYVE_PCI_LPC_H
#define HYVE_PCI_LPC_H

#include <stdbool.h>

/* True if the configuration has an lpc device (ISA devices exist). */
bool lpc_present(void);

#endif
