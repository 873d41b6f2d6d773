/*
 * Shell command registry.  A command is added from any file with
 *
 *   static void cmd_disk(int argc, char **argv) { ... }
 *   SHELL_COMMAND(disk, "disk [N]      show block devices", cmd_disk);
 *
 * The linker collects the entries (section "shell_cmds"); the shell lists
 * them in link order.
 */
#ifndef TESTGUEST_SHELL_H
#define TESTGUEST_SHELL_H

struct shell_command {
	const char *name;
	const char *help;
	void (*fn)(int argc, char **argv);
};

#define SHELL_COMMAND(cname, helptext, func)                                  \
	static const struct shell_command shell_cmd_##cname                    \
	__attribute__((used, section("shell_cmds"), aligned(8))) = {           \
		#cname, helptext, func                                         \
	}

#endif
