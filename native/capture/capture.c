/*
 * rolltrace's in-process capture: libpcap (TPACKET_V3 ring) read by a thread of its own into blocks that
 * are whole nanosecond pcap files, each at most `block` bytes; JavaScript takes the full blocks with one
 * memcpy each and stores them as packet_chunks as they are. Per frame: one 16-byte record header and one
 * memcpy of the captured bytes, no JavaScript, no write() to a file, no read() back (what `tcpdump -w`
 * followed through its files costs twice). The thread keeps reading while JavaScript is busy (a commit,
 * a GC): full blocks wait in a queue of at most `maxQueued` bytes; past it the frames are counted as
 * dropped (queue drops), never silently lost.
 *
 * API (all on the JavaScript thread):
 *   open(iface, snaplen, bufferBytes, filter|null, blockBytes, maxQueuedBytes) -> handle  (throws: libpcap's error)
 *   linktype(handle) -> LINKTYPE_ value of the capture
 *   take(handle, dst Buffer, out Float64Array(6)) -> bytes copied into dst (0: no block waiting)
 *       out = [bytes, packets, first sec, first nsec, last sec, last nsec]; dst must hold blockBytes
 *   flush(handle) -> asks the thread to hand over the block being filled and to read libpcap's counters at
 *       its next wake-up (<= 100 ms)
 *   stats(handle, out Float64Array(6)) -> out = [received (filter), dropped (kernel), dropped (interface),
 *       captured (frames of the blocks handed over), dropped (queue full), running (1/0)]; returns libpcap's error or null
 *   stop(handle) -> stops the thread (pcap_breakloop) and waits for it; the last block is queued
 *   close(handle) -> frees libpcap's handle and the blocks
 *   version() -> libpcap's version string
 */
#include <node_api.h>
#include <pcap/pcap.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct block {
  struct block *next;
  size_t used;
  uint32_t packets;
  uint32_t first_sec, first_nsec, last_sec, last_nsec;
  unsigned char data[];
} block_t;

typedef struct {
  pcap_t *p;
  pthread_t thread;
  int started, joined, closed;
  volatile int stop_req, flush_req, running;
  pthread_mutex_t mu;
  size_t block_bytes, max_queued, queued;
  block_t *cur;               /* being filled: the thread's own */
  block_t *head, *tail;       /* full, waiting for take() */
  block_t *free_list;
  int nfree;
  uint32_t linktype, snaplen;
  /* frames of the blocks queued, frames dropped (queue full): under mu, counted per block, not per frame */
  uint64_t captured, queue_drops;
  /* the thread's last pcap_stats (the socket's counters are read-and-clear: one reader only) */
  double recv, drop, ifdrop;
  uint64_t cur_since_ns;
  char err[PCAP_ERRBUF_SIZE + 64];
} cap_t;

static uint64_t mono_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void write_header(cap_t *c, block_t *b) {
  uint32_t h[6];
  h[0] = 0xa1b23c4d; /* nanosecond pcap, host byte order */
  h[1] = 2 | (4u << 16);
  h[2] = 0; h[3] = 0;
  h[4] = c->snaplen;
  h[5] = c->linktype;
  memcpy(b->data, h, 24);
  b->used = 24;
  b->packets = 0;
}

/* a block to fill: from the free list, else a new one (the queue bounds how many exist) */
static block_t *new_block(cap_t *c) {
  block_t *b = NULL;
  pthread_mutex_lock(&c->mu);
  if (c->free_list) { b = c->free_list; c->free_list = b->next; c->nfree--; }
  pthread_mutex_unlock(&c->mu);
  if (!b) b = malloc(sizeof(block_t) + c->block_bytes);
  if (!b) return NULL;
  b->next = NULL;
  write_header(c, b);
  return b;
}

/* hand the block being filled to the queue (or count its frames as dropped when the queue is full) */
static void hand_over(cap_t *c) {
  block_t *b = c->cur;
  if (!b || b->packets == 0) return;
  c->cur = NULL;
  pthread_mutex_lock(&c->mu);
  if (c->queued + b->used > c->max_queued) {
    c->queue_drops += b->packets;
    b->next = c->free_list; c->free_list = b; c->nfree++;
  } else {
    c->captured += b->packets;
    c->queued += b->used;
    if (c->tail) c->tail->next = b; else c->head = b;
    c->tail = b;
  }
  pthread_mutex_unlock(&c->mu);
}

static void on_frame(u_char *user, const struct pcap_pkthdr *h, const u_char *bytes) {
  cap_t *c = (cap_t *)user;
  uint32_t caplen = h->caplen;
  if (caplen > c->block_bytes - 24 - 16) caplen = (uint32_t)(c->block_bytes - 24 - 16);
  if (c->cur && c->cur->used + 16 + caplen > c->block_bytes) hand_over(c);
  if (!c->cur) {
    c->cur = new_block(c);
    if (!c->cur) {
      pthread_mutex_lock(&c->mu);
      c->queue_drops++;
      pthread_mutex_unlock(&c->mu);
      return;
    }
    c->cur_since_ns = mono_ns();
  }
  block_t *b = c->cur;
  uint32_t r[4];
  r[0] = (uint32_t)h->ts.tv_sec;
  r[1] = (uint32_t)h->ts.tv_usec; /* nanoseconds: the handle is opened with nanosecond precision */
  r[2] = caplen;
  r[3] = h->len;
  memcpy(b->data + b->used, r, 16);
  memcpy(b->data + b->used + 16, bytes, caplen);
  b->used += 16 + caplen;
  if (b->packets == 0) { b->first_sec = r[0]; b->first_nsec = r[1]; }
  b->last_sec = r[0]; b->last_nsec = r[1];
  b->packets++;
}

static void read_stats(cap_t *c) {
  struct pcap_stat s;
  if (pcap_stats(c->p, &s) == 0) {
    pthread_mutex_lock(&c->mu);
    c->recv = s.ps_recv; c->drop = s.ps_drop; c->ifdrop = s.ps_ifdrop;
    pthread_mutex_unlock(&c->mu);
  }
}

static void *run(void *arg) {
  cap_t *c = (cap_t *)arg;
  uint64_t last_stats = 0;
  while (!c->stop_req) {
    int n = pcap_dispatch(c->p, -1, on_frame, (u_char *)c);
    if (n == PCAP_ERROR_BREAK) break;
    if (n == PCAP_ERROR) {
      pthread_mutex_lock(&c->mu);
      snprintf(c->err, sizeof c->err, "%s", pcap_geterr(c->p));
      pthread_mutex_unlock(&c->mu);
      break;
    }
    uint64_t now = mono_ns();
    /* a block is handed over when full, when asked (flush) and at the latest 250 ms after its first frame */
    int asked = c->flush_req;
    if (c->cur && (asked || now - c->cur_since_ns > 250000000ull)) hand_over(c);
    c->flush_req = 0;
    if (asked || now - last_stats > 500000000ull) { read_stats(c); last_stats = now; }
  }
  hand_over(c);
  read_stats(c);
  c->running = 0;
  return NULL;
}

/* ---- N-API glue ---- */

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, #call " failed"); return NULL; } } while (0)

static void finalize(napi_env env, void *data, void *hint);

static void stop_thread(cap_t *c) {
  if (c->started && !c->joined) {
    c->stop_req = 1;
    pcap_breakloop(c->p);
    pthread_join(c->thread, NULL);
    c->joined = 1;
  }
}

static void free_all(cap_t *c) {
  stop_thread(c);
  if (c->closed) return;
  c->closed = 1;
  block_t *b, *n;
  for (b = c->head; b; b = n) { n = b->next; free(b); }
  for (b = c->free_list; b; b = n) { n = b->next; free(b); }
  free(c->cur);
  c->head = c->tail = c->free_list = c->cur = NULL;
  if (c->p) { pcap_close(c->p); c->p = NULL; }
}

static void finalize(napi_env env, void *data, void *hint) {
  cap_t *c = (cap_t *)data;
  free_all(c);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

static cap_t *get(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) { napi_throw_type_error(env, NULL, "not a capture handle"); return NULL; }
  return (cap_t *)p;
}

/* the call's first n arguments, the first being a capture handle: the handle, or NULL with an exception pending */
static cap_t *args(napi_env env, napi_callback_info info, size_t n, napi_value *argv) {
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) { napi_throw_error(env, NULL, "napi_get_cb_info failed"); return NULL; }
  if (argc < n) { napi_throw_type_error(env, NULL, "missing arguments"); return NULL; }
  return get(env, argv[0]);
}

static napi_value js_open(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 6) { napi_throw_type_error(env, NULL, "open(iface, snaplen, bufferBytes, filter, blockBytes, maxQueuedBytes)"); return NULL; }
  char iface[256], filter[4096];
  size_t len;
  int32_t snaplen, buffer, block, maxq;
  CHECK(napi_get_value_string_utf8(env, argv[0], iface, sizeof iface, &len));
  CHECK(napi_get_value_int32(env, argv[1], &snaplen));
  CHECK(napi_get_value_int32(env, argv[2], &buffer));
  napi_valuetype t;
  CHECK(napi_typeof(env, argv[3], &t));
  filter[0] = 0;
  if (t == napi_string) CHECK(napi_get_value_string_utf8(env, argv[3], filter, sizeof filter, &len));
  CHECK(napi_get_value_int32(env, argv[4], &block));
  CHECK(napi_get_value_int32(env, argv[5], &maxq));
  if (snaplen < 16 || block < snaplen + 64 || maxq < block) { napi_throw_range_error(env, NULL, "bad snaplen, block or queue size"); return NULL; }

  char eb[PCAP_ERRBUF_SIZE] = "";
  char msg[PCAP_ERRBUF_SIZE + 300];
  pcap_t *p = pcap_create(iface, eb);
  if (!p) { napi_throw_error(env, NULL, eb); return NULL; }
  pcap_set_snaplen(p, snaplen);
  pcap_set_promisc(p, 1); /* as tcpdump does without -p */
  pcap_set_timeout(p, 100); /* a ring block is handed over at the latest after 100 ms */
  pcap_set_buffer_size(p, buffer);
  pcap_set_tstamp_precision(p, PCAP_TSTAMP_PRECISION_NANO);
  int rc = pcap_activate(p);
  if (rc < 0) {
    snprintf(msg, sizeof msg, "%s: %s", iface, rc == PCAP_ERROR ? pcap_geterr(p) : pcap_statustostr(rc));
    pcap_close(p);
    napi_throw_error(env, NULL, msg);
    return NULL;
  }
  if (pcap_get_tstamp_precision(p) != PCAP_TSTAMP_PRECISION_NANO) {
    pcap_close(p);
    napi_throw_error(env, NULL, "libpcap gives no nanosecond timestamps");
    return NULL;
  }
  if (strcmp(iface, "any") == 0) pcap_set_datalink(p, 276); /* LINUX_SLL2 (interface index), as tcpdump; SLL otherwise */
  if (filter[0]) {
    struct bpf_program prog;
    if (pcap_compile(p, &prog, filter, 1, PCAP_NETMASK_UNKNOWN) < 0 || pcap_setfilter(p, &prog) < 0) {
      snprintf(msg, sizeof msg, "filter \"%s\": %s", filter, pcap_geterr(p));
      pcap_close(p);
      napi_throw_error(env, NULL, msg);
      return NULL;
    }
    pcap_freecode(&prog);
  }
  cap_t *c = calloc(1, sizeof(cap_t));
  if (!c) { pcap_close(p); napi_throw_error(env, NULL, "out of memory"); return NULL; }
  c->p = p;
  c->snaplen = (uint32_t)snaplen;
  int dlt = pcap_datalink(p);
  /* DLT_RAW is 12 (14 on some BSDs); its LINKTYPE_ is 101. The others rolltrace reads are equal. */
  c->linktype = (dlt == 12 || dlt == 14) ? 101 : (uint32_t)dlt;
  c->block_bytes = (size_t)block;
  c->max_queued = (size_t)maxq;
  pthread_mutex_init(&c->mu, NULL);
  c->running = 1;
  if (pthread_create(&c->thread, NULL, run, c) != 0) {
    pthread_mutex_destroy(&c->mu);
    pcap_close(p);
    free(c);
    napi_throw_error(env, NULL, "cannot start the capture thread");
    return NULL;
  }
  c->started = 1;
  napi_value out;
  CHECK(napi_create_external(env, c, finalize, NULL, &out));
  return out;
}

static napi_value js_linktype(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  cap_t *c = args(env, info, 1, argv);
  if (!c) return NULL;
  CHECK(napi_create_uint32(env, c->linktype, &out));
  return out;
}

static int f64(napi_env env, napi_value v, double **d) {
  napi_typedarray_type tt;
  size_t n;
  void *data;
  if (napi_get_typedarray_info(env, v, &tt, &n, &data, NULL, NULL) != napi_ok || tt != napi_float64_array || n < 6) {
    napi_throw_type_error(env, NULL, "expected a Float64Array(6)");
    return 0;
  }
  *d = (double *)data;
  return 1;
}

static napi_value js_take(napi_env env, napi_callback_info info) {
  napi_value argv[3], out;
  cap_t *c = args(env, info, 3, argv);
  if (!c) return NULL;
  void *dst;
  size_t dlen;
  if (napi_get_buffer_info(env, argv[1], &dst, &dlen) != napi_ok) { napi_throw_type_error(env, NULL, "expected a Buffer"); return NULL; }
  double *o;
  if (!f64(env, argv[2], &o)) return NULL;
  block_t *b = NULL;
  pthread_mutex_lock(&c->mu);
  if (c->head && c->head->used <= dlen) {
    b = c->head;
    c->head = b->next;
    if (!c->head) c->tail = NULL;
    c->queued -= b->used;
  }
  pthread_mutex_unlock(&c->mu);
  if (!b) {
    if (c->head) { napi_throw_range_error(env, NULL, "buffer smaller than a block"); return NULL; }
    CHECK(napi_create_uint32(env, 0, &out));
    return out;
  }
  memcpy(dst, b->data, b->used);
  o[0] = (double)b->used; o[1] = b->packets;
  o[2] = b->first_sec; o[3] = b->first_nsec; o[4] = b->last_sec; o[5] = b->last_nsec;
  size_t used = b->used;
  pthread_mutex_lock(&c->mu);
  /* keep a few blocks for reuse (a fresh block costs its page faults), free the rest */
  if (c->nfree < 8) { b->next = c->free_list; c->free_list = b; c->nfree++; b = NULL; }
  pthread_mutex_unlock(&c->mu);
  free(b);
  CHECK(napi_create_uint32(env, (uint32_t)used, &out));
  return out;
}

static napi_value js_flush(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  cap_t *c = args(env, info, 1, argv);
  if (!c) return NULL;
  c->flush_req = 1;
  return NULL;
}

static napi_value js_stats(napi_env env, napi_callback_info info) {
  napi_value argv[2], out;
  cap_t *c = args(env, info, 2, argv);
  if (!c) return NULL;
  double *o;
  if (!f64(env, argv[1], &o)) return NULL;
  char err[sizeof c->err];
  pthread_mutex_lock(&c->mu);
  o[0] = c->recv; o[1] = c->drop; o[2] = c->ifdrop;
  o[3] = (double)c->captured; o[4] = (double)c->queue_drops; o[5] = c->running ? 1 : 0;
  memcpy(err, c->err, sizeof err);
  pthread_mutex_unlock(&c->mu);
  if (!err[0]) { CHECK(napi_get_null(env, &out)); return out; }
  CHECK(napi_create_string_utf8(env, err, NAPI_AUTO_LENGTH, &out));
  return out;
}

static napi_value js_stop(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  cap_t *c = args(env, info, 1, argv);
  if (!c) return NULL;
  if (!c->closed) stop_thread(c);
  return NULL;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  cap_t *c = args(env, info, 1, argv);
  if (!c) return NULL;
  free_all(c);
  return NULL;
}

static napi_value js_version(napi_env env, napi_callback_info info) {
  napi_value out;
  CHECK(napi_create_string_utf8(env, pcap_lib_version(), NAPI_AUTO_LENGTH, &out));
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor d[] = {
    { "open", NULL, js_open, NULL, NULL, NULL, napi_default, NULL },
    { "linktype", NULL, js_linktype, NULL, NULL, NULL, napi_default, NULL },
    { "take", NULL, js_take, NULL, NULL, NULL, napi_default, NULL },
    { "flush", NULL, js_flush, NULL, NULL, NULL, napi_default, NULL },
    { "stats", NULL, js_stats, NULL, NULL, NULL, napi_default, NULL },
    { "stop", NULL, js_stop, NULL, NULL, NULL, napi_default, NULL },
    { "close", NULL, js_close, NULL, NULL, NULL, napi_default, NULL },
    { "version", NULL, js_version, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, sizeof d / sizeof d[0], d);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
