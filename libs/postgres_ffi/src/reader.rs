//! A bounds-checked little-endian cursor over a byte slice.
//!
//! Every parser in the crate reads through this, so malformed input becomes a
//! [`ShortInput`] error instead of a panic, and the error says how far in it happened.

/// Input ended before a field could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("input too short: needed {needed} bytes at offset {offset}, have {len}")]
pub struct ShortInput {
    /// Offset of the field that did not fit.
    pub offset: usize,
    /// Bytes the field needed.
    pub needed: usize,
    /// Total input length.
    pub len: usize,
}

/// A forward-only reader of little-endian fields.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Current offset from the start of the input.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The unread bytes, without consuming them.
    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], ShortInput> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(ShortInput {
                offset: self.pos,
                needed: n,
                len: self.buf.len(),
            }),
        }
    }

    pub(crate) fn skip(&mut self, n: usize) -> Result<(), ShortInput> {
        self.bytes(n).map(|_| ())
    }

    /// Skips to the next multiple of 8 from the start of the input (`MAXALIGN`).
    pub(crate) fn align8(&mut self) -> Result<(), ShortInput> {
        let pad = crate::maxalign(self.pos) - self.pos;
        self.skip(pad)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ShortInput> {
        let s = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ShortInput> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn bool(&mut self) -> Result<bool, ShortInput> {
        Ok(self.u8()? != 0)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, ShortInput> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ShortInput> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, ShortInput> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, ShortInput> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, ShortInput> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub(crate) fn f64(&mut self) -> Result<f64, ShortInput> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    /// A count field that must be non-negative (PostgreSQL stores many counts as `int`).
    pub(crate) fn count_i32(&mut self) -> Result<usize, ShortInput> {
        let offset = self.pos;
        let v = self.i32()?;
        usize::try_from(v).map_err(|_| ShortInput {
            offset,
            needed: 0,
            len: self.buf.len(),
        })
    }

    /// `n` items of `size` bytes each, checked for overflow and length.
    pub(crate) fn array_of(&mut self, n: usize, size: usize) -> Result<&'a [u8], ShortInput> {
        let total = n.checked_mul(size).ok_or(ShortInput {
            offset: self.pos,
            needed: usize::MAX,
            len: self.buf.len(),
        })?;
        self.bytes(total)
    }

    /// A NUL-terminated string, without the terminator.
    pub(crate) fn cstr(&mut self) -> Result<&'a [u8], ShortInput> {
        match self.rest().iter().position(|&b| b == 0) {
            Some(n) => {
                let s = self.bytes(n)?;
                self.skip(1)?;
                Ok(s)
            }
            None => Err(ShortInput {
                offset: self.pos,
                needed: self.remaining() + 1,
                len: self.buf.len(),
            }),
        }
    }
}

/// Little-endian u16 at `off`, or `None` past the end.
pub(crate) fn le_u16(buf: &[u8], off: usize) -> Option<u16> {
    let b = buf.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_reports_short_input() {
        let data = [1u8, 0, 2, 0, 0, 0, b'h', b'i', 0, 9];
        let mut r = Reader::new(&data);
        assert_eq!(r.u16().unwrap(), 1);
        assert_eq!(r.u32().unwrap(), 2);
        assert_eq!(r.cstr().unwrap(), b"hi");
        assert_eq!(r.pos(), 9);
        let e = r.u16().unwrap_err();
        assert_eq!(
            e,
            ShortInput {
                offset: 9,
                needed: 2,
                len: 10
            }
        );
        assert_eq!(r.u8().unwrap(), 9);
        assert!(r.cstr().is_err());
        assert!(Reader::new(&data).array_of(usize::MAX, 2).is_err());
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff]);
        assert!(r.count_i32().is_err(), "negative counts are rejected");
        assert_eq!(le_u16(&data, 0), Some(1));
    }
}
