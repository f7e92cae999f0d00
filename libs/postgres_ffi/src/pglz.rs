//! PostgreSQL's LZ compression format (pglz), used for `wal_compression = pglz` page images
//! and for TOAST.
//!
//! The stream is a sequence of groups: one control byte, then up to eight items, one per
//! control bit starting at the least significant. A 0 bit is a literal byte. A 1 bit is a
//! back-reference of two or three bytes:
//!
//! ```text
//! byte 0: high nibble = offset bits 11..8, low nibble = length - 3 (0..=14), or 15
//! byte 1: offset bits 7..0                         (offset 1..=4095 back from the output end)
//! byte 2: only when the low nibble is 15: length - 18 (so lengths 3..=273)
//! ```
//!
//! A reference may overlap the bytes it produces (offset < length repeats a pattern). The
//! decompressor checks every offset against what has been produced and every read against the
//! input, so corrupt input is an error, never a panic or an out-of-bounds read.
//! [`compress`] is a simple greedy encoder producing valid streams (not byte-identical to
//! PostgreSQL's); decompression is what has to match PostgreSQL exactly.

use std::collections::HashMap;

/// Longest back-reference (`PGLZ_MAX_MATCH`).
pub const PGLZ_MAX_MATCH: usize = 273;
/// Farthest back-reference offset (`PGLZ_MAX_OFFSET`).
pub const PGLZ_MAX_OFFSET: usize = 0x0fff;

/// Corrupt pglz input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PglzError {
    /// A back-reference tag runs past the input.
    #[error("back-reference at input offset {0} is truncated")]
    TruncatedTag(usize),
    /// A back-reference pointing before the start of the output, or at offset 0.
    #[error("back-reference at input offset {at} has invalid offset {offset}")]
    BadOffset {
        /// Input offset of the tag.
        at: usize,
        /// The offset it encodes.
        offset: usize,
    },
    /// With `check_complete`, the input and output did not end together.
    #[error("decompressed {produced} of {expected} bytes using {consumed} of {input} input bytes")]
    Incomplete {
        /// Bytes produced.
        produced: usize,
        /// Bytes wanted.
        expected: usize,
        /// Input consumed.
        consumed: usize,
        /// Input length.
        input: usize,
    },
}

/// Decompresses `src` into at most `rawsize` bytes (`pglz_decompress`).
///
/// With `check_complete`, the input must be consumed exactly and produce exactly `rawsize`
/// bytes, as PostgreSQL requires for WAL images.
pub fn decompress(src: &[u8], rawsize: usize, check_complete: bool) -> Result<Vec<u8>, PglzError> {
    let mut out: Vec<u8> = Vec::with_capacity(rawsize);
    let mut sp = 0usize;
    while sp < src.len() && out.len() < rawsize {
        let mut ctrl = src[sp];
        sp += 1;
        let mut bit = 0;
        while bit < 8 && sp < src.len() && out.len() < rawsize {
            if ctrl & 1 != 0 {
                let at = sp;
                let (b0, b1) = match (src.get(sp), src.get(sp + 1)) {
                    (Some(&b0), Some(&b1)) => (b0, b1),
                    _ => return Err(PglzError::TruncatedTag(at)),
                };
                let mut len = usize::from(b0 & 0x0f) + 3;
                let off = (usize::from(b0 & 0xf0) << 4) | usize::from(b1);
                sp += 2;
                if len == 18 {
                    let extra = *src.get(sp).ok_or(PglzError::TruncatedTag(at))?;
                    len += usize::from(extra);
                    sp += 1;
                }
                if off == 0 || off > out.len() {
                    return Err(PglzError::BadOffset { at, offset: off });
                }
                len = len.min(rawsize - out.len());
                let start = out.len() - off;
                for i in 0..len {
                    let b = out[start + i];
                    out.push(b);
                }
            } else {
                out.push(src[sp]);
                sp += 1;
            }
            ctrl >>= 1;
            bit += 1;
        }
    }
    if check_complete && (out.len() != rawsize || sp != src.len()) {
        return Err(PglzError::Incomplete {
            produced: out.len(),
            expected: rawsize,
            consumed: sp,
            input: src.len(),
        });
    }
    Ok(out)
}

/// Compresses `src` into the pglz format; `None` if the result would not be smaller.
pub fn compress(src: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(src.len());
    // Positions of each 3-byte prefix seen so far, most recent last.
    let mut seen: HashMap<[u8; 3], Vec<usize>> = HashMap::new();
    let mut pos = 0usize;
    let mut ctrl_at = 0usize;
    let mut ctrl_bit = 8u32;
    while pos < src.len() {
        if ctrl_bit == 8 {
            ctrl_at = out.len();
            out.push(0);
            ctrl_bit = 0;
        }
        let mut best_len = 0usize;
        let mut best_off = 0usize;
        if pos + 3 <= src.len() {
            let key = [src[pos], src[pos + 1], src[pos + 2]];
            if let Some(cands) = seen.get(&key) {
                for &cand in cands.iter().rev().take(32) {
                    let off = pos - cand;
                    if off > PGLZ_MAX_OFFSET {
                        break;
                    }
                    let max = PGLZ_MAX_MATCH.min(src.len() - pos);
                    let len = (0..max)
                        .take_while(|&i| src[cand + i] == src[pos + i])
                        .count();
                    if len > best_len {
                        best_len = len;
                        best_off = off;
                    }
                }
            }
        }
        let advance = if best_len >= 3 {
            out[ctrl_at] |= 1 << ctrl_bit;
            let off_hi = ((best_off & 0x0f00) >> 4) as u8;
            if best_len >= 18 {
                out.push(off_hi | 0x0f);
                out.push((best_off & 0xff) as u8);
                out.push((best_len - 18) as u8);
            } else {
                out.push(off_hi | (best_len - 3) as u8);
                out.push((best_off & 0xff) as u8);
            }
            best_len
        } else {
            out.push(src[pos]);
            1
        };
        for p in pos..pos + advance {
            if p + 3 <= src.len() {
                seen.entry([src[p], src[p + 1], src[p + 2]])
                    .or_default()
                    .push(p);
            }
        }
        pos += advance;
        ctrl_bit += 1;
        if out.len() >= src.len() {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hand_made_stream() {
        // "abc" literals, then a back-reference of length 6 at offset 3 ("abcabc").
        let stream = [0b0000_1000, b'a', b'b', b'c', 0x03, 0x03];
        assert_eq!(decompress(&stream, 9, true).unwrap(), b"abcabcabc");
        // A long match: nibble 15 plus an extra length byte.
        let stream = [0b0000_0010, b'z', 0x0f, 0x01, 2];
        assert_eq!(decompress(&stream, 21, true).unwrap(), vec![b'z'; 21]);
    }

    #[test]
    fn corrupt_streams() {
        assert!(matches!(
            decompress(&[0x01, 0x00, 0x01], 10, true),
            Err(PglzError::BadOffset { .. })
        ));
        assert!(matches!(
            decompress(&[0x02, b'a', 0x00], 10, true),
            Err(PglzError::TruncatedTag(2))
        ));
        assert!(matches!(
            decompress(&[0x02, b'a', 0x0f, 0x01], 10, true),
            Err(PglzError::TruncatedTag(2))
        ));
        assert!(matches!(
            decompress(&[0x00, b'a'], 10, true),
            Err(PglzError::Incomplete { .. })
        ));
        // Without the completeness check, a short result is fine.
        assert_eq!(decompress(&[0x00, b'a'], 10, false).unwrap(), b"a");
        // Output is capped at rawsize even if a reference is longer.
        assert_eq!(
            decompress(&[0b10, b'q', 0x0f, 0x01, 200], 5, false).unwrap(),
            b"qqqqq"
        );
    }

    #[test]
    fn incompressible_input_is_refused() {
        let data: Vec<u8> = (0..=255u8).collect();
        assert!(compress(&data).is_none());
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..3000)) {
            if let Some(c) = compress(&data) {
                prop_assert_eq!(decompress(&c, data.len(), true).unwrap(), data);
            }
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), size in 0usize..1000) {
            let _ = decompress(&data, size, true);
            let _ = decompress(&data, size, false);
        }
    }
}
