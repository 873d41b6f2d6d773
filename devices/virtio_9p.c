/*
 * virtio 9P transport (virtio 1.2, section 5.15 / the virtio-9p PCI device):
 *
 *   -s N,virtio-9p,TAG=/host/dir[,ro][,legacy=false]
 *   (config keys: pci.B.S.F.tag, .path, .ro, .legacy)
 *
 * The guest mounts it with
 *   mount -t 9p -o trans=virtio,version=9p2000.L TAG /mnt
 *
 * One request queue.  Each chain holds a whole 9P request in its
 * device-readable buffers and gets the whole reply in its device-writable
 * buffers.  Requests are served by one worker thread (slow host I/O does
 * not stall the vCPU that kicked), in order, by devices/p9_server.c: the
 * request is gathered into a flat buffer, the reply scattered back.
 *
 * Checkpoint: vc_pause stops the worker taking requests and waits for the
 * one being served, whose reply is put in the used ring before the pause
 * returns, so a checkpoint never holds a request that was executed but
 * not answered.  Requests still in the avail ring are the transport's
 * (vq_last_avail); they run after vc_resume.  The device's own state is
 * the server's fid table (devices/p9_state.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/config.h"
#include "../core/log.h"
#include "../core/sandbox.h"
#include "../core/snapshot.h"
#include "p9_server.h"
#include "pci_emul.h"
#include "virtio.h"

#define VT9P_QSIZE    256
#define VT9P_MAX_IOV  1024
#define VT9P_MAX_TAG  255
#define VT9P_F_MOUNT_TAG (1ULL << 0)
#define VT9P_STATE_VERSION 1   /* layout of this model's part of the section */

struct vt9p_softc {
	struct virtio_softc vs;        /* first: the transport finds it via pi_arg */
	struct vqueue_info vq;
	struct p9_server *srv;
	char tag[VT9P_MAX_TAG + 1];
	uint16_t taglen;
	pthread_t worker;
	pthread_cond_t cv;             /* with vs_mtx: work, pause, busy changes */
	bool kicked;
	bool paused;                   /* between vc_quiesce and vc_reset, or vc_pause and vc_resume */
	bool busy;                     /* a request is being served unlocked */
	bool need_server_reset;
	uint8_t *reqbuf, *repbuf;      /* P9_MAX_MSIZE each (worker only) */
	struct iovec iov[VT9P_MAX_IOV];
};

static void vt9p_notify(void *arg, struct vqueue_info *vq)
{
	(void)vq;
	struct vt9p_softc *sc = arg;
	sc->kicked = true;
	pthread_cond_broadcast(&sc->cv);
}

/* Reset (vc_quiesce) and checkpoint (vc_pause): no new requests, and the
 * one in flight answered.  That wait is bounded because no request blocks
 * in the server (it never opens a FIFO or a device: p9_server.h). */
static void vt9p_quiesce(void *arg)
{
	struct vt9p_softc *sc = arg;
	pthread_mutex_lock(&sc->vs.vs_mtx);
	sc->paused = true;
	while (sc->busy)
		pthread_cond_wait(&sc->cv, &sc->vs.vs_mtx);
	pthread_mutex_unlock(&sc->vs.vs_mtx);
}

static void vt9p_resume(void *arg)
{
	struct vt9p_softc *sc = arg;
	pthread_mutex_lock(&sc->vs.vs_mtx);
	sc->paused = false;
	/* Look at the ring again: kicks during the pause found it paused, and a
	 * restored ring may hold requests the guest is waiting for. */
	sc->kicked = true;
	pthread_cond_broadcast(&sc->cv);
	pthread_mutex_unlock(&sc->vs.vs_mtx);
}

/* vs_mtx held. */
static int vt9p_snapshot(void *arg, struct snap_buf *out)
{
	struct vt9p_softc *sc = arg;
	/* Normally paused already; never save while the worker is inside the
	 * server (it runs requests without vs_mtx). */
	while (sc->busy)
		pthread_cond_wait(&sc->cv, &sc->vs.vs_mtx);
	if (sc->need_server_reset) {   /* a driver reset the worker has not applied yet */
		p9_server_reset(sc->srv);
		sc->need_server_reset = false;
	}
	sb_u32(out, VT9P_STATE_VERSION);
	return p9_server_save(sc->srv, out);
}

/* vs_mtx held; the transport and the queue are back. */
static int vt9p_restore(void *arg, struct snap_rd *in, char *err, size_t errlen)
{
	struct vt9p_softc *sc = arg;
	uint32_t v = sr_u32(in);
	if (!sr_ok(in)) {
		snprintf(err, errlen, "virtio-9p state truncated");
		return -1;
	}
	if (v != VT9P_STATE_VERSION) {
		snprintf(err, errlen, "virtio-9p state layout %u unknown (this hyve has %u)", v, VT9P_STATE_VERSION);
		return -1;
	}
	while (sc->busy)
		pthread_cond_wait(&sc->cv, &sc->vs.vs_mtx);
	sc->need_server_reset = false;
	/* Requests the guest queued before the checkpoint are not looked at
	 * here: vi_pci_resume kicks the queue once the whole VM is back. */
	return p9_server_load(sc->srv, in, err, errlen) < 0 ? -1 : 0;
}

static void vt9p_reset(void *arg)
{
	struct vt9p_softc *sc = arg;
	sc->paused = false;
	sc->kicked = false;
	sc->need_server_reset = true;   /* fids die with the driver */
}

static void *vt9p_thread(void *arg)
{
	struct vt9p_softc *sc = arg;
	struct vqueue_info *vq = &sc->vq;
	pthread_mutex_lock(&sc->vs.vs_mtx);
	for (;;) {
		while (!sc->kicked || sc->paused)
			pthread_cond_wait(&sc->cv, &sc->vs.vs_mtx);
		sc->kicked = false;
		sandbox_thread_role(SANDBOX_ROLE_FILES);   /* once the sandbox is on (core/sandbox.c) */
		struct vq_chain ch;
		int n;
		while (!sc->paused && vq_ring_ready(vq) && !sc->vs.vs_broken &&
		       (n = vq_getchain(vq, sc->iov, VT9P_MAX_IOV, &ch)) > 0) {
			if (ch.rlen < P9_HDR_SIZE || ch.wlen < 11) {
				vi_error(&sc->vs, "9P request without a header or room for a reply");
				break;
			}
			bool reset = sc->need_server_reset;
			sc->need_server_reset = false;
			sc->busy = true;
			pthread_mutex_unlock(&sc->vs.vs_mtx);

			if (reset)
				p9_server_reset(sc->srv);
			size_t reqlen = ch.rlen < P9_MAX_MSIZE ? ch.rlen : P9_MAX_MSIZE;
			reqlen = iov_to_buf(sc->iov, ch.readable, 0, sc->reqbuf, reqlen);
			size_t repcap = ch.wlen < P9_MAX_MSIZE ? ch.wlen : P9_MAX_MSIZE;
			size_t replen = p9_handle(sc->srv, sc->reqbuf, reqlen, sc->repbuf, repcap);
			replen = buf_to_iov(sc->repbuf, replen, sc->iov + ch.readable, ch.writable, 0);
			if (log_level_max >= LOG_DEBUG && reqlen >= P9_HDR_SIZE && replen >= P9_HDR_SIZE) {
				uint32_t e = 0;
				if (sc->repbuf[4] == 7 && replen >= 11)
					memcpy(&e, sc->repbuf + 7, 4);
				log_debug("%s: T%u %zu bytes -> R%u %zu bytes%s%s", sc->vs.vs_name, sc->reqbuf[4], reqlen,
				          sc->repbuf[4], replen, e ? " errno " : "", e ? strerror((int)e) : "");
			}

			pthread_mutex_lock(&sc->vs.vs_mtx);
			/* Answer before clearing busy, even when pausing: a pause
			 * must not leave an executed request unanswered (the
			 * checkpoint would lose the reply).  After a reset the ring
			 * is gone and the reply is dropped. */
			bool answer = vq_ring_ready(vq) && !sc->vs.vs_broken;
			if (answer) {
				vq_relchain(vq, ch.idx, (uint32_t)replen);
				vq_endchains(vq, false);
			}
			sc->busy = false;
			pthread_cond_broadcast(&sc->cv);
			if (!answer || sc->paused)
				break;
		}
	}
	return NULL;
}

static int vt9p_cfgread(void *arg, uint32_t off, int size, uint32_t *val)
{
	struct vt9p_softc *sc = arg;
	uint8_t cfg[2 + VT9P_MAX_TAG] = { 0 };
	cfg[0] = (uint8_t)sc->taglen;
	cfg[1] = (uint8_t)(sc->taglen >> 8);
	memcpy(cfg + 2, sc->tag, sc->taglen);
	uint32_t v = 0;
	for (int i = 0; i < size; i++)
		if (off + (uint32_t)i < sizeof(cfg))
			v |= (uint32_t)cfg[off + (uint32_t)i] << (8 * i);
	*val = v;
	return 0;
}

static const struct virtio_consts vt9p_consts = {
	.vc_name = "virtio-9p",
	.vc_devtype = VIRTIO_ID_9P,
	.vc_class = 0x00,             /* unclassified, as other 9p devices use */
	.vc_subclass = 0x02,
	.vc_nvq = 1,
	.vc_cfgsize = 2 + VT9P_MAX_TAG,
	.vc_reset = vt9p_reset,
	.vc_qnotify = vt9p_notify,
	.vc_cfgread = vt9p_cfgread,
	.vc_quiesce = vt9p_quiesce,
	.vc_snapshot = vt9p_snapshot,
	.vc_restore = vt9p_restore,
	.vc_pause = vt9p_quiesce,
	.vc_resume = vt9p_resume,
};

/* "TAG=/host/dir[,ro][,...]": the first key is the mount tag (bhyve). */
static int vt9p_legacy_config(const char *cfgpath, const char *opts, char *err, size_t errlen)
{
	if (!opts || !*opts) {
		snprintf(err, errlen, "virtio-9p needs TAG=/host/dir");
		return -1;
	}
	if (strncmp(opts, "tag=", 4) == 0 || strncmp(opts, "path=", 5) == 0)
		return pci_parse_options(cfgpath, opts, NULL, err, errlen);
	const char *eq = strchr(opts, '=');
	const char *comma = strchr(opts, ',');
	if (!eq || (comma && comma < eq) || eq == opts) {
		snprintf(err, errlen, "virtio-9p: expected TAG=/host/dir, got '%s'", opts);
		return -1;
	}
	size_t tl = (size_t)(eq - opts);
	const char *pend = comma ? comma : eq + strlen(eq);
	size_t pl = (size_t)(pend - (eq + 1));
	char *tag = strndup(opts, tl), *path = strndup(eq + 1, pl);
	int rc = -1;
	if (!tag || !path)
		snprintf(err, errlen, "out of memory");
	else if (set_config_valuef(tag, "%s.tag", cfgpath) < 0 || set_config_valuef(path, "%s.path", cfgpath) < 0)
		snprintf(err, errlen, "virtio-9p: cannot set %s.tag/.path", cfgpath);
	else
		rc = comma ? pci_parse_options(cfgpath, comma + 1, NULL, err, errlen) : 0;
	free(tag);
	free(path);
	return rc;
}

static int vt9p_init(struct pci_devinst *pi, const char *cfgpath)
{
	char key[128];
#define KEY(k) (snprintf(key, sizeof(key), "%s.%s", cfgpath, k), key)
	const char *tag = get_config_value(KEY("tag"));
	if (!tag || !*tag)
		fatal("config: %s: virtio-9p needs a mount tag (-s %u,virtio-9p,TAG=/host/dir)", key, pi->pi_slot);
	if (strlen(tag) > VT9P_MAX_TAG)
		fatal("config: %s: mount tag '%s' is longer than %d bytes", key, tag, VT9P_MAX_TAG);
	const char *path = get_config_value(KEY("path"));
	if (!path || !*path)
		fatal("config: %s: virtio-9p needs a share directory (-s %u,virtio-9p,%s=/host/dir)", key,
		      pi->pi_slot, tag);
	struct stat st;
	if (stat(path, &st) < 0)
		fatal("config: %s: share directory '%s': %s", key, path, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		fatal("config: %s: share '%s' is not a directory", key, path);
	bool ro = get_config_bool_default(KEY("ro"), false);
	sandbox_allow_path(path, !ro);   /* the guest's files, after set-up too */
	bool legacy = get_config_bool_default(KEY("legacy"), true);

	struct vt9p_softc *sc = calloc(1, sizeof(*sc));
	if (!sc)
		return -1;
	sc->srv = p9_server_new(path, ro);
	if (!sc->srv)
		fatal("config: %s.path: share directory '%s': %s", cfgpath, path, strerror(errno));
	snprintf(sc->tag, sizeof(sc->tag), "%s", tag);
	sc->taglen = (uint16_t)strlen(sc->tag);
	sc->reqbuf = malloc(P9_MAX_MSIZE);
	sc->repbuf = malloc(P9_MAX_MSIZE);
	if (!sc->reqbuf || !sc->repbuf)
		return -1;
	pthread_cond_init(&sc->cv, NULL);
	vi_softc_linkup(&sc->vs, &vt9p_consts, sc, pi, &sc->vq);
	sc->vs.vs_hv_caps = VT9P_F_MOUNT_TAG;
	sc->vq.vq_maxsize = VT9P_QSIZE;
	if (vi_pci_setup(&sc->vs, legacy) < 0)
		return -1;
	if (pthread_create(&sc->worker, NULL, vt9p_thread, sc) != 0) {
		log_warn("%s: cannot start the 9P worker thread", sc->vs.vs_name);
		return -1;
	}
	pthread_setname_np(sc->worker, "virtio-9p");
	return 0;
#undef KEY
}

static const char *const vt9p_options[] = { "tag", "path", "ro", "legacy", NULL };

static const struct pci_devemu pci_de_vt9p = {
	.pe_emu = "virtio-9p",
	.pe_help = "9P2000.L file share: TAG=/host/dir[,ro][,legacy=false]",
	.pe_options = vt9p_options,
	.pe_legacy_config = vt9p_legacy_config,
	.pe_init = vt9p_init,
	VI_PCI_DEVEMU_HOOKS,
};
PCI_EMUL_REGISTER(pci_de_vt9p)
