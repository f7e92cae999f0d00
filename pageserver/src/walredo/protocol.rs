//! The request/reply protocol between the pageserver and a `strata_walredo` process.
//!
//! Specified in `docs/walredo_protocol.md`; the C side is `pgxn/strata_walredo`. All
//! integers are little-endian (both ends run on the same machine). Requests:
//! `kind: u8 | len: u32 | payload[len]`, where the payload starts with a `u64` request id.
//! Replies, one per request and in request order: `status: u8 | id: u64 | len: u32 |
//! payload[len]` — status `O` with the 8 KiB page (empty for a ping), or `E` with a
//! UTF-8 error message.

use bytes::{BufMut, Bytes, BytesMut};
use pageserver_api::reltag::BufferTag;
use utils::Lsn;

use postgres_ffi::BLCKSZ;

/// Request kind: replay records onto a page.
pub const REQ_REDO: u8 = b'R';
/// Request kind: ping (liveness and round-trip measurement).
pub const REQ_PING: u8 = b'P';
/// Reply status: success.
pub const REPLY_OK: u8 = b'O';
/// Reply status: the request failed; the process keeps serving.
pub const REPLY_ERROR: u8 = b'E';
/// Bytes in a reply header.
pub const REPLY_HEADER_LEN: usize = 13;
/// The largest request the C side accepts.
pub const MAX_REQUEST_LEN: usize = 512 * 1024 * 1024;
const FLAG_HAS_IMAGE: u8 = 0x01;

/// One PostgreSQL record to replay.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    /// Where the record starts.
    pub start_lsn: Lsn,
    /// Where it ends: the LSN redo stamps on the page.
    pub end_lsn: Lsn,
    /// The raw `XLogRecord`.
    pub rec: &'a [u8],
}

/// Encodes a redo request.
pub fn encode_redo(
    request_id: u64,
    tag: BufferTag,
    base_image: Option<&[u8]>,
    records: &[RecordRef<'_>],
) -> Result<Bytes, String> {
    if let Some(img) = base_image
        && img.len() != BLCKSZ
    {
        return Err(format!("base image is {} bytes, not {BLCKSZ}", img.len()));
    }
    let records_len: usize = records.iter().map(|r| 20 + r.rec.len()).sum();
    let payload_len = 8 + 17 + 1 + base_image.map_or(0, |_| BLCKSZ) + 4 + records_len;
    if payload_len > MAX_REQUEST_LEN {
        return Err(format!(
            "request of {payload_len} bytes exceeds the {MAX_REQUEST_LEN}-byte limit"
        ));
    }
    let mut buf = BytesMut::with_capacity(5 + payload_len);
    buf.put_u8(REQ_REDO);
    buf.put_u32_le(payload_len as u32);
    buf.put_u64_le(request_id);
    buf.put_u32_le(tag.rel.spcnode);
    buf.put_u32_le(tag.rel.dbnode);
    buf.put_u32_le(tag.rel.relnode);
    buf.put_u8(tag.rel.forknum);
    buf.put_u32_le(tag.blkno);
    buf.put_u8(if base_image.is_some() {
        FLAG_HAS_IMAGE
    } else {
        0
    });
    if let Some(img) = base_image {
        buf.put_slice(img);
    }
    buf.put_u32_le(records.len() as u32);
    for r in records {
        buf.put_u64_le(r.start_lsn.0);
        buf.put_u64_le(r.end_lsn.0);
        buf.put_u32_le(r.rec.len() as u32);
        buf.put_slice(r.rec);
    }
    debug_assert_eq!(buf.len(), 5 + payload_len);
    Ok(buf.freeze())
}

/// Encodes a ping.
pub fn encode_ping(request_id: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(13);
    buf.put_u8(REQ_PING);
    buf.put_u32_le(8);
    buf.put_u64_le(request_id);
    buf.freeze()
}

/// A decoded reply header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyHeader {
    /// `REPLY_OK` or `REPLY_ERROR`.
    pub status: u8,
    /// The id of the request this answers.
    pub request_id: u64,
    /// Payload bytes that follow.
    pub len: u32,
}

/// Decodes a reply header; rejects unknown statuses and impossible lengths.
pub fn decode_reply_header(h: &[u8; REPLY_HEADER_LEN]) -> Result<ReplyHeader, String> {
    let status = h[0];
    let mut id = [0u8; 8];
    id.copy_from_slice(&h[1..9]);
    let mut len = [0u8; 4];
    len.copy_from_slice(&h[9..13]);
    let header = ReplyHeader {
        status,
        request_id: u64::from_le_bytes(id),
        len: u32::from_le_bytes(len),
    };
    match status {
        REPLY_OK if header.len as usize == BLCKSZ || header.len == 0 => Ok(header),
        REPLY_ERROR if header.len <= 64 * 1024 => Ok(header),
        _ => Err(format!("malformed reply header {h:02x?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pageserver_api::reltag::RelTag;

    fn tag() -> BufferTag {
        BufferTag {
            rel: RelTag {
                spcnode: 1663,
                dbnode: 5,
                relnode: 16384,
                forknum: 0,
            },
            blkno: 9,
        }
    }

    #[test]
    fn redo_request_layout() {
        let img = vec![7u8; BLCKSZ];
        let rec = [1u8, 2, 3];
        let bytes = encode_redo(
            42,
            tag(),
            Some(&img),
            &[RecordRef {
                start_lsn: Lsn(0x100),
                end_lsn: Lsn(0x118),
                rec: &rec,
            }],
        )
        .unwrap();
        assert_eq!(bytes[0], b'R');
        let len = u32::from_le_bytes(bytes[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 5);
        assert_eq!(u64::from_le_bytes(bytes[5..13].try_into().unwrap()), 42);
        assert_eq!(u32::from_le_bytes(bytes[13..17].try_into().unwrap()), 1663);
        assert_eq!(bytes[25], 0, "fork");
        assert_eq!(u32::from_le_bytes(bytes[26..30].try_into().unwrap()), 9);
        assert_eq!(bytes[30], FLAG_HAS_IMAGE);
        let after_img = 31 + BLCKSZ;
        assert_eq!(
            u32::from_le_bytes(bytes[after_img..after_img + 4].try_into().unwrap()),
            1
        );
        assert_eq!(&bytes[bytes.len() - 3..], &rec);
    }

    #[test]
    fn bad_requests_are_refused_before_sending() {
        assert!(encode_redo(1, tag(), Some(&[0u8; 100]), &[]).is_err());
    }

    #[test]
    fn reply_headers() {
        let mut h = [0u8; REPLY_HEADER_LEN];
        h[0] = REPLY_OK;
        h[1..9].copy_from_slice(&5u64.to_le_bytes());
        h[9..13].copy_from_slice(&(BLCKSZ as u32).to_le_bytes());
        assert_eq!(
            decode_reply_header(&h).unwrap(),
            ReplyHeader {
                status: REPLY_OK,
                request_id: 5,
                len: BLCKSZ as u32
            }
        );
        h[9..13].copy_from_slice(&7u32.to_le_bytes());
        assert!(
            decode_reply_header(&h).is_err(),
            "an OK reply is a page or nothing"
        );
        h[0] = REPLY_ERROR;
        assert!(decode_reply_header(&h).is_ok());
        h[0] = b'X';
        assert!(decode_reply_header(&h).is_err());
    }

    #[test]
    fn ping_layout() {
        let p = encode_ping(3);
        assert_eq!(&p[..], &[b'P', 8, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
    }
}
