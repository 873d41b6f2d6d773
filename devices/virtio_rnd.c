/*
 * virtio entropy device (virtio 1.2, section 5.4): -s N,virtio-rnd
 *
 * One request queue; every buffer the driver posts is device-writable and
 * gets filled from the host's getrandom().
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>

#include "../core/config.h"
#include "../core/log.h"
#include "pci_emul.h"
#include "virtio.h"

#define VTRND_QSIZE 64
#define VTRND_MAX_FILL 65536   /* bytes per request; the driver asks for far less */

struct vtrnd_softc {
	struct virtio_softc vs;   /* first: the transport finds it via pi_arg */
	struct vqueue_info vq;
};

static void vtrnd_notify(void *arg, struct vqueue_info *vq)
{
	struct vtrnd_softc *sc = arg;
	struct iovec iov[VTRND_QSIZE];
	struct vq_chain ch;
	int n;
	while ((n = vq_getchain(vq, iov, VTRND_QSIZE, &ch)) > 0) {
		if (ch.readable) {
			vi_error(&sc->vs, "entropy request with a device-readable buffer");
			return;
		}
		uint32_t done = 0;
		for (int i = 0; i < n && done < VTRND_MAX_FILL; i++) {
			size_t want = iov[i].iov_len;
			if (want > VTRND_MAX_FILL - done)
				want = VTRND_MAX_FILL - done;
			size_t got = 0;
			while (got < want) {
				ssize_t r = getrandom((char *)iov[i].iov_base + got, want - got, 0);
				if (r < 0 && errno == EINTR)
					continue;
				if (r <= 0)
					break;
				got += (size_t)r;
			}
			done += (uint32_t)got;
			if (got < want)
				break;
		}
		vq_relchain(vq, ch.idx, done);
	}
	vq_endchains(vq, true);
}

static const struct virtio_consts vtrnd_consts = {
	.vc_name = "virtio-rnd",
	.vc_devtype = VIRTIO_ID_ENTROPY,
	.vc_class = 0xff,             /* other */
	.vc_subclass = 0x00,
	.vc_nvq = 1,
	.vc_cfgsize = 0,
	.vc_qnotify = vtrnd_notify,
};

static int vtrnd_init(struct pci_devinst *pi, const char *cfgpath)
{
	struct vtrnd_softc *sc = calloc(1, sizeof(*sc));
	if (!sc)
		return -1;
	char key[96];
	snprintf(key, sizeof(key), "%s.legacy", cfgpath);
	vi_softc_linkup(&sc->vs, &vtrnd_consts, sc, pi, &sc->vq);
	sc->vq.vq_maxsize = VTRND_QSIZE;
	return vi_pci_setup(&sc->vs, get_config_bool_default(key, true));
}

static const char *const vtrnd_options[] = { "legacy", NULL };

static const struct pci_devemu pci_de_vtrnd = {
	.pe_emu = "virtio-rnd",
	.pe_help = "virtio entropy source (host getrandom) [,legacy=false: modern-only]",
	.pe_options = vtrnd_options,
	.pe_init = vtrnd_init,
	VI_PCI_DEVEMU_HOOKS,
};
PCI_EMUL_REGISTER(pci_de_vtrnd)
