//! Compression of full-page images in WAL (`wal_compression`).
//!
//! PostgreSQL 15 compresses the hole-less part of a page image with pglz, LZ4 (raw block
//! format, `LZ4_compress_default`) or zstd (a complete frame, `ZSTD_compress` at the default
//! level) and marks which in `bimg_info`. Decompression must produce exactly
//! `BLCKSZ - hole_length` bytes; anything else is a corrupt image. When several method bits
//! are set, PostgreSQL tries pglz, then LZ4, then zstd; so do we.

use crate::pglz;
use crate::v15::{BKPIMAGE_COMPRESS_LZ4, BKPIMAGE_COMPRESS_PGLZ, BKPIMAGE_COMPRESS_ZSTD};

/// A `wal_compression` method for page images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageCompression {
    /// PostgreSQL's own LZ-family compressor (`BKPIMAGE_COMPRESS_PGLZ`).
    Pglz,
    /// LZ4 block format (`BKPIMAGE_COMPRESS_LZ4`).
    Lz4,
    /// A zstd frame (`BKPIMAGE_COMPRESS_ZSTD`).
    Zstd,
}

impl ImageCompression {
    /// Whether `bimg_info` marks the image compressed (`BKPIMAGE_COMPRESSED`).
    pub fn is_compressed(bimg_info: u8) -> bool {
        bimg_info & (BKPIMAGE_COMPRESS_PGLZ | BKPIMAGE_COMPRESS_LZ4 | BKPIMAGE_COMPRESS_ZSTD) != 0
    }

    /// The method `bimg_info` selects, in PostgreSQL's order of precedence.
    pub fn from_bimg_info(bimg_info: u8) -> Option<Self> {
        if bimg_info & BKPIMAGE_COMPRESS_PGLZ != 0 {
            Some(ImageCompression::Pglz)
        } else if bimg_info & BKPIMAGE_COMPRESS_LZ4 != 0 {
            Some(ImageCompression::Lz4)
        } else if bimg_info & BKPIMAGE_COMPRESS_ZSTD != 0 {
            Some(ImageCompression::Zstd)
        } else {
            None
        }
    }

    /// The `bimg_info` bit for this method.
    pub fn bimg_flag(self) -> u8 {
        match self {
            ImageCompression::Pglz => BKPIMAGE_COMPRESS_PGLZ,
            ImageCompression::Lz4 => BKPIMAGE_COMPRESS_LZ4,
            ImageCompression::Zstd => BKPIMAGE_COMPRESS_ZSTD,
        }
    }

    /// The method's name as `wal_compression` and `pg_waldump` spell it.
    pub fn name(self) -> &'static str {
        match self {
            ImageCompression::Pglz => "pglz",
            ImageCompression::Lz4 => "lz4",
            ImageCompression::Zstd => "zstd",
        }
    }
}

/// A compressed image that does not decompress to the expected size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not decompress {method} image to {expected} bytes: {reason}")]
pub struct DecompressError {
    /// The method named by `bimg_info`.
    pub method: &'static str,
    /// `BLCKSZ - hole_length`.
    pub expected: usize,
    /// What the decompressor said.
    pub reason: String,
}

/// Decompresses a stored image; the result is exactly `expected_len` bytes or an error.
pub fn decompress_image(
    method: ImageCompression,
    src: &[u8],
    expected_len: usize,
) -> Result<Vec<u8>, DecompressError> {
    let err = |reason: String| DecompressError {
        method: method.name(),
        expected: expected_len,
        reason,
    };
    let out = match method {
        ImageCompression::Pglz => {
            pglz::decompress(src, expected_len, true).map_err(|e| err(e.to_string()))?
        }
        ImageCompression::Lz4 => {
            let mut out = vec![0u8; expected_len];
            let n =
                lz4_flex::block::decompress_into(src, &mut out).map_err(|e| err(e.to_string()))?;
            out.truncate(n);
            out
        }
        ImageCompression::Zstd => {
            zstd::bulk::decompress(src, expected_len).map_err(|e| err(e.to_string()))?
        }
    };
    if out.len() != expected_len {
        return Err(err(format!("got {} bytes", out.len())));
    }
    Ok(out)
}

/// Compresses an image as PostgreSQL would (for building WAL, e.g. in tests).
///
/// Returns `None` when the method cannot make the input smaller, in which case PostgreSQL
/// stores the image uncompressed.
pub fn compress_image(method: ImageCompression, src: &[u8]) -> Option<Vec<u8>> {
    let out = match method {
        ImageCompression::Pglz => pglz::compress(src)?,
        ImageCompression::Lz4 => lz4_flex::block::compress(src),
        ImageCompression::Zstd => zstd::bulk::compress(src, 3).ok()?,
    };
    (out.len() < src.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_method() {
        let mut data = vec![0u8; 8000];
        for (i, b) in data.iter_mut().enumerate() {
            *b = ((i / 7) % 13) as u8;
        }
        for m in [
            ImageCompression::Pglz,
            ImageCompression::Lz4,
            ImageCompression::Zstd,
        ] {
            let c = compress_image(m, &data).unwrap();
            assert!(c.len() < data.len());
            assert_eq!(decompress_image(m, &c, data.len()).unwrap(), data);
            let e = decompress_image(m, &c, data.len() + 1).unwrap_err();
            assert_eq!(e.method, m.name());
            assert!(decompress_image(m, &c[..c.len() / 2], data.len()).is_err());
            assert_eq!(ImageCompression::from_bimg_info(m.bimg_flag()), Some(m));
        }
        assert!(!ImageCompression::is_compressed(0x03));
        assert_eq!(
            ImageCompression::from_bimg_info(BKPIMAGE_COMPRESS_LZ4 | BKPIMAGE_COMPRESS_PGLZ),
            Some(ImageCompression::Pglz)
        );
    }
}
