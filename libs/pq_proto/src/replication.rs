//! Physical-replication sub-messages carried inside CopyData after `START_REPLICATION`.
//!
//! Server → client ([`ReplicationMessage`]):
//! - `'w'` XLogData: `wal_start u64, wal_end u64, send_time i64, data`;
//! - `'k'` primary keepalive: `wal_end u64, send_time i64, reply_requested u8`.
//!
//! Client → server ([`ReplicationFeedback`]):
//! - `'r'` standby status update: `write u64, flush u64, apply u64, reply_time i64,
//!   reply_requested u8`;
//! - `'h'` hot-standby feedback: `reply_time i64, xmin u32, xmin_epoch u32,
//!   catalog_xmin u32, catalog_xmin_epoch u32`;
//! - `'z'` pageserver feedback (the reference system's extension): `len u64`, then a block
//!   of exactly `len` bytes, carried opaque here (`safekeeper_api::PageserverFeedback`
//!   reads and writes it: its keys are the safekeeper's vocabulary, not libpq's).
//!
//! All integers are big-endian; times are PostgreSQL timestamps (µs since 2000-01-01,
//! [`utils::pg_time`]). Decoding rejects short, long and unknown messages with an
//! error naming the message.

use bytes::{BufMut, Bytes, BytesMut};
use utils::Lsn;
use utils::pg_time::TimestampTz;

use crate::error::ProtocolError;

/// Size of an XLogData header including its tag.
pub const XLOG_DATA_HEADER_SIZE: usize = 1 + 8 + 8 + 8;

/// `'w'`: a chunk of WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XLogData {
    /// LSN of the first byte of `data`.
    pub wal_start: Lsn,
    /// The end of WAL known to the server (not necessarily of this chunk).
    pub wal_end: Lsn,
    /// When the server sent it.
    pub send_time: TimestampTz,
    /// The WAL bytes.
    pub data: Bytes,
}

/// `'k'`: the server is alive; optionally asks for an immediate reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrimaryKeepalive {
    /// The end of WAL known to the server.
    pub wal_end: Lsn,
    /// When the server sent it.
    pub send_time: TimestampTz,
    /// Whether the client should reply at once.
    pub reply_requested: bool,
}

/// A message the server streams inside CopyData.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// `'w'`.
    XLogData(XLogData),
    /// `'k'`.
    Keepalive(PrimaryKeepalive),
}

/// `'r'`: how far a standby has written, flushed and applied WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StandbyStatusUpdate {
    /// Last WAL byte + 1 received and written.
    pub write_lsn: Lsn,
    /// Last WAL byte + 1 flushed.
    pub flush_lsn: Lsn,
    /// Last WAL byte + 1 applied.
    pub apply_lsn: Lsn,
    /// When the client sent it.
    pub reply_time: TimestampTz,
    /// Whether the client wants an immediate keepalive back.
    pub reply_requested: bool,
}

/// `'h'`: the oldest transaction ids a hot standby still needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotStandbyFeedback {
    /// When the client sent it.
    pub reply_time: TimestampTz,
    /// Oldest xmin (0 = none).
    pub xmin: u32,
    /// Its epoch.
    pub xmin_epoch: u32,
    /// Oldest catalog xmin (0 = none).
    pub catalog_xmin: u32,
    /// Its epoch.
    pub catalog_xmin_epoch: u32,
}

impl HotStandbyFeedback {
    /// The xmin as a 64-bit full transaction id (epoch in the high half), the form the
    /// proposer protocol's AppendResponse carries.
    pub fn full_xmin(&self) -> u64 {
        (u64::from(self.xmin_epoch) << 32) | u64::from(self.xmin)
    }

    /// The catalog xmin as a 64-bit full transaction id.
    pub fn full_catalog_xmin(&self) -> u64 {
        (u64::from(self.catalog_xmin_epoch) << 32) | u64::from(self.catalog_xmin)
    }
}

/// A message a replication client sends inside CopyData.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicationFeedback {
    /// `'r'`.
    StandbyStatus(StandbyStatusUpdate),
    /// `'h'`.
    HotStandby(HotStandbyFeedback),
    /// `'z'`: the pageserver-feedback block, undecoded.
    Pageserver(Bytes),
}

/// A fixed-size cursor for these small messages.
struct Cursor<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        if self.buf.len() < N {
            return Err(ProtocolError::malformed(
                self.what,
                format!("truncated: need {N} more bytes, {} left", self.buf.len()),
            ));
        }
        let (head, tail) = self.buf.split_at(N);
        self.buf = tail;
        let mut a = [0u8; N];
        a.copy_from_slice(head);
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, ProtocolError> {
        self.take().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Result<u64, ProtocolError> {
        self.take().map(u64::from_be_bytes)
    }
    fn i64(&mut self) -> Result<i64, ProtocolError> {
        self.take().map(i64::from_be_bytes)
    }
    fn lsn(&mut self) -> Result<Lsn, ProtocolError> {
        self.u64().map(Lsn)
    }
    fn bool(&mut self) -> Result<bool, ProtocolError> {
        Ok(self.take::<1>()?[0] != 0)
    }
    fn finish(&self) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::malformed(
                self.what,
                format!("{} unexpected trailing bytes", self.buf.len()),
            ))
        }
    }
}

fn split_tag<'a>(data: &'a [u8], what: &'static str) -> Result<(u8, &'a [u8]), ProtocolError> {
    data.split_first()
        .map(|(t, rest)| (*t, rest))
        .ok_or_else(|| ProtocolError::malformed(what, "empty CopyData"))
}

impl XLogData {
    /// Writes an XLogData header (tag included) so the caller can append the WAL bytes
    /// straight after it, e.g. reading from a segment file into the output buffer without
    /// an intermediate copy.
    pub fn put_header(buf: &mut BytesMut, wal_start: Lsn, wal_end: Lsn, send_time: TimestampTz) {
        buf.put_u8(b'w');
        buf.put_u64(wal_start.0);
        buf.put_u64(wal_end.0);
        buf.put_i64(send_time);
    }
}

impl ReplicationMessage {
    /// Appends the CopyData payload (tag and body) to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            ReplicationMessage::XLogData(x) => {
                buf.reserve(XLOG_DATA_HEADER_SIZE + x.data.len());
                XLogData::put_header(buf, x.wal_start, x.wal_end, x.send_time);
                buf.put_slice(&x.data);
            }
            ReplicationMessage::Keepalive(k) => {
                buf.put_u8(b'k');
                buf.put_u64(k.wal_end.0);
                buf.put_i64(k.send_time);
                buf.put_u8(u8::from(k.reply_requested));
            }
        }
    }

    /// Parses one CopyData payload. `data` is a `Bytes` so XLogData shares it.
    pub fn decode(data: &Bytes) -> Result<Self, ProtocolError> {
        let (tag, body) = split_tag(data, "replication message")?;
        match tag {
            b'w' => {
                let mut c = Cursor {
                    buf: body,
                    what: "XLogData",
                };
                let wal_start = c.lsn()?;
                let wal_end = c.lsn()?;
                let send_time = c.i64()?;
                Ok(ReplicationMessage::XLogData(XLogData {
                    wal_start,
                    wal_end,
                    send_time,
                    data: data.slice(XLOG_DATA_HEADER_SIZE..),
                }))
            }
            b'k' => {
                let mut c = Cursor {
                    buf: body,
                    what: "PrimaryKeepalive",
                };
                let k = PrimaryKeepalive {
                    wal_end: c.lsn()?,
                    send_time: c.i64()?,
                    reply_requested: c.bool()?,
                };
                c.finish()?;
                Ok(ReplicationMessage::Keepalive(k))
            }
            other => Err(ProtocolError::malformed(
                "replication message",
                format!("unknown tag {:?} (expected 'w' or 'k')", other as char),
            )),
        }
    }
}

impl ReplicationFeedback {
    /// Appends the CopyData payload (tag and body) to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            ReplicationFeedback::StandbyStatus(r) => {
                buf.put_u8(b'r');
                buf.put_u64(r.write_lsn.0);
                buf.put_u64(r.flush_lsn.0);
                buf.put_u64(r.apply_lsn.0);
                buf.put_i64(r.reply_time);
                buf.put_u8(u8::from(r.reply_requested));
            }
            ReplicationFeedback::HotStandby(h) => {
                buf.put_u8(b'h');
                buf.put_i64(h.reply_time);
                buf.put_u32(h.xmin);
                buf.put_u32(h.xmin_epoch);
                buf.put_u32(h.catalog_xmin);
                buf.put_u32(h.catalog_xmin_epoch);
            }
            ReplicationFeedback::Pageserver(block) => {
                buf.put_u8(b'z');
                buf.put_u64(block.len() as u64);
                buf.put_slice(block);
            }
        }
    }

    /// Parses one CopyData payload from a replication client.
    pub fn decode(data: &[u8]) -> Result<Self, ProtocolError> {
        let (tag, body) = split_tag(data, "replication feedback")?;
        match tag {
            b'r' => {
                let mut c = Cursor {
                    buf: body,
                    what: "StandbyStatusUpdate",
                };
                let r = StandbyStatusUpdate {
                    write_lsn: c.lsn()?,
                    flush_lsn: c.lsn()?,
                    apply_lsn: c.lsn()?,
                    reply_time: c.i64()?,
                    reply_requested: c.bool()?,
                };
                c.finish()?;
                Ok(ReplicationFeedback::StandbyStatus(r))
            }
            b'h' => {
                let mut c = Cursor {
                    buf: body,
                    what: "HotStandbyFeedback",
                };
                let h = HotStandbyFeedback {
                    reply_time: c.i64()?,
                    xmin: c.u32()?,
                    xmin_epoch: c.u32()?,
                    catalog_xmin: c.u32()?,
                    catalog_xmin_epoch: c.u32()?,
                };
                c.finish()?;
                Ok(ReplicationFeedback::HotStandby(h))
            }
            b'z' => {
                let mut c = Cursor {
                    buf: body,
                    what: "PageserverFeedback message",
                };
                let len = c.u64()?;
                if len != c.buf.len() as u64 {
                    return Err(ProtocolError::malformed(
                        "PageserverFeedback message",
                        format!("length word says {len} bytes, {} follow", c.buf.len()),
                    ));
                }
                Ok(ReplicationFeedback::Pageserver(Bytes::copy_from_slice(
                    c.buf,
                )))
            }
            other => Err(ProtocolError::malformed(
                "replication feedback",
                format!("unknown tag {:?} (expected 'r', 'h' or 'z')", other as char),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let compact: String = s.split_whitespace().collect();
        (0..compact.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&compact[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn fixed_vectors() {
        let x = ReplicationMessage::XLogData(XLogData {
            wal_start: Lsn(0x0100_0000),
            wal_end: Lsn(0x0100_0010),
            send_time: 5,
            data: Bytes::from_static(b"\x01\x02"),
        });
        let bytes = hex("77 0000000001000000 0000000001000010 0000000000000005 0102");
        let mut b = BytesMut::new();
        x.encode(&mut b);
        assert_eq!(b.to_vec(), bytes);
        assert_eq!(ReplicationMessage::decode(&Bytes::from(bytes)).unwrap(), x);

        let k = ReplicationMessage::Keepalive(PrimaryKeepalive {
            wal_end: Lsn(0x10),
            send_time: -2,
            reply_requested: true,
        });
        let bytes = hex("6b 0000000000000010 fffffffffffffffe 01");
        let mut b = BytesMut::new();
        k.encode(&mut b);
        assert_eq!(b.to_vec(), bytes);
        assert_eq!(ReplicationMessage::decode(&Bytes::from(bytes)).unwrap(), k);

        let r = ReplicationFeedback::StandbyStatus(StandbyStatusUpdate {
            write_lsn: Lsn(3),
            flush_lsn: Lsn(2),
            apply_lsn: Lsn(1),
            reply_time: 7,
            reply_requested: false,
        });
        let bytes =
            hex("72 0000000000000003 0000000000000002 0000000000000001 0000000000000007 00");
        let mut b = BytesMut::new();
        r.encode(&mut b);
        assert_eq!(b.to_vec(), bytes);
        assert_eq!(ReplicationFeedback::decode(&bytes).unwrap(), r);

        let h = HotStandbyFeedback {
            reply_time: 1,
            xmin: 0x200,
            xmin_epoch: 1,
            catalog_xmin: 0,
            catalog_xmin_epoch: 0,
        };
        assert_eq!(h.full_xmin(), 0x0000_0001_0000_0200);
        let bytes = hex("68 0000000000000001 00000200 00000001 00000000 00000000");
        let mut b = BytesMut::new();
        ReplicationFeedback::HotStandby(h).encode(&mut b);
        assert_eq!(b.to_vec(), bytes);
        assert_eq!(
            ReplicationFeedback::decode(&bytes).unwrap(),
            ReplicationFeedback::HotStandby(h)
        );

        // 'z': tag, u64 length, then the block, passed through as it is.
        let z = ReplicationFeedback::Pageserver(Bytes::from_static(b"\x01key\0"));
        let mut b = BytesMut::new();
        z.encode(&mut b);
        assert_eq!(b.to_vec(), hex("7a 0000000000000005 016b657900"));
        assert_eq!(ReplicationFeedback::decode(&b).unwrap(), z);
    }

    #[test]
    fn malformed() {
        let e = ReplicationFeedback::decode(&hex("72 00")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed StandbyStatusUpdate: truncated: need 8 more bytes, 1 left"
        );
        let e = ReplicationFeedback::decode(&hex(
            "68 0000000000000001 00000200 00000001 00000000 00000000 ff",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("1 unexpected trailing bytes"), "{e}");
        let e = ReplicationFeedback::decode(&hex("7a 0000000000000005 00")).unwrap_err();
        assert!(
            e.to_string().contains("length word says 5 bytes, 1 follow"),
            "{e}"
        );
        let e = ReplicationFeedback::decode(b"q").unwrap_err();
        assert!(e.to_string().contains("unknown tag 'q'"), "{e}");
        assert!(ReplicationFeedback::decode(b"").is_err());
        let e = ReplicationMessage::decode(&Bytes::from_static(b"w\0\0")).unwrap_err();
        assert!(
            e.to_string().starts_with("malformed XLogData: truncated"),
            "{e}"
        );
    }
}
