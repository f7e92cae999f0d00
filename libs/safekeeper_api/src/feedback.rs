//! The pageserver-feedback key-value block.
//!
//! A pageserver streaming WAL from a safekeeper reports how far it has got; the safekeeper
//! uses it to advance `remote_consistent_lsn` (and so the WAL-removal horizon) and relays
//! it to the proposer inside AppendResponse, where it drives back-pressure. The same block
//! travels in both places, wire-compatible with the reference system:
//!
//! ```text
//! nkeys u8, then nkeys × { key cstr, len i32 (big-endian), value: len bytes }
//! ```
//!
//! | key (sent)              | also accepted            | value                           |
//! |-------------------------|--------------------------|---------------------------------|
//! | `current_timeline_size` |                          | u64                             |
//! | `ps_writelsn`           | `last_received_lsn`      | u64 LSN                         |
//! | `ps_flushlsn`           | `disk_consistent_lsn`    | u64 LSN                         |
//! | `ps_applylsn`           | `remote_consistent_lsn`  | u64 LSN                         |
//! | `ps_replytime`          | `replytime`              | i64 µs since 2000-01-01         |
//! | `shard_number`          |                          | u32, sent only when > 0         |
//! | `corruption_detected`   |                          | u8, sent only when true         |
//!
//! We send the old `ps_*` spellings because every reader accepts them. Unknown keys are
//! skipped by their length, so either side can add keys. A known key with a value of the
//! wrong length is an error, not a guess.

use std::time::SystemTime;

use bytes::{BufMut, BytesMut};
use utils::Lsn;

use crate::wire::{ProtoError, Reader, put_cstr};
use utils::pg_time::{from_pg_timestamp, pg_epoch, to_pg_timestamp};

const MSG: &str = "PageserverFeedback";

/// What a pageserver reports about one timeline's ingest progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageserverFeedback {
    /// Logical size of the timeline, for the compute's size limit (0 if unknown).
    pub current_timeline_size: u64,
    /// Last WAL position received and ingested into memory.
    pub last_received_lsn: Lsn,
    /// Last position persisted to the pageserver's local disk.
    pub disk_consistent_lsn: Lsn,
    /// Last position persisted in object storage: WAL below it is no longer needed by
    /// this pageserver.
    pub remote_consistent_lsn: Lsn,
    /// When the pageserver sent this (microsecond precision on the wire).
    pub replytime: SystemTime,
    /// The shard this pageserver holds; 0 for unsharded tenants.
    pub shard_number: u32,
    /// Set when the pageserver found corrupt WAL; the compute should stop.
    pub corruption_detected: bool,
}

impl Default for PageserverFeedback {
    fn default() -> Self {
        Self::empty()
    }
}

impl PageserverFeedback {
    /// The block with every value absent: zero LSNs and sizes, the PostgreSQL epoch as the
    /// reply time. Keys missing from a received block keep these values.
    pub fn empty() -> Self {
        PageserverFeedback {
            current_timeline_size: 0,
            last_received_lsn: Lsn::INVALID,
            disk_consistent_lsn: Lsn::INVALID,
            remote_consistent_lsn: Lsn::INVALID,
            replytime: pg_epoch(),
            shard_number: 0,
            corruption_detected: false,
        }
    }

    /// Appends the block to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        let mut nkeys: u8 = 5;
        if self.shard_number > 0 {
            nkeys += 1;
        }
        if self.corruption_detected {
            nkeys += 1;
        }
        buf.put_u8(nkeys);
        let mut put = |key: &str, value: &[u8]| {
            // Keys are our own constants: never contain NUL.
            let _ = put_cstr(buf, key, MSG, "key");
            buf.put_i32(value.len() as i32);
            buf.put_slice(value);
        };
        put(
            "current_timeline_size",
            &self.current_timeline_size.to_be_bytes(),
        );
        put("ps_writelsn", &self.last_received_lsn.0.to_be_bytes());
        put("ps_flushlsn", &self.disk_consistent_lsn.0.to_be_bytes());
        put("ps_applylsn", &self.remote_consistent_lsn.0.to_be_bytes());
        put(
            "ps_replytime",
            &to_pg_timestamp(self.replytime).to_be_bytes(),
        );
        if self.shard_number > 0 {
            put("shard_number", &self.shard_number.to_be_bytes());
        }
        if self.corruption_detected {
            put("corruption_detected", &[1]);
        }
    }

    /// Decodes a block that must span all of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(buf, MSG);
        let fb = Self::read(&mut r)?;
        r.finish()?;
        Ok(fb)
    }

    /// Reads one block from `r`, leaving whatever follows it.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let mut fb = PageserverFeedback::empty();
        let nkeys = r.u8("nkeys")?;
        for _ in 0..nkeys {
            let key = r.cstr("key")?;
            let len = r.i32("value length")?;
            let len = usize::try_from(len).map_err(|_| {
                r.invalid("value length", format!("negative ({len}) for key {key:?}"))
            })?;
            let value = r.bytes(len, "value")?;
            let fixed = |n: usize| -> Result<&[u8], ProtoError> {
                if value.len() == n {
                    Ok(value)
                } else {
                    Err(ProtoError::Invalid {
                        msg: MSG,
                        field: "value length",
                        reason: format!("key {key:?} needs {n} bytes, got {}", value.len()),
                    })
                }
            };
            let u64_of = |v: &[u8]| {
                let mut a = [0u8; 8];
                a.copy_from_slice(v);
                u64::from_be_bytes(a)
            };
            match key {
                "current_timeline_size" => fb.current_timeline_size = u64_of(fixed(8)?),
                "ps_writelsn" | "last_received_lsn" => {
                    fb.last_received_lsn = Lsn(u64_of(fixed(8)?))
                }
                "ps_flushlsn" | "disk_consistent_lsn" => {
                    fb.disk_consistent_lsn = Lsn(u64_of(fixed(8)?))
                }
                "ps_applylsn" | "remote_consistent_lsn" => {
                    fb.remote_consistent_lsn = Lsn(u64_of(fixed(8)?))
                }
                "ps_replytime" | "replytime" => {
                    fb.replytime = from_pg_timestamp(u64_of(fixed(8)?) as i64)
                }
                "shard_number" => {
                    let v = fixed(4)?;
                    fb.shard_number = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                }
                "corruption_detected" => fb.corruption_detected = fixed(1)?[0] != 0,
                _ => {} // Unknown: skipped by its length, already consumed.
            }
        }
        Ok(fb)
    }
}
