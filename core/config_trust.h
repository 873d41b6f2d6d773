/*
 * Host-side keys in a configuration from a checkpoint or a migration source
 * (core/config_trust.c; the rule for users is in docs/security.md).
 */
#ifndef HYVE_CONFIG_TRUST_H
#define HYVE_CONFIG_TRUST_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Right after a foreign configuration was loaded into the tree: take out
 * (and remember) every key that names a resource of this host.  FROM names
 * the source in messages ("checkpoint FILE", "the migration source").
 */
int config_hold_host_keys(const char *from, char *err, size_t errlen);
/*
 * After the local options: put the held keys back where the user did not
 * set them if TRUSTED; otherwise fail (-1, err naming them and TRUST_KEY)
 * if a device needs one the user did not give.
 */
int config_release_host_keys(bool trusted, const char *trust_key, char *err, size_t errlen);

#endif
