/*
 * Network backends for virtio-net: where the guest's Ethernet frames go.
 *
 *   tapN / NAME   a Linux tap interface (/dev/net/tun).  Names starting with
 *                 "tap" are created if missing; any other name must already
 *                 be a tap interface.  With IFF_VNET_HDR every frame carries
 *                 a 10-byte struct virtio_net_hdr in front, which is what
 *                 makes checksum and TSO offload possible.
 *   slirp         user-mode networking (libslirp), no privileges needed:
 *                 10.0.2.0/24, host 10.0.2.2, DNS 10.0.2.3, DHCP from
 *                 10.0.2.15, as QEMU.  Port forwards from the host with
 *                 hostfwd rules "[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT".
 *
 * Both look the same to the device: a non-blocking descriptor that yields
 * one frame per read (be_fd, polled by the device on the main thread) and
 * netbe_send() for the other direction (any thread).  The slirp stack runs
 * on the main thread's event loop; frames cross to it through a
 * SOCK_SEQPACKET socketpair, so the device never calls into libslirp and
 * libslirp never calls into the device (it is not thread-safe, and guest
 * transmits arrive on vCPU threads).
 */
#ifndef HYVE_NET_BACKEND_H
#define HYVE_NET_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* struct virtio_net_hdr without num_buffers: what a tap with IFF_VNET_HDR
 * puts in front of every frame (TUNSETVNETHDRSZ left at its default). */
#define NETBE_VNET_HDR_LEN 10

/* Offloads the guest can take (TUNSETOFFLOAD), set from negotiated features. */
#define NETBE_OFFLOAD_CSUM 0x1
#define NETBE_OFFLOAD_TSO4 0x2
#define NETBE_OFFLOAD_TSO6 0x4

struct net_backend {
	char be_name[64];        /* "tap0", "slirp": for log lines */
	int be_fd;               /* frames from the backend: one per read */
	bool be_vnet_hdr;        /* frames both ways carry a virtio_net_hdr */
	bool be_offload;         /* TUNSETOFFLOAD works: offer csum/TSO */
	struct netbe_slirp *be_slirp;   /* slirp state, or NULL */
};

/*
 * Syntax check of a backend spec and its hostfwd list (';'-separated
 * rules), without opening anything: 0, or -1 with a reason in err.
 */
int netbe_check(const char *spec, const char *hostfwd, char *err, size_t errlen);
/*
 * Open a backend.  mtu (0: default) sizes slirp's interface; for a tap it
 * is only compared with the interface's MTU.  NULL with a reason in err.
 */
struct net_backend *netbe_open(const char *spec, const char *hostfwd, unsigned mtu, char *err,
                               size_t errlen);
/* Send one frame (vnet header first if be_vnet_hdr).  0, or -1 with errno
 * (EAGAIN: the backend is full and the frame was not sent). */
int netbe_send(struct net_backend *be, const struct iovec *iov, int n);
/* What the guest accepts (NETBE_OFFLOAD_*); taps only.  0 or -1. */
int netbe_set_offload(struct net_backend *be, unsigned offloads);

#endif
