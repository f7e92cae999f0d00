/*-------------------------------------------------------------------------
 *
 * strata_walredo.c
 *	  Turns a stock PostgreSQL 15 `postgres --single` into a WAL-redo server.
 *
 * Loaded with shared_preload_libraries and switched on with
 * `-c strata_walredo.serve=on`, the module takes the process over from
 * shmem_startup_hook (shared memory exists, nothing else has started) and
 * never returns: it reads redo requests on stdin and writes one reply per
 * request on stdout, in request order, so a client may pipeline many.
 *
 * A request names one target block, optionally gives its base image, and
 * lists WAL records (raw XLogRecord bytes with their start and end LSNs). The
 * target is loaded into shared buffers; every other block a record touches
 * gets a "sentinel" page whose LSN is the maximum, so PostgreSQL's own redo
 * (rm_redo) sees it as already replayed and leaves it alone. After the last
 * record the target page is copied out and every touched relation's buffers
 * are dropped, so nothing is ever written back. The wire protocol is in
 * docs/walredo_protocol.md.
 *
 * Invariants:
 *  - stdout carries only replies: fd 1 is redirected to stderr at start and
 *    replies go to a private duplicate of the original stdout.
 *  - an ERROR during a request becomes an 'E' reply and the process keeps
 *    serving; a PANIC or FATAL ends the process (the client restarts it).
 *  - a record whose end LSN is not above the target page's LSN is an error
 *    (PostgreSQL would skip it silently; for Strata it means a broken history).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <errno.h>
#include <unistd.h>

#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xlogreader.h"
#include "access/xlogrecord.h"
#include "access/xlogutils.h"
#include "catalog/pg_control.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/bufpage.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/smgr.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Protocol constants: see docs/walredo_protocol.md. */
#define REQ_REDO 'R'
#define REQ_PING 'P'
#define REPLY_OK 'O'
#define REPLY_ERROR 'E'
#define REQ_HEADER_LEN 5		/* kind (1) + payload length (4) */
#define REPLY_HEADER_LEN 13		/* status (1) + request id (8) + length (4) */
#define MAX_REQUEST_LEN (512 * 1024 * 1024)
#define FLAG_HAS_IMAGE 0x01
#define MAX_TOUCHED_RELS 64
#define FLUSH_THRESHOLD (32 * 1024)	/* about four page replies */

static bool serve = false;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static XLogReaderState *reader;
static MemoryContext request_cxt;
static int	reply_fd = -1;

/* Input buffer over stdin. */
static char inbuf[128 * 1024];
static size_t in_pos = 0;
static size_t in_len = 0;

/* Output buffer: flushed before blocking on input, so pipelined replies batch. */
static char *outbuf;
static size_t out_len = 0;
static size_t out_cap = 0;

/* Relations whose (empty) VM fork file this process has created. */
static HTAB *vm_created = NULL;

/* Relations whose buffers the current request touched (dropped at its end). */
static RelFileNode touched_rels[MAX_TOUCHED_RELS];
static int	n_touched = 0;

static void strata_walredo_main(void);

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;

	DefineCustomBoolVariable("strata_walredo.serve",
							 "Serve WAL-redo requests on stdin/stdout instead of running a backend.",
							 "Only valid in single-user mode (postgres --single).",
							 &serve,
							 false,
							 PGC_POSTMASTER,
							 0,
							 NULL, NULL, NULL);
	MarkGUCPrefixReserved("strata_walredo");

	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = strata_walredo_main;
}

/* ---------- output ---------- */

static void
flush_output(void)
{
	size_t		done = 0;

	while (done < out_len)
	{
		ssize_t		n = write(reply_fd, outbuf + done, out_len - done);

		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			/* The client is gone: nothing left to serve. */
			ereport(FATAL,
					(errcode_for_file_access(),
					 errmsg("strata_walredo: cannot write reply: %m")));
		}
		done += n;
	}
	out_len = 0;
}

static void
append_output(const void *data, size_t len)
{
	if (out_len + len > out_cap)
	{
		size_t		new_cap = Max(out_cap * 2, out_len + len);

		outbuf = repalloc(outbuf, new_cap);
		out_cap = new_cap;
	}
	memcpy(outbuf + out_len, data, len);
	out_len += len;
}

static void
reply(char status, uint64 request_id, const char *payload, uint32 len)
{
	char		header[REPLY_HEADER_LEN];

	header[0] = status;
	memcpy(header + 1, &request_id, 8);
	memcpy(header + 9, &len, 4);
	append_output(header, REPLY_HEADER_LEN);
	if (len > 0)
		append_output(payload, len);
	/*
	 * Replies also go out when the client is waiting for them: once a few
	 * are pending, even if more requests are queued. Holding them all until
	 * the input drains would stall a client that keeps N requests in flight.
	 */
	if (out_len >= FLUSH_THRESHOLD)
		flush_output();
}

/* ---------- input ---------- */

/*
 * Reads exactly n bytes. Returns false on EOF before the first byte when
 * eof_ok; EOF anywhere else is fatal (the framing is lost).
 */
static bool
read_exact(char *dst, size_t n, bool eof_ok)
{
	size_t		got = 0;

	while (got < n)
	{
		if (in_pos == in_len)
		{
			ssize_t		r;

			/* About to block: let the client see every finished reply. */
			flush_output();
			r = read(STDIN_FILENO, inbuf, sizeof(inbuf));
			if (r < 0)
			{
				if (errno == EINTR)
					continue;
				ereport(FATAL,
						(errcode_for_file_access(),
						 errmsg("strata_walredo: cannot read request: %m")));
			}
			if (r == 0)
			{
				if (got == 0 && eof_ok)
					return false;
				ereport(FATAL,
						(errmsg("strata_walredo: unexpected end of input inside a request")));
			}
			in_pos = 0;
			in_len = r;
		}
		{
			size_t		take = Min(n - got, in_len - in_pos);

			memcpy(dst + got, inbuf + in_pos, take);
			in_pos += take;
			got += take;
		}
	}
	return true;
}

/* A cursor over one request's payload; overruns are ERRORs, not crashes. */
typedef struct Cursor
{
	const char *data;
	uint32		len;
	uint32		pos;
} Cursor;

static const char *
take(Cursor *c, uint32 n, const char *what)
{
	const char *p;

	if (n > c->len - c->pos)
		ereport(ERROR,
				(errmsg("malformed request: %s needs %u bytes at offset %u, only %u left",
						what, n, c->pos, c->len - c->pos)));
	p = c->data + c->pos;
	c->pos += n;
	return p;
}

static uint32
take_u32(Cursor *c, const char *what)
{
	uint32		v;

	memcpy(&v, take(c, 4, what), 4);
	return v;
}

static uint64
take_u64(Cursor *c, const char *what)
{
	uint64		v;

	memcpy(&v, take(c, 8, what), 8);
	return v;
}

/* ---------- buffers ---------- */

static void
remember_rel(RelFileNode rnode)
{
	for (int i = 0; i < n_touched; i++)
		if (RelFileNodeEquals(touched_rels[i], rnode))
			return;
	if (n_touched >= MAX_TOUCHED_RELS)
		ereport(ERROR, (errmsg("request touches more than %d relations", MAX_TOUCHED_RELS)));
	touched_rels[n_touched++] = rnode;
}

/*
 * Makes the storage manager believe every fork of the relation is as large as
 * it can be: during recovery smgrnblocks() trusts this cache, so redo never
 * extends files, and reads of blocks we did not load find zeros.
 */
static void
open_rel(RelFileNode rnode)
{
	SMgrRelation reln = smgropen(rnode, InvalidBackendId);

	for (int fork = 0; fork <= MAX_FORKNUM; fork++)
		reln->smgr_cached_nblocks[fork] = MaxBlockNumber;

	/*
	 * Heap redo clears visibility-map bits as a side effect, reading the VM
	 * fork through the buffer manager; an empty file reads as zeros during
	 * recovery, a missing one is an error. (The FSM fork needs nothing:
	 * redo reaches it through XLogReadBufferExtended, which creates it.)
	 */
	{
		bool		found;

		(void) hash_search(vm_created, &rnode, HASH_ENTER, &found);
		if (!found)
			smgrcreate(reln, VISIBILITYMAP_FORKNUM, true);
	}
	remember_rel(rnode);
}

/*
 * Loads a block into shared buffers: the given image, zeros (image NULL), or
 * a sentinel (an initialized empty page with the maximum LSN), dirty, and
 * releases it: redo may need a cleanup lock, which requires it to be the only
 * pinner. (The pool is far larger than what one request touches, and every
 * request drops its buffers, so nothing is evicted in practice; if a buffer
 * ever were, it would be written to the scratch file and read back intact.)
 * Returns the buffer number as a hint for ReadRecentBuffer.
 */
static Buffer
load_block(RelFileNode rnode, ForkNumber fork, BlockNumber blkno,
		   const char *image, bool sentinel)
{
	Buffer		buf;
	Page		page;

	open_rel(rnode);
	buf = ReadBufferWithoutRelcache(rnode, fork, blkno, RBM_ZERO_AND_LOCK, NULL, true);
	page = BufferGetPage(buf);
	if (sentinel)
	{
		PageInit(page, BLCKSZ, 0);
		PageSetLSN(page, PG_UINT64_MAX);
	}
	else if (image)
		memcpy(page, image, BLCKSZ);
	else
		MemSet(page, 0, BLCKSZ);
	MarkBufferDirty(buf);
	UnlockReleaseBuffer(buf);
	return buf;
}

/* Drops every buffer of the touched relations, so nothing is written back. */
static void
drop_touched(void)
{
	SMgrRelation rels[MAX_TOUCHED_RELS];

	if (n_touched == 0)
		return;
	for (int i = 0; i < n_touched; i++)
		rels[i] = smgropen(touched_rels[i], InvalidBackendId);
	DropRelFileNodesAllBuffers(rels, n_touched);
	for (int i = 0; i < n_touched; i++)
		smgrclose(rels[i]);
	n_touched = 0;
}

/* ---------- redo ---------- */

typedef struct Target
{
	RelFileNode rnode;
	ForkNumber	fork;
	BlockNumber blkno;
	Buffer		buf;
} Target;

/* The target page, pinned and share-locked by the caller's ReleaseBuffer. */
static Buffer
read_target(const Target *t)
{
	return ReadBufferWithoutRelcache(t->rnode, t->fork, t->blkno, RBM_NORMAL, NULL, true);
}

/* The target page's LSN, or InvalidXLogRecPtr for a new (all-zero) page. */
static XLogRecPtr
target_page_lsn(const Target *t)
{
	Buffer		buf = read_target(t);
	Page		page = BufferGetPage(buf);
	XLogRecPtr	lsn = PageIsNew(page) ? InvalidXLogRecPtr : PageGetLSN(page);

	ReleaseBuffer(buf);
	return lsn;
}

static bool
is_target(const Target *t, const DecodedBkpBlock *b)
{
	return RelFileNodeEquals(t->rnode, b->rnode) && t->fork == b->forknum && t->blkno == b->blkno;
}

static void
apply_record(const Target *t, const char *data, uint32 len,
			 XLogRecPtr start, XLogRecPtr end, bool first, bool has_base)
{
	XLogRecord *hdr = (XLogRecord *) data;
	DecodedXLogRecord *decoded;
	char	   *errormsg = NULL;
	bool		touches_target = false;
	RmgrData	rmgr;
	XLogRecPtr	page_lsn;

	if (len < SizeOfXLogRecord || hdr->xl_tot_len != len)
		ereport(ERROR,
				(errmsg("record at %X/%X: %u bytes given but xl_tot_len is %u",
						LSN_FORMAT_ARGS(start), len,
						len >= SizeOfXLogRecord ? hdr->xl_tot_len : 0)));
	if (end <= start)
		ereport(ERROR,
				(errmsg("record at %X/%X: end LSN %X/%X is not after its start",
						LSN_FORMAT_ARGS(start), LSN_FORMAT_ARGS(end))));
	rmgr = GetRmgr(hdr->xl_rmid);	/* ERRORs on an unknown rmgr */
	if (hdr->xl_rmid == RM_XLOG_ID)
	{
		uint8		info = hdr->xl_info & ~XLR_INFO_MASK;

		if (info != XLOG_FPI && info != XLOG_FPI_FOR_HINT)
			ereport(ERROR,
					(errmsg("record at %X/%X: only FPI records of the XLOG rmgr can be redone here (info 0x%02X)",
							LSN_FORMAT_ARGS(start), info)));
	}

	decoded = palloc(DecodeXLogRecordRequiredSpace(len));
	if (!DecodeXLogRecord(reader, decoded, hdr, start, &errormsg))
		ereport(ERROR,
				(errmsg("cannot decode record at %X/%X: %s",
						LSN_FORMAT_ARGS(start), errormsg ? errormsg : "unknown error")));
	decoded->next_lsn = end;

	for (int id = 0; id <= decoded->max_block_id; id++)
	{
		DecodedBkpBlock *b = &decoded->blocks[id];

		if (!b->in_use)
			continue;
		if (is_target(t, b))
		{
			touches_target = true;
			b->prefetch_buffer = t->buf;
			if (first && !has_base && !(b->flags & BKPBLOCK_WILL_INIT) && !b->apply_image)
				ereport(ERROR,
						(errmsg("record at %X/%X: history starts without a base image, a full-page image or an initializing record",
								LSN_FORMAT_ARGS(start))));
		}
		else
		{
			b->prefetch_buffer = load_block(b->rnode, b->forknum, b->blkno, NULL, true);
		}
	}
	if (!touches_target)
		ereport(ERROR,
				(errmsg("record at %X/%X does not reference the target block",
						LSN_FORMAT_ARGS(start))));

	page_lsn = target_page_lsn(t);
	if (page_lsn != InvalidXLogRecPtr && page_lsn >= end)
		ereport(ERROR,
				(errmsg("record at %X/%X (end %X/%X) is not newer than the page LSN %X/%X",
						LSN_FORMAT_ARGS(start), LSN_FORMAT_ARGS(end),
						LSN_FORMAT_ARGS(page_lsn))));

	reader->ReadRecPtr = start;
	reader->EndRecPtr = end;
	reader->record = decoded;
	rmgr.rm_redo(reader);
	reader->record = NULL;

	pfree(decoded);
}

static void
process_redo(Cursor *c, char *result)
{
	Target		t;
	uint8		flags;
	const char *image = NULL;
	uint32		nrecords;
	uint8		fork;

	t.rnode.spcNode = take_u32(c, "spcOid");
	t.rnode.dbNode = take_u32(c, "dbOid");
	t.rnode.relNode = take_u32(c, "relNumber");
	fork = *(const uint8 *) take(c, 1, "forkNum");
	t.blkno = take_u32(c, "blockNum");
	if (fork > MAX_FORKNUM)
		ereport(ERROR, (errmsg("malformed request: fork number %u", fork)));
	t.fork = (ForkNumber) fork;
	if (t.blkno == InvalidBlockNumber)
		ereport(ERROR, (errmsg("malformed request: invalid block number")));
	flags = *(const uint8 *) take(c, 1, "flags");
	if (flags & FLAG_HAS_IMAGE)
		image = take(c, BLCKSZ, "base image");
	nrecords = take_u32(c, "record count");

	t.buf = load_block(t.rnode, t.fork, t.blkno, image, false);

	for (uint32 i = 0; i < nrecords; i++)
	{
		XLogRecPtr	start = take_u64(c, "record start LSN");
		XLogRecPtr	end = take_u64(c, "record end LSN");
		uint32		len = take_u32(c, "record length");
		const char *rec = take(c, len, "record");
		char	   *aligned = palloc(len);

		/* DecodeXLogRecord reads the header in place: give it aligned memory. */
		memcpy(aligned, rec, len);
		apply_record(&t, aligned, len, start, end, i == 0, image != NULL);
		pfree(aligned);
	}
	if (c->pos != c->len)
		ereport(ERROR,
				(errmsg("malformed request: %u trailing bytes", c->len - c->pos)));

	{
		Buffer		buf = read_target(&t);

		LockBuffer(buf, BUFFER_LOCK_SHARE);
		memcpy(result, BufferGetPage(buf), BLCKSZ);
		UnlockReleaseBuffer(buf);
	}
	drop_touched();
}

/* Undo whatever an ERROR left behind, as a background process does. */
static void
cleanup_after_error(void)
{
	LWLockReleaseAll();
	ConditionVariableCancelSleep();
	AbortBufferIO();
	UnlockBuffers();
	ReleaseAuxProcessResources(false);
	reader->record = NULL;
	drop_touched();
}

static emit_log_hook_type prev_emit_log_hook = NULL;

/*
 * Before a FATAL or PANIC ends the process, deliver the replies already
 * finished: the client fails only the request at the front of its queue (the
 * one that killed us) and retries the rest, which is right only if every
 * earlier reply reached it. Best effort and without ereport: we are inside
 * error reporting.
 */
static void
flush_before_dying(ErrorData *edata)
{
	if (edata->elevel >= FATAL && reply_fd >= 0)
	{
		size_t		done = 0;

		while (done < out_len)
		{
			ssize_t		n = write(reply_fd, outbuf + done, out_len - done);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			done += n;
		}
		out_len = 0;
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

static void
serve_forever(void)
{
	char	   *page_out = MemoryContextAlloc(TopMemoryContext, BLCKSZ);

	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = flush_before_dying;

	for (;;)
	{
		char		header[REQ_HEADER_LEN];
		char		kind;
		uint32		len;
		char	   *payload;
		uint64		request_id = 0;
		char		errbuf[1024];
		bool		failed = false;

		MemoryContextSwitchTo(request_cxt);
		if (!read_exact(header, REQ_HEADER_LEN, true))
		{
			flush_output();
			proc_exit(0);		/* stdin closed: the client is done with us */
		}
		kind = header[0];
		memcpy(&len, header + 1, 4);
		if (len > MAX_REQUEST_LEN)
			ereport(FATAL,
					(errmsg("strata_walredo: request of %u bytes exceeds the %u-byte limit",
							len, MAX_REQUEST_LEN)));
		payload = palloc(Max(len, 1));
		read_exact(payload, len, false);
		if (len >= 8)
			memcpy(&request_id, payload, 8);

		PG_TRY();
		{
			Cursor		c = {payload, len, 0};

			(void) take_u64(&c, "request id");
			switch (kind)
			{
				case REQ_PING:
					break;
				case REQ_REDO:
					process_redo(&c, page_out);
					break;
				default:
					ereport(ERROR, (errmsg("unknown request kind 0x%02X", (unsigned char) kind)));
			}
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			HOLD_INTERRUPTS();
			MemoryContextSwitchTo(TopMemoryContext);
			edata = CopyErrorData();
			FlushErrorState();
			strlcpy(errbuf, edata->message ? edata->message : "unknown error", sizeof(errbuf));
			FreeErrorData(edata);
			cleanup_after_error();
			RESUME_INTERRUPTS();
			failed = true;
		}
		PG_END_TRY();

		if (failed)
			reply(REPLY_ERROR, request_id, errbuf, strlen(errbuf));
		else if (kind == REQ_PING)
			reply(REPLY_OK, request_id, NULL, 0);
		else
			reply(REPLY_OK, request_id, page_out, BLCKSZ);

		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(request_cxt);
	}
}

static void
strata_walredo_main(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	if (!serve)
		return;
	if (IsUnderPostmaster || IsPostmasterEnvironment)
		ereport(FATAL,
				(errmsg("strata_walredo.serve is only valid in single-user mode (postgres --single)")));

	/* Replies get a private copy of stdout; anything else printed goes to stderr. */
	reply_fd = dup(STDOUT_FILENO);
	if (reply_fd < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0)
		ereport(FATAL,
				(errcode_for_file_access(),
				 errmsg("strata_walredo: cannot set up stdout: %m")));

	/* What PostgresSingleUserMain and InitPostgres would do, minus the database. */
	InitProcess();
	BaseInit();
	SetProcessingMode(NormalProcessing);
	CreateAuxProcessResourceOwner();
	InRecovery = true;
	RmgrStartup();

	reader = XLogReaderAllocate(wal_segment_size, NULL,
								XL_ROUTINE(.page_read = NULL,
										   .segment_open = NULL,
										   .segment_close = NULL),
								NULL);
	if (reader == NULL)
		ereport(FATAL, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	request_cxt = AllocSetContextCreate(TopMemoryContext, "strata_walredo request",
										ALLOCSET_DEFAULT_SIZES);
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(RelFileNode);
		ctl.entrysize = sizeof(RelFileNode);
		vm_created = hash_create("strata_walredo vm files", 1024, &ctl,
								 HASH_ELEM | HASH_BLOBS);
	}
	out_cap = 256 * 1024 + REPLY_HEADER_LEN + BLCKSZ;
	outbuf = MemoryContextAlloc(TopMemoryContext, out_cap);

	ereport(LOG, (errmsg("strata_walredo: serving redo requests")));
	serve_forever();
}
