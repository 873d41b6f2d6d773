/*
 * Unit tests for core/control.c's socket server, without /dev/kvm: who may
 * connect, how many at a time, how long a silent or trickling client may
 * hold a thread, the errors for malformed requests, which commands wait
 * for a running operation, and the default directory's checks.
 *
 * The file is #included to reach its static state (the request timeout,
 * the connection count); the VM and the checkpoint writer are faked.
 * test-sources: core/config.c core/log.c core/sandbox_landlock.c
 */
#include "../../core/control.c"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

static int failures;

/* The condition first: the message may show what it computed. */
#define CHECK(cond, ...)                                                   \
	do {                                                               \
		bool ok_ = (cond);                                         \
		char what_[1024];                                          \
		snprintf(what_, sizeof(what_), __VA_ARGS__);               \
		if (ok_)                                                   \
			printf("ok - %s\n", what_);                        \
		else {                                                     \
			printf("FAIL - %s (%s:%d)\n", what_, __FILE__, __LINE__); \
			failures++;                                        \
		}                                                          \
	} while (0)

/* ---- fakes of the VM ---- */

static atomic_int exit_requested = -1;
void vm_request_exit(int status) { atomic_store(&exit_requested, status); }
int vm_exit_requested(void) { return -1; }   /* the server keeps serving */

static atomic_int pauses;
void vcpus_pause(struct hyve_vm *vm) { (void)vm; pauses++; }
void vcpus_resume(struct hyve_vm *vm) { (void)vm; pauses--; }
bool vcpus_paused(void) { return pauses > 0; }
bool vcpus_suspended(void) { return false; }
void vcpus_get_stats(struct vcpu_stats *st) { memset(st, 0, sizeof(*st)); }
uint64_t vm_get_lowmem_size(struct vmctx *ctx) { (void)ctx; return 1 << 20; }
uint64_t vm_get_highmem_size(struct vmctx *ctx) { (void)ctx; return 0; }
int mevent_call(void (*fn)(void *), void *arg) { (void)fn; (void)arg; return -1; }   /* "no loop": run inline */

/* A checkpoint to "/slow" runs until released: an operation in progress. */
static atomic_bool slow_release;
int checkpoint_save(struct hyve_vm *vm, const char *path, bool suspend, char *err, size_t errlen)
{
	(void)vm; (void)suspend; (void)err; (void)errlen;
	while (strcmp(path, "/slow") == 0 && !atomic_load(&slow_release))
		usleep(1000);
	return 0;
}

/* ---- clients ---- */

static char dir[] = "/tmp/test_control.XXXXXX";
static char sock[80];

static int client(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Everything the server sends until it closes (or 5 s pass). */
static void read_reply(int fd, char *buf, size_t cap)
{
	size_t n = 0;
	struct pollfd p = { .fd = fd, .events = POLLIN };
	while (n < cap - 1 && poll(&p, 1, 5000) == 1) {
		ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	buf[n] = '\0';
}

/* One request line (given without its newline); the whole reply. */
static const char *request(const char *line)
{
	static char reply[4096];
	int fd = client();
	if (fd < 0)
		return "(connect failed)";
	char req[CONTROL_MAX_REQUEST + 128];
	int n = snprintf(req, sizeof(req), "%s\n", line);
	(void)!send(fd, req, n < (int)sizeof(req) ? (size_t)n : sizeof(req) - 1, MSG_NOSIGNAL);
	read_reply(fd, reply, sizeof(reply));
	close(fd);
	return reply;
}

static bool wait_for(atomic_int *v, int want)
{
	for (int i = 0; i < 2000 && atomic_load(v) != want; i++)
		usleep(1000);
	return atomic_load(v) == want;
}

/* The first line of a reply, for messages. */
static const char *line1(const char *s)
{
	static char l[320];
	snprintf(l, sizeof(l), "%.*s", (int)strcspn(s, "\n"), s);
	return l;
}

static double now(void)
{
	return (double)now_ms() / 1e3;
}

static void *slow_checkpoint(void *p)
{
	snprintf(p, 4096, "%s", request("HYVECTL 1 checkpoint /slow"));
	return NULL;
}

/* ---- tests ---- */

static void test_dir_checks(struct hyve_vm *vm)
{
	char d[256], why[160];
	snprintf(d, sizeof(d), "%s/private", dir);
	mkdir(d, 0700);
	CHECK(control_dir_problem(d, why, sizeof(why)) == NULL, "a 0700 directory of ours is fine");
	snprintf(d, sizeof(d), "%s/missing", dir);
	CHECK(control_dir_problem(d, why, sizeof(why)) == NULL, "a missing one is for connect() to report");
	snprintf(d, sizeof(d), "%s/open", dir);
	mkdir(d, 0700);
	chmod(d, 0777);
	CHECK(control_dir_problem(d, why, sizeof(why)) && strstr(why, "writable by group or others (mode 777)"),
	      "a world-writable directory: %.300s", why);
	/* hyve itself refuses to start its socket there. */
	setenv("HYVE_RUN_DIR", d, 1);
	CHECK(control_start(vm) == -1, "control_start refuses the default directory when it is not private");
	snprintf(d, sizeof(d), "%s/link", dir);
	char target[256];
	snprintf(target, sizeof(target), "%s/private", dir);
	symlink(target, d);
	CHECK(control_dir_problem(d, why, sizeof(why)) && strstr(why, "symlink"), "a symlink to one: %.300s", why);
	snprintf(d, sizeof(d), "%s/file", dir);
	close(open(d, O_CREAT | O_WRONLY, 0600));
	CHECK(control_dir_problem(d, why, sizeof(why)) && strstr(why, "not a directory"), "a file: %.300s", why);
	if (geteuid() == 0) {
		snprintf(d, sizeof(d), "%s/theirs", dir);
		mkdir(d, 0700);
		CHECK(chown(d, 65534, 65534) == 0 && control_dir_problem(d, why, sizeof(why)) &&
		      strstr(why, "owned by uid 65534"), "someone else's: %s", why);
	}
}

int main(void)
{
	static struct hyve_vm vm = { .ncpus = 1 };
	signal(SIGPIPE, SIG_IGN);
	if (!mkdtemp(dir)) {
		printf("FAIL - mkdtemp\n");
		return 1;
	}
	set_config_value("name", "ctlvm");
	test_dir_checks(&vm);

	/* The default directory is made 0700 and the socket 0600, whatever the umask. */
	char run[48];
	snprintf(run, sizeof(run), "%s/run", dir);
	setenv("HYVE_RUN_DIR", run, 1);
	snprintf(sock, sizeof(sock), "%s/ctlvm.sock", run);
	mode_t old = umask(0);
	int rc = control_start(&vm);
	umask(old);
	struct stat st, dst;
	CHECK(rc == 0 && stat(sock, &st) == 0 && S_ISSOCK(st.st_mode), "control socket listening at %s", sock);
	CHECK((st.st_mode & 0777) == 0600, "socket mode 0600 with umask 0 (%03o)", st.st_mode & 0777);
	CHECK(stat(run, &dst) == 0 && (dst.st_mode & 0777) == 0700, "its directory made 0700 (%03o)", dst.st_mode & 0777);

	const char *r = request("HYVECTL 1 stats");
	CHECK(strstr(r, "name ctlvm\n") && strstr(r, "\nOK\n"), "stats answered");
	r = request("HYVECTL 1 frobnicate");
	CHECK(strstr(r, "ERR unknown command 'frobnicate'"), "unknown command: %s", line1(r));
	r = request("HYVECTL 1 abcdefghijklmnopqrstuvwxyz0123456789");
	CHECK(strncmp(r, "ERR command name too long", 25) == 0, "long command name: %s", line1(r));
	r = request("HYVECTL 2 stats");
	CHECK(strstr(r, "ERR protocol version 2 not supported"), "other protocol version: %s", line1(r));
	r = request("GET / HTTP/1.0");
	CHECK(strstr(r, "ERR malformed request"), "not the protocol: %s", line1(r));
	/* Found by tests/fuzz/fuzz_control.c: these ran "pause". */
	r = request("HYVECTL 1pause");
	CHECK(strstr(r, "ERR malformed request") && pauses == 0, "version glued to the command: %s", line1(r));
	r = request("HYVECTL 4294967297 pause");
	CHECK(strstr(r, "ERR malformed request") && pauses == 0, "a version that overflows int: %s", line1(r));
	int nfd = client();
	(void)!send(nfd, "HYVECTL 1 pause\0x\n", 18, MSG_NOSIGNAL);
	char nbuf[512];
	read_reply(nfd, nbuf, sizeof(nbuf));
	close(nfd);
	CHECK(strstr(nbuf, "ERR malformed request (a NUL byte in the line)") && pauses == 0, "a NUL in the line: %s",
	      line1(nbuf));

	/* Length violations say so. */
	static char big[CONTROL_MAX_REQUEST + 100];
	memset(big, 'a', sizeof(big) - 1);
	r = request(big);
	CHECK(strstr(r, "ERR request too long (a request line is at most 4200 bytes)"), "over-long request: %s", line1(r));
	int fd = client();
	(void)!send(fd, "HYVECTL 1 stats", 15, MSG_NOSIGNAL);
	shutdown(fd, SHUT_WR);
	char buf[4096];
	read_reply(fd, buf, sizeof(buf));
	close(fd);
	CHECK(strstr(buf, "ERR request must be one line ending in a newline"), "no newline: %s", line1(buf));

	/* A client that sends nothing, or trickles, is dropped at the deadline. */
	request_timeout_ms = 300;
	fd = client();
	double t0 = now();
	read_reply(fd, buf, sizeof(buf));
	double dt = now() - t0;
	close(fd);
	CHECK(strstr(buf, "ERR no complete request line within 300 ms") && dt < 5.0, "silent client dropped after %.2f s",
	      dt);
	fd = client();
	t0 = now();
	struct pollfd p = { .fd = fd, .events = POLLIN };
	for (int i = 0; i < 100 && poll(&p, 1, 0) == 0; i++) {
		(void)!send(fd, "H", 1, MSG_NOSIGNAL);   /* a byte every 20 ms never completes a line */
		usleep(20000);
	}
	dt = now() - t0;
	read_reply(fd, buf, sizeof(buf));
	close(fd);
	CHECK(strstr(buf, "ERR no complete request line") && dt < 5.0, "trickling client dropped after %.2f s", dt);
	request_timeout_ms = 5000;

	/* At most MAX_CONNS at a time; the next hears why. */
	CHECK(wait_for(&nconns, 0), "no connection threads left");
	int idle[MAX_CONNS];
	for (int i = 0; i < MAX_CONNS; i++)
		idle[i] = client();
	CHECK(wait_for(&nconns, MAX_CONNS), "%d idle connections hold %d threads", MAX_CONNS, atomic_load(&nconns));
	r = request("HYVECTL 1 stats");
	CHECK(strstr(r, "ERR busy: too many control connections (at most 16 at a time)"), "one more is refused: %s", line1(r));
	for (int i = 0; i < MAX_CONNS; i++)
		close(idle[i]);
	CHECK(wait_for(&nconns, 0), "their threads end when they close");
	r = request("HYVECTL 1 stats");
	CHECK(strstr(r, "\nOK\n"), "served again");

	/* An operation in progress: state changes wait, queries and destroy do not. */
	static char slow_reply[4096];
	pthread_t th;
	pthread_create(&th, NULL, slow_checkpoint, slow_reply);
	for (int i = 0; i < 2000 && !atomic_load(&op_running); i++)
		usleep(1000);
	r = request("HYVECTL 1 pause");
	CHECK(strstr(r, "ERR busy: checkpoint in progress"), "pause during a checkpoint: %s", line1(r));
	CHECK(pauses == 0, "and it did not pause");
	r = request("HYVECTL 1 stats");
	CHECK(strstr(r, "\nOK\n"), "stats during a checkpoint");
	r = request("HYVECTL 1 destroy");
	CHECK(strstr(r, "OK") && wait_for(&exit_requested, HYVE_EXIT_POWEROFF), "destroy during a checkpoint");
	atomic_store(&slow_release, true);
	pthread_join(th, NULL);
	CHECK(strstr(slow_reply, "OK"), "the checkpoint finishes: %s", line1(slow_reply));
	r = request("HYVECTL 1 pause");
	CHECK(strstr(r, "OK") && pauses == 1, "pause afterwards");
	r = request("HYVECTL 1 resume");
	CHECK(strstr(r, "OK") && pauses == 0, "resume");

	/* Another user (loosened socket and directory modes: SO_PEERCRED still holds). */
	if (geteuid() == 0) {
		chmod(dir, 0711);
		chmod(run, 0711);
		chmod(sock, 0666);
		pid_t pid = fork();
		if (pid == 0) {
			if (setgid(65534) || setuid(65534))
				_exit(2);
			r = request("HYVECTL 1 pause");
			_exit(strncmp(r, "ERR permission denied: uid 65534 may not control this VM", 56) ? 1 : 0);
		}
		int status;
		waitpid(pid, &status, 0);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "uid 65534 is refused (child status %d)",
		      WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		CHECK(pauses == 0, "and its command did not run");
		chmod(sock, 0600);
	} else {
		printf("ok - # skipped the other-uid check: needs root\n");
	}

	control_stop();
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)!system(cmd);
	printf("%s\n", failures ? "FAILED" : "all ok");
	return failures ? 1 : 0;
}
