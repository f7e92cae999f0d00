//! Big-endian readers and writers for the proposer protocol and the feedback block.
//!
//! Every read names the message and field it is for, so a short or malformed input is
//! reported as "VoteResponse: truncated reading flush_lsn (need 8 bytes, 3 left)" rather
//! than a bare "unexpected EOF". Reads never panic and never allocate more than the input
//! could hold.

use bytes::{BufMut, BytesMut};
use utils::Lsn;

/// Why a protocol message could not be decoded (or, rarely, encoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// A zero-length message: not even a tag.
    #[error("empty {direction} message")]
    Empty {
        /// "proposer" or "acceptor": which side's message was expected.
        direction: &'static str,
    },
    /// The first byte is not a tag of any message from this side.
    #[error("unknown {direction} message tag {tag:#04x} ({printable:?})")]
    UnknownTag {
        /// "proposer" or "acceptor".
        direction: &'static str,
        /// The tag byte.
        tag: u8,
        /// The tag as a character, for the log reader.
        printable: char,
    },
    /// The input ended inside a field.
    #[error("{msg}: truncated reading {field} (need {need} bytes, {left} left)")]
    Truncated {
        /// The message (or block) being decoded.
        msg: &'static str,
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        need: usize,
        /// Bytes that were left.
        left: usize,
    },
    /// A field is present but its value is not acceptable.
    #[error("{msg}: invalid {field}: {reason}")]
    Invalid {
        /// The message (or block) being decoded or encoded.
        msg: &'static str,
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Bytes left over after the last field of a fixed-layout message.
    #[error("{msg}: {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// The message.
        msg: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
}

/// A cursor over one message's bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    msg: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], msg: &'static str) -> Self {
        Reader { buf, msg }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn invalid(&self, field: &'static str, reason: impl Into<String>) -> ProtoError {
        ProtoError::Invalid {
            msg: self.msg,
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ProtoError> {
        if self.buf.len() < n {
            return Err(ProtoError::Truncated {
                msg: self.msg,
                field,
                need: n,
                left: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ProtoError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, field)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, ProtoError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, ProtoError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, ProtoError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, ProtoError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, ProtoError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, ProtoError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn lsn(&mut self, field: &'static str) -> Result<Lsn, ProtoError> {
        self.u64(field).map(Lsn)
    }

    /// A 0/1 byte; anything else is invalid rather than silently true.
    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, ProtoError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.invalid(field, format!("expected 0 or 1, got {v}"))),
        }
    }

    /// A NUL-terminated UTF-8 string (the NUL is consumed, not returned).
    pub(crate) fn cstr(&mut self, field: &'static str) -> Result<&'a str, ProtoError> {
        let Some(nul) = self.buf.iter().position(|&b| b == 0) else {
            return Err(self.invalid(
                field,
                format!(
                    "no NUL terminator in the remaining {} bytes",
                    self.buf.len()
                ),
            ));
        };
        let raw = self.bytes(nul + 1, field)?;
        std::str::from_utf8(&raw[..nul]).map_err(|e| self.invalid(field, format!("not UTF-8: {e}")))
    }

    /// A `u32` element count, checked against the bytes left so a hostile count cannot make
    /// the decoder allocate: each element takes at least `min_elem_size` bytes.
    pub(crate) fn count(
        &mut self,
        field: &'static str,
        min_elem_size: usize,
        max: usize,
    ) -> Result<usize, ProtoError> {
        let n = self.u32(field)? as usize;
        if n > max {
            return Err(self.invalid(field, format!("{n} entries, at most {max} allowed")));
        }
        let need = n.saturating_mul(min_elem_size);
        if need > self.buf.len() {
            return Err(ProtoError::Truncated {
                msg: self.msg,
                field,
                need,
                left: self.buf.len(),
            });
        }
        Ok(n)
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Fails if anything is left.
    pub(crate) fn finish(&self) -> Result<(), ProtoError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtoError::TrailingBytes {
                msg: self.msg,
                extra: self.buf.len(),
            })
        }
    }
}

/// Writes `s` NUL-terminated; a string containing NUL cannot be sent.
pub(crate) fn put_cstr(
    buf: &mut BytesMut,
    s: &str,
    msg: &'static str,
    field: &'static str,
) -> Result<(), ProtoError> {
    if s.as_bytes().contains(&0) {
        return Err(ProtoError::Invalid {
            msg,
            field,
            reason: "contains a NUL byte".into(),
        });
    }
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
    Ok(())
}

/// Writes a collection length as `u32`.
pub(crate) fn put_count(
    buf: &mut BytesMut,
    n: usize,
    msg: &'static str,
    field: &'static str,
) -> Result<(), ProtoError> {
    let n = u32::try_from(n).map_err(|_| ProtoError::Invalid {
        msg,
        field,
        reason: format!("{n} entries do not fit in u32"),
    })?;
    buf.put_u32(n);
    Ok(())
}
