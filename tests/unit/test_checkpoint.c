/*
 * Unit tests for core/checkpoint.c's writer, without /dev/kvm: which files
 * a checkpoint may create and replace, and that a failed checkpoint or
 * suspend leaves the VM running.
 *
 * The file is #included to reach its static state; the VM (vCPUs, device
 * state, RAM) is faked below.
 * test-sources: core/config.c core/log.c
 * test-libs: -lz
 */
#include "../../core/checkpoint.c"

#include <dirent.h>
#include <sys/sysmacros.h>

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

void vm_request_exit(int status) { (void)status; }
int vm_exit_requested(void) { return -1; }

static int pause_depth, quiesce_depth;
void vcpus_pause(struct hyve_vm *vm) { (void)vm; pause_depth++; }
void vcpus_resume(struct hyve_vm *vm) { (void)vm; pause_depth--; }
void vmstate_quiesce(void) { quiesce_depth++; }
void vmstate_resume(void) { quiesce_depth--; }
int vmstate_check_supported(char *err, size_t errlen) { (void)err; (void)errlen; return 0; }

/* Runs while the VM is paused, after the target was checked: a test's chance to change things. */
static void (*during_save)(void);
static const char *save_target;

/* What the devices would see: the checkpoint's path during the save, then whether it was kept. */
static char path_seen[512];
static int saved_kept = -1;
static const char *ckpt_path;
void snapshot_set_checkpoint_path(const char *path) { ckpt_path = path; }
void snapshot_saved(bool kept) { saved_kept = kept; }

int vmstate_save(struct hyve_vm *vm, struct vm_sections *out, char *err, size_t errlen)
{
	(void)vm; (void)err; (void)errlen;
	out->n = 0;
	snprintf(path_seen, sizeof(path_seen), "%s", ckpt_path ? ckpt_path : "(none)");
	if (during_save)
		during_save();
	return 0;
}

int vmstate_load(struct hyve_vm *vm, const struct vm_sections *in, char *err, size_t errlen)
{
	(void)vm; (void)in; (void)err; (void)errlen;
	return 0;
}

void vm_sections_free(struct vm_sections *l)
{
	for (int i = 0; i < l->n; i++)
		free(l->s[i].data.data);
	free(l->s);
	l->s = NULL;
	l->n = l->cap = 0;
}

struct vm_section *vm_sections_add(struct vm_sections *l, const char *name, uint32_t version)
{
	if (l->n == l->cap) {
		int nc = l->cap ? l->cap * 2 : 8;
		struct vm_section *ns = realloc(l->s, (size_t)nc * sizeof(*ns));
		if (!ns)
			return NULL;
		l->s = ns;
		l->cap = nc;
	}
	struct vm_section *s = &l->s[l->n++];
	memset(s, 0, sizeof(*s));
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->version = version;
	return s;
}

const struct vm_section *vm_sections_find(const struct vm_sections *l, const char *name)
{
	for (int i = 0; i < l->n; i++)
		if (strcmp(l->s[i].name, name) == 0)
			return &l->s[i];
	return NULL;
}

static uint8_t ram[16 * 4096];

int vm_mem_regions(struct vmctx *ctx, struct vm_mem_region *out, int max)
{
	(void)ctx;
	if (max < 1)
		return 0;
	out[0] = (struct vm_mem_region){ .gpa = 0, .size = sizeof(ram), .hva = ram };
	return 1;
}

void vm_prefetch_memory(struct vmctx *ctx, int fd) { (void)ctx; (void)fd; }   /* advisory: nothing to prefetch here */

int vm_map_memory_file(struct vmctx *ctx, int i, int fd, uint64_t off)
{
	(void)ctx; (void)i; (void)fd; (void)off;
	return -1;
}

/* ---- helpers ---- */

static char dir[] = "/tmp/test_checkpoint.XXXXXX";
static struct hyve_vm vm;

static bool vm_running(void)
{
	return pause_depth == 0 && quiesce_depth == 0;
}

/* Files in dir whose names contain ".tmp." */
static int temp_files(void)
{
	int n = 0;
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d && (e = readdir(d)))
		n += strstr(e->d_name, ".tmp.") != NULL;
	if (d)
		closedir(d);
	return n;
}

static void target_becomes_directory(void)
{
	mkdir(save_target, 0700);
}

int main(void)
{
	char err[512], path[256], tmp[300], victim[256], fifo[256], link[256], dev[256];
	if (!mkdtemp(dir)) {
		printf("FAIL - mkdtemp\n");
		return 1;
	}
	set_config_value("name", "ckvm");
	memset(ram + 4096, 0x5a, 4096);

	/* The ordinary case: a new file, mode 0600 whatever the umask, no temporary left. */
	mode_t old_umask = umask(0);
	snprintf(path, sizeof(path), "%s/a.ckpt", dir);
	int rc = checkpoint_save(&vm, path, false, err, sizeof(err));
	umask(old_umask);
	struct stat st;
	CHECK(rc == 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode), "checkpoint written (%s)", rc ? err : "ok");
	CHECK((st.st_mode & 07777) == 0600, "mode 0600 even with umask 0 (0%o)", st.st_mode & 07777);
	CHECK(temp_files() == 0 && vm_running(), "no temporary file left, VM running");
	CHECK(checkpoint_open(path, err, sizeof(err)) == 0 && strcmp(get_config_value("name"), "ckvm") == 0,
	      "it reads back");
	CHECK(!strcmp(path_seen, path) && saved_kept == 1 && !ckpt_path,
	      "devices saw the checkpoint's path (%s), then 'kept'", path_seen);
	/* A relative target: devices get it absolute (a qcow2 snapshot is named after it). */
	char cwd[256], rel_abs[600];
	if (getcwd(cwd, sizeof(cwd)) && chdir(dir) == 0) {
		rc = checkpoint_save(&vm, "rel.ckpt", false, err, sizeof(err));
		snprintf(rel_abs, sizeof(rel_abs), "%s/rel.ckpt", dir);
		CHECK(rc == 0 && !strcmp(path_seen, rel_abs), "a relative path reaches devices absolute (%s)", path_seen);
		unlink("rel.ckpt");
		if (chdir(cwd))
			return 1;
	}
	close(rd.fd);
	rd.fd = -1;
	vm_sections_free(&rd.secs);

	/* A symlink planted at the temporary name is not followed. */
	snprintf(victim, sizeof(victim), "%s/victim", dir);
	FILE *f = fopen(victim, "w");
	fputs("precious", f);
	fclose(f);
	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
	CHECK(symlink(victim, tmp) == 0, "symlink planted at %s", tmp);
	rc = checkpoint_save(&vm, path, false, err, sizeof(err));
	CHECK(rc == 0, "checkpoint next to a planted symlink succeeds under another name (%s)", rc ? err : "ok");
	CHECK(stat(victim, &st) == 0 && st.st_size == 8 && lstat(tmp, &st) == 0 && S_ISLNK(st.st_mode),
	      "the symlink's target is untouched, the symlink left alone");
	unlink(tmp);

	/* A world-readable file planted at the temporary name is not reused. */
	int fd = open(tmp, O_CREAT | O_WRONLY | O_EXCL, 0666);
	fchmod(fd, 0666);
	close(fd);
	rc = checkpoint_save(&vm, path, false, err, sizeof(err));
	CHECK(rc == 0 && stat(tmp, &st) == 0 && st.st_size == 0, "a planted 0666 file is not written to");
	CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0600, "the checkpoint is 0600 (0%o)", st.st_mode & 07777);
	unlink(tmp);
	CHECK(temp_files() == 0, "no temporary file of ours left");

	/* Targets that are not regular files: refused, unchanged, VM never paused. */
	CHECK(checkpoint_save(&vm, dir, false, err, sizeof(err)) == -1 && strstr(err, "is a directory") &&
	      vm_running(), "a directory is refused: %s", err);
	CHECK(checkpoint_save(&vm, dir, true, err, sizeof(err)) == -1 && vm_running(),
	      "suspend to a directory is refused, the VM keeps running");
	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
	mkfifo(fifo, 0600);
	CHECK(checkpoint_save(&vm, fifo, false, err, sizeof(err)) == -1 && strstr(err, "is a FIFO") &&
	      stat(fifo, &st) == 0 && S_ISFIFO(st.st_mode) && vm_running(), "a FIFO is refused: %s", err);
	snprintf(link, sizeof(link), "%s/link-to-fifo", dir);
	symlink(fifo, link);
	CHECK(checkpoint_save(&vm, link, false, err, sizeof(err)) == -1 && lstat(link, &st) == 0 && S_ISLNK(st.st_mode),
	      "a symlink to a FIFO is refused and stays");
	snprintf(dev, sizeof(dev), "%s/null", dir);
	if (mknod(dev, S_IFCHR | 0600, makedev(1, 3)) == 0) {
		CHECK(checkpoint_save(&vm, dev, true, err, sizeof(err)) == -1 && strstr(err, "character device") &&
		      stat(dev, &st) == 0 && S_ISCHR(st.st_mode) && vm_running(), "a device node is refused: %s", err);
		unlink(dev);
	}
	CHECK(temp_files() == 0, "no temporary files after refusals");

	/* The target turns into a directory while the VM is paused: the rename fails. */
	snprintf(path, sizeof(path), "%s/b.ckpt", dir);
	save_target = path;
	during_save = target_becomes_directory;
	rc = checkpoint_save(&vm, path, true, err, sizeof(err));
	during_save = NULL;
	CHECK(rc == -1 && strstr(err, path), "suspend whose rename fails reports it: %s", err);
	CHECK(saved_kept == 0, "and tells the devices the save was dropped (their disk snapshots go)");
	CHECK(vm_running(), "and the VM runs again (pause depth %d, quiesce depth %d)", pause_depth, quiesce_depth);
	CHECK(temp_files() == 0, "and its temporary file is removed");
	rmdir(path);

	/* A successful suspend leaves the VM paused: it exits next. */
	rc = checkpoint_save(&vm, path, true, err, sizeof(err));
	CHECK(rc == 0 && pause_depth == 1 && quiesce_depth == 1 && stat(path, &st) == 0,
	      "suspend: file in place, VM still paused for the exit");

	unlink(path);
	snprintf(path, sizeof(path), "%s/a.ckpt", dir);
	unlink(path);
	unlink(victim);
	unlink(link);
	unlink(fifo);
	rmdir(dir);
	printf("%s\n", failures ? "FAILED" : "all ok");
	return failures ? 1 : 0;
}
