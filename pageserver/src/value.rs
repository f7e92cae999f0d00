//! The stored form of a [`Value`]: what one (key, LSN) holds in a layer file.
//!
//! One tag byte, then the body:
//! - `0` image: the bytes (a page, or a metadata value; empty = tombstone);
//! - `1` PostgreSQL record: `start_lsn u64 BE | will_init u8 | raw XLogRecord`;
//! - `2..` Strata records, little-endian fixed fields (see [`encode`]).
//!
//! Decoding a PostgreSQL record or an image slices the input (`Bytes`), never copies.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use utils::Lsn;

use crate::walingest::Value;
use crate::walrecord::{ClogStatus, MultiXactMember, WalRecord};

const TAG_IMAGE: u8 = 0;
const TAG_PG: u8 = 1;
const TAG_CLOG: u8 = 2;
const TAG_MXOFF: u8 = 3;
const TAG_MXMEM: u8 = 4;
const TAG_VM_CLEAR: u8 = 5;
const TAG_VM_TRUNC: u8 = 6;

/// A stored value that does not decode (a corrupt or foreign file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stored value: {0}")]
pub struct ValueDecodeError(pub String);

/// Whether a value makes earlier history irrelevant (an image or an initializing record).
pub fn will_init(v: &Value) -> bool {
    match v {
        Value::Image(_) => true,
        Value::Record(r) => r.will_init(),
    }
}

/// Appends the stored form of `v` to `out`.
pub fn encode(v: &Value, out: &mut impl BufMut) {
    match v {
        Value::Image(img) => {
            out.put_u8(TAG_IMAGE);
            out.put_slice(img);
        }
        Value::Record(WalRecord::Postgres {
            start_lsn,
            will_init,
            rec,
        }) => {
            out.put_u8(TAG_PG);
            out.put_u64(start_lsn.0);
            out.put_u8(u8::from(*will_init));
            out.put_slice(rec);
        }
        Value::Record(WalRecord::ClogSetStatus {
            xids,
            status,
            timestamp,
        }) => {
            out.put_u8(TAG_CLOG);
            out.put_u8(*status as u8);
            out.put_i64_le(*timestamp);
            out.put_u32_le(xids.len() as u32);
            for x in xids {
                out.put_u32_le(*x);
            }
        }
        Value::Record(WalRecord::MultixactOffsets { entries }) => {
            out.put_u8(TAG_MXOFF);
            out.put_u32_le(entries.len() as u32);
            for (m, o) in entries {
                out.put_u32_le(*m);
                out.put_u32_le(*o);
            }
        }
        Value::Record(WalRecord::MultixactMembersCreate { moff, members }) => {
            out.put_u8(TAG_MXMEM);
            out.put_u32_le(*moff);
            out.put_u32_le(members.len() as u32);
            for m in members {
                out.put_u32_le(m.xid);
                out.put_u8(m.status);
            }
        }
        Value::Record(WalRecord::ClearVisibilityMapFlags { heap_blknos, flags }) => {
            out.put_u8(TAG_VM_CLEAR);
            out.put_u8(*flags);
            out.put_u32_le(heap_blknos.len() as u32);
            for b in heap_blknos {
                out.put_u32_le(*b);
            }
        }
        Value::Record(WalRecord::TruncateVisibilityMap { heap_blocks }) => {
            out.put_u8(TAG_VM_TRUNC);
            out.put_u32_le(*heap_blocks);
        }
    }
}

/// The stored form of `v`, as one buffer.
pub fn to_bytes(v: &Value) -> Bytes {
    let mut b = BytesMut::with_capacity(encoded_len_hint(v));
    encode(v, &mut b);
    b.freeze()
}

fn encoded_len_hint(v: &Value) -> usize {
    match v {
        Value::Image(img) => 1 + img.len(),
        Value::Record(WalRecord::Postgres { rec, .. }) => 10 + rec.len(),
        Value::Record(_) => 64,
    }
}

fn need(b: &Bytes, n: usize, what: &str) -> Result<(), ValueDecodeError> {
    if b.remaining() < n {
        return Err(ValueDecodeError(format!(
            "{what}: {} bytes left, need {n}",
            b.remaining()
        )));
    }
    Ok(())
}

fn count(b: &mut Bytes, each: usize, what: &str) -> Result<usize, ValueDecodeError> {
    need(b, 4, what)?;
    let n = b.get_u32_le() as usize;
    need(b, n.saturating_mul(each), what)?;
    Ok(n)
}

/// Decodes the stored form of a value.
pub fn decode(mut b: Bytes) -> Result<Value, ValueDecodeError> {
    need(&b, 1, "tag")?;
    let tag = b.get_u8();
    let v = match tag {
        TAG_IMAGE => Value::Image(b),
        TAG_PG => {
            need(&b, 9, "postgres record")?;
            let start_lsn = Lsn(b.get_u64());
            let will_init = b.get_u8() != 0;
            Value::Record(WalRecord::Postgres {
                start_lsn,
                will_init,
                rec: b,
            })
        }
        TAG_CLOG => {
            need(&b, 9, "clog record")?;
            let status = match b.get_u8() {
                0 => ClogStatus::InProgress,
                1 => ClogStatus::Committed,
                2 => ClogStatus::Aborted,
                3 => ClogStatus::SubCommitted,
                s => return Err(ValueDecodeError(format!("clog status {s}"))),
            };
            let timestamp = b.get_i64_le();
            let n = count(&mut b, 4, "clog xids")?;
            let xids = (0..n).map(|_| b.get_u32_le()).collect();
            Value::Record(WalRecord::ClogSetStatus {
                xids,
                status,
                timestamp,
            })
        }
        TAG_MXOFF => {
            let n = count(&mut b, 8, "multixact offsets")?;
            let entries = (0..n).map(|_| (b.get_u32_le(), b.get_u32_le())).collect();
            Value::Record(WalRecord::MultixactOffsets { entries })
        }
        TAG_MXMEM => {
            need(&b, 4, "multixact members")?;
            let moff = b.get_u32_le();
            let n = count(&mut b, 5, "multixact members")?;
            let members = (0..n)
                .map(|_| MultiXactMember {
                    xid: b.get_u32_le(),
                    status: b.get_u8(),
                })
                .collect();
            Value::Record(WalRecord::MultixactMembersCreate { moff, members })
        }
        TAG_VM_CLEAR => {
            need(&b, 1, "vm clear")?;
            let flags = b.get_u8();
            let n = count(&mut b, 4, "vm clear blocks")?;
            let heap_blknos = (0..n).map(|_| b.get_u32_le()).collect();
            Value::Record(WalRecord::ClearVisibilityMapFlags { heap_blknos, flags })
        }
        TAG_VM_TRUNC => {
            need(&b, 4, "vm truncate")?;
            Value::Record(WalRecord::TruncateVisibilityMap {
                heap_blocks: b.get_u32_le(),
            })
        }
        t => return Err(ValueDecodeError(format!("unknown tag {t}"))),
    };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind() {
        let values = vec![
            Value::Image(Bytes::from_static(&[7u8; 8192])),
            Value::Image(Bytes::new()),
            Value::Record(WalRecord::Postgres {
                start_lsn: Lsn(0x1_0000_0028),
                will_init: true,
                rec: Bytes::from_static(b"raw record bytes"),
            }),
            Value::Record(WalRecord::ClogSetStatus {
                xids: vec![3, 4, 900],
                status: ClogStatus::Aborted,
                timestamp: -5,
            }),
            Value::Record(WalRecord::MultixactOffsets {
                entries: vec![(1, 0), (2, 3)],
            }),
            Value::Record(WalRecord::MultixactMembersCreate {
                moff: 9,
                members: vec![MultiXactMember { xid: 77, status: 2 }],
            }),
            Value::Record(WalRecord::ClearVisibilityMapFlags {
                heap_blknos: vec![1, 2],
                flags: 3,
            }),
            Value::Record(WalRecord::TruncateVisibilityMap { heap_blocks: 12 }),
        ];
        for v in values {
            assert_eq!(decode(to_bytes(&v)).unwrap(), v);
        }
    }

    #[test]
    fn truncated_input_is_an_error() {
        let v = Value::Record(WalRecord::ClogSetStatus {
            xids: vec![1, 2, 3],
            status: ClogStatus::Committed,
            timestamp: 1,
        });
        let full = to_bytes(&v);
        for n in 0..full.len() {
            assert!(decode(full.slice(..n)).is_err(), "prefix of {n} bytes");
        }
        assert!(decode(Bytes::from_static(&[99])).is_err());
    }
}
