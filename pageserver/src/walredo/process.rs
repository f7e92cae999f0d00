//! One `strata_walredo` process and its pipelined request stream.
//!
//! Requests go through a channel to a writer task, which registers each one in the
//! in-flight queue and then writes it to the child's stdin; a reader task matches replies
//! to the queue in order. Because only the writer task touches stdin, a caller that gives
//! up (timeout, cancellation) never leaves half a request in the pipe: the stream stays
//! framed. A mismatched or malformed reply, EOF, or a write error kills the process.
//!
//! Replies come back in request order, so when the process dies the request at the front
//! of the in-flight queue is the one PostgreSQL was working on: it alone gets the death
//! ([`WalRedoError::ProcessDied`] or [`WalRedoError::Timeout`], with the tail of stderr,
//! where a PANIC shows up); everything queued behind it gets [`WalRedoError::Aborted`],
//! which the manager retries on a fresh process. One poisoned request therefore fails
//! alone instead of taking its neighbours, and a retry never kills a second process.
//!
//! A watchdog kills a process that has requests in flight and has answered none of them
//! for `request_timeout` (counted from its last reply or the front request's submission,
//! whichever is later): a busy, healthy process with a long queue is never killed, because
//! time spent waiting behind other requests is not the process being stuck.
//!
//! Invariant: the child is always killed and reaped — on any failure, on [`kill`], and
//! on drop (SIGKILL; tokio reaps it).
//!
//! [`kill`]: RedoProcess::kill

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};

use super::protocol::{self, REPLY_HEADER_LEN, REPLY_OK};
use super::scratch::ScratchRoot;
use super::{WalRedoConfig, WalRedoError};

/// A successful reply: the page, or nothing for a ping.
pub type ReplyResult = Result<Bytes, WalRedoError>;

struct Pending {
    id: u64,
    bytes: Bytes,
    reply: oneshot::Sender<ReplyResult>,
}

/// A request written (or being written) to the process, awaiting its reply.
struct Waiter {
    id: u64,
    /// When it entered the in-flight queue: the watchdog's clock starts here for the
    /// front request.
    queued_at: Instant,
    reply: oneshot::Sender<ReplyResult>,
}

/// The in-flight queue and the time of the last reply, under one lock so the watchdog
/// sees them consistently.
#[derive(Default)]
struct InFlightState {
    waiters: VecDeque<Waiter>,
    last_reply: Option<Instant>,
}

type InFlight = Arc<Mutex<InFlightState>>;

type SharedChild = Arc<Mutex<Option<Child>>>;

/// How much of a dead process's stderr we keep for error messages.
const STDERR_TAIL_LINES: usize = 20;

/// A running redo process.
pub struct RedoProcess {
    /// Sequence number within the manager (names the scratch dir, appears in logs).
    pub seq: u64,
    pid: u32,
    datadir: PathBuf,
    requests: mpsc::UnboundedSender<Pending>,
    child: SharedChild,
    dead: Arc<AtomicBool>,
    next_id: AtomicU64,
    /// Requests answered successfully or with an error reply.
    pub served: AtomicU64,
    /// Set after an error reply: the process should be replaced.
    pub had_error: AtomicBool,
}

impl std::fmt::Debug for RedoProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedoProcess")
            .field("seq", &self.seq)
            .field("pid", &self.pid)
            .finish()
    }
}

impl RedoProcess {
    /// Starts a process on a fresh scratch data directory and waits until it answers a ping.
    pub async fn launch(
        conf: &WalRedoConfig,
        scratch: &ScratchRoot,
        seq: u64,
    ) -> Result<Self, WalRedoError> {
        let datadir = scratch.make_datadir(seq)?;
        let mut cmd = Command::new(conf.pg_bin_dir.join("postgres"));
        cmd.arg("--single")
            .arg("-D")
            .arg(&datadir)
            .arg("-c")
            .arg(format!(
                "shared_preload_libraries={}",
                scratch.module_path().display()
            ))
            .args(["-c", "strata_walredo.serve=on"])
            .arg("-c")
            .arg(format!("shared_buffers={}", conf.shared_buffers))
            .args([
                "-c",
                "fsync=off",
                "-c",
                "max_connections=2",
                "-c",
                "max_wal_senders=0",
            ])
            .args([
                "-c",
                "max_worker_processes=0",
                "-c",
                "max_prepared_transactions=0",
            ])
            .args(["-c", "huge_pages=off", "-c", "log_min_messages=warning"])
            .arg("template1")
            .env_clear()
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(r) = scratch.run_as() {
            // With a uid set, std also drops root's supplementary groups.
            cmd.uid(r.uid).gid(r.gid);
        }
        let mut child = cmd.spawn().map_err(|e| {
            WalRedoError::Setup(format!(
                "cannot start {}: {e}",
                conf.pg_bin_dir.join("postgres").display()
            ))
        })?;
        let pid = child.id().unwrap_or(0);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(WalRedoError::Setup("child pipes missing".into()));
        };

        let dead = Arc::new(AtomicBool::new(false));
        let timed_out = Arc::new(AtomicBool::new(false));
        let inflight: InFlight = Arc::default();
        let stderr_tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let child: SharedChild = Arc::new(Mutex::new(Some(child)));
        let (stderr_done_tx, stderr_done) = oneshot::channel();

        tokio::spawn(log_stderr(seq, stderr, stderr_tail.clone(), stderr_done_tx));
        tokio::spawn(write_requests(rx, stdin, inflight.clone(), dead.clone()));
        tokio::spawn(watchdog(
            seq,
            conf.request_timeout,
            inflight.clone(),
            dead.clone(),
            timed_out.clone(),
            Arc::downgrade(&child),
        ));
        tokio::spawn(read_replies(
            seq,
            stdout,
            inflight,
            Death {
                dead: dead.clone(),
                timed_out,
                timeout: conf.request_timeout,
                stderr_tail,
                stderr_done,
                child: Arc::downgrade(&child),
            },
        ));

        let process = RedoProcess {
            seq,
            pid,
            datadir,
            requests: tx,
            child,
            dead,
            next_id: AtomicU64::new(1),
            served: AtomicU64::new(0),
            had_error: AtomicBool::new(false),
        };
        // Startup takes ~20 ms; a process that cannot answer a ping in 30 s is broken.
        let ping = process.request(|id| Ok(protocol::encode_ping(id)));
        match tokio::time::timeout(Duration::from_secs(30), ping).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(WalRedoError::Setup(format!(
                    "redo process did not start: {e}"
                )));
            }
            Err(_) => {
                process.kill();
                return Err(WalRedoError::Setup(
                    "redo process did not answer a ping in 30 s".into(),
                ));
            }
        }
        tracing::info!(seq, pid, "started walredo process");
        Ok(process)
    }

    /// Whether the process has died or been killed.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// The operating-system process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The process's scratch data directory.
    pub fn datadir(&self) -> &std::path::Path {
        &self.datadir
    }

    /// Sends one request (built by `encode` from a fresh request id) and waits for its
    /// reply. No deadline here: the process's watchdog kills it when it stops answering,
    /// and the caller may drop this future at any time (the stream stays framed).
    pub async fn request(&self, encode: impl FnOnce(u64) -> Result<Bytes, String>) -> ReplyResult {
        if self.is_dead() {
            return Err(WalRedoError::Aborted("process already dead".into()));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = encode(id).map_err(WalRedoError::InvalidRequest)?;
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Pending { id, bytes, reply })
            .map_err(|_| WalRedoError::Aborted("request channel closed".into()))?;
        let result = match rx.await {
            Err(_) => Err(WalRedoError::Aborted("reply channel dropped".into())),
            Ok(r) => r,
        };
        match &result {
            Ok(_) => {
                self.served.fetch_add(1, Ordering::Relaxed);
            }
            Err(WalRedoError::Redo(_)) => {
                self.served.fetch_add(1, Ordering::Relaxed);
                self.had_error.store(true, Ordering::SeqCst);
            }
            Err(_) => {}
        }
        result
    }

    /// Kills the process now (SIGKILL); in-flight requests fail. Reaping happens in the
    /// background (tokio reaps killed children).
    pub fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        kill_child(&self.child);
    }

    /// Kills the process and waits until it is reaped.
    pub async fn kill_and_wait(&self) {
        self.kill();
        let child = self.child.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut c) = child {
            match c.wait().await {
                Ok(status) => tracing::debug!(seq = self.seq, "walredo process exited: {status}"),
                Err(e) => tracing::warn!(seq = self.seq, "waiting for walredo process: {e}"),
            }
        }
    }
}

impl Drop for RedoProcess {
    fn drop(&mut self) {
        // The child first: it may still be writing into the scratch directory.
        self.kill();
        let _ = std::fs::remove_dir_all(&self.datadir);
    }
}

fn kill_child(child: &Mutex<Option<Child>>) {
    let mut child = child.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = child.as_mut() {
        let _ = c.start_kill();
    }
}

/// Kills the process when it has requests in flight and has answered none of them for
/// `timeout`. Ends when the process dies or is dropped.
async fn watchdog(
    seq: u64,
    timeout: Duration,
    inflight: InFlight,
    dead: Arc<AtomicBool>,
    timed_out: Arc<AtomicBool>,
    child: std::sync::Weak<Mutex<Option<Child>>>,
) {
    let tick = (timeout / 4).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(tick).await;
        if dead.load(Ordering::SeqCst) {
            return;
        }
        let Some(child) = child.upgrade() else { return };
        let stuck_for = {
            let st = inflight.lock().unwrap_or_else(|e| e.into_inner());
            st.waiters.front().map(|front| {
                let since = st
                    .last_reply
                    .map_or(front.queued_at, |r| r.max(front.queued_at));
                since.elapsed()
            })
        };
        if stuck_for.is_some_and(|d| d >= timeout) {
            tracing::warn!(
                seq,
                "walredo process answered nothing for {timeout:?} with requests in flight; \
                 killing it"
            );
            timed_out.store(true, Ordering::SeqCst);
            dead.store(true, Ordering::SeqCst);
            kill_child(&child);
            return;
        }
    }
}

async fn write_requests(
    mut rx: mpsc::UnboundedReceiver<Pending>,
    stdin: ChildStdin,
    inflight: InFlight,
    dead: Arc<AtomicBool>,
) {
    let mut stdin = BufWriter::with_capacity(256 * 1024, stdin);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        // Pipelining: take everything queued, then flush once.
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        for p in batch {
            // The check and the registration share the in-flight lock with the reader's
            // final drain: a request is either drained (and answered) or sees the death.
            let refused = {
                let mut st = inflight.lock().unwrap_or_else(|e| e.into_inner());
                if dead.load(Ordering::SeqCst) {
                    Some(p.reply)
                } else {
                    st.waiters.push_back(Waiter {
                        id: p.id,
                        queued_at: Instant::now(),
                        reply: p.reply,
                    });
                    None
                }
            };
            if let Some(reply) = refused {
                // Never sent: not this request's doing.
                let _ = reply.send(Err(WalRedoError::Aborted(
                    "the process died before this request was sent".into(),
                )));
                continue;
            }
            if let Err(e) = stdin.write_all(&p.bytes).await {
                tracing::warn!("writing to walredo process: {e}");
                dead.store(true, Ordering::SeqCst);
            }
        }
        if let Err(e) = stdin.flush().await {
            tracing::warn!("writing to walredo process: {e}");
            dead.store(true, Ordering::SeqCst);
        }
    }
    // Channel closed (process retired): closing stdin makes the process exit.
}

/// What the reply reader needs to report a death.
struct Death {
    dead: Arc<AtomicBool>,
    /// Set by the watchdog when it killed the process.
    timed_out: Arc<AtomicBool>,
    timeout: Duration,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// Fires when stderr reaches EOF: the dying words (a PANIC message) are all in.
    stderr_done: oneshot::Receiver<()>,
    child: std::sync::Weak<Mutex<Option<Child>>>,
}

async fn read_replies(seq: u64, stdout: ChildStdout, inflight: InFlight, death: Death) {
    let mut stdout = BufReader::with_capacity(256 * 1024, stdout);
    let reason = loop {
        let mut header = [0u8; REPLY_HEADER_LEN];
        if let Err(e) = stdout.read_exact(&mut header).await {
            break format!("reading reply: {e}");
        }
        let h = match protocol::decode_reply_header(&header) {
            Ok(h) => h,
            Err(e) => break e,
        };
        let mut payload = vec![0u8; h.len as usize];
        if let Err(e) = stdout.read_exact(&mut payload).await {
            break format!("reading reply payload: {e}");
        }
        let waiter = {
            let mut st = inflight.lock().unwrap_or_else(|e| e.into_inner());
            st.last_reply = Some(Instant::now());
            st.waiters.pop_front()
        };
        let Some(waiter) = waiter else {
            break format!("unexpected reply to request {}", h.request_id);
        };
        if waiter.id != h.request_id {
            // Put it back: it is the front request, and gets the death below.
            let expected = waiter.id;
            inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .waiters
                .push_front(waiter);
            break format!(
                "reply to request {} while waiting for {expected}",
                h.request_id
            );
        }
        let result = if h.status == REPLY_OK {
            Ok(Bytes::from(payload))
        } else {
            Err(WalRedoError::Redo(
                String::from_utf8_lossy(&payload).into_owned(),
            ))
        };
        // The caller may have given up; that is fine.
        let _ = waiter.reply.send(result);
    };
    death.dead.store(true, Ordering::SeqCst);
    // Whatever ended the reply stream, the process must go (a malformed reply leaves it
    // running otherwise), and stderr reaches EOF only once it has.
    drop(stdout);
    if let Some(child) = death.child.upgrade() {
        kill_child(&child);
    }
    // Wait (bounded) for stderr's EOF, so a PANIC message is in the error.
    let _ = tokio::time::timeout(Duration::from_secs(2), death.stderr_done).await;
    let tail: Vec<String> = death
        .stderr_tail
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect();
    let detail = if tail.is_empty() {
        reason
    } else {
        format!("{reason}; stderr: {}", tail.join(" | "))
    };
    let pending: Vec<Waiter> = {
        let mut st = inflight.lock().unwrap_or_else(|e| e.into_inner());
        // Again under the lock: no request registers after this drain (see the writer).
        death.dead.store(true, Ordering::SeqCst);
        st.waiters.drain(..).collect()
    };
    if !pending.is_empty() {
        tracing::warn!(
            seq,
            "walredo process died with {} requests in flight: {detail}",
            pending.len()
        );
    }
    let mut pending = pending.into_iter();
    if let Some(front) = pending.next() {
        let e = if death.timed_out.load(Ordering::SeqCst) {
            WalRedoError::Timeout(death.timeout)
        } else {
            WalRedoError::ProcessDied(detail.clone())
        };
        let _ = front.reply.send(Err(e));
    }
    for w in pending {
        let _ = w.reply.send(Err(WalRedoError::Aborted(format!(
            "queued behind the request that ended the process: {detail}"
        ))));
    }
}

async fn log_stderr(
    seq: u64,
    stderr: tokio::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
    done: oneshot::Sender<()>,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.contains("PANIC:") || line.contains("FATAL:") || line.contains("TRAP:") {
            tracing::warn!(seq, "walredo: {line}");
        } else {
            tracing::debug!(seq, "walredo: {line}");
        }
        let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() == STDERR_TAIL_LINES {
            t.pop_front();
        }
        t.push_back(line);
    }
    let _ = done.send(());
}
