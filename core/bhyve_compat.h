/*
 * bhyve(8) / bhyve_config(5) compatibility: the flags and keys hyve takes
 * so that bhyve and vm-bhyve command lines and configuration files run
 * unchanged (core/bhyve_compat.c; docs/cli.md says what each one does).
 */
#ifndef HYVE_BHYVE_COMPAT_H
#define HYVE_BHYVE_COMPAT_H

#include <sched.h>
#include <stddef.h>

#include "config.h"

/* -p vcpu:hostcpu: adds hostcpu to vcpu.N.cpuset (repeatable, as bhyve). */
int compat_add_pin(const char *opt, char *err, size_t errlen);
/* -f name,string=DATA | name,file=PATH: fw_cfg.file.K.{name,string,path}. */
int compat_add_fwcfg(const char *opt, char *err, size_t errlen);
/*
 * A host CPU list ("3", "0,2", "4-7", "0-1,6") into *set; each CPU must
 * exist on this host.  -1 with the reason in err.
 */
int compat_parse_cpulist(const char *s, cpu_set_t *set, char *err, size_t errlen);
/*
 * Disk, share, socket and file paths (pci.*.*.*.path, virtio-console
 * ports, lpc.comN.path file=/sock=, fw_cfg files) become absolute, with
 * the directory part resolved (realpath): a checkpoint stores them and a
 * restore may run elsewhere.  Keys whose "key=value" line is in `already`
 * (config_to_string text of a checkpoint's configuration) are left alone.
 */
void compat_absolute_paths(const char *already);
/*
 * Checks across keys, through fn (config.h): vcpu.N.cpuset for a vCPU
 * the VM does not have (ncpus), and a one-line note for each bhyve setting
 * hyve accepts but does not act on.  Returns the number of errors.
 */
int compat_check(int ncpus, config_report_fn fn, void *arg);

#endif
