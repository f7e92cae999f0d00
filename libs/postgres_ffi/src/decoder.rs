//! A streaming WAL decoder: feed it bytes in any chunks, poll it for complete records.
//!
//! It follows PostgreSQL's `xlogreader.c` rules:
//!
//! * Every 8 KiB page starts with a header ([`crate::xlog_page`]), validated on arrival: magic,
//!   flags, `xlp_pageaddr`, long header on each segment's first page (with segment size, block
//!   size and, once known, the system id), timelines that never go backwards.
//! * A record starts `MAXALIGN`ed; its first 4 bytes (`xl_tot_len`) are always on its first
//!   page. Below 24 is invalid (all-zero bytes there are how the end of WAL usually looks).
//!   A record that does not fit continues after the next page's header, which must carry
//!   `XLP_FIRST_IS_CONTRECORD` and `xlp_rem_len` = bytes still missing. A page with
//!   `XLP_FIRST_IS_OVERWRITE_CONTRECORD` instead abandons the partial record (it was never
//!   finished before a crash) and starts a fresh record after its header.
//! * A complete record must have a valid header (known rmgr; `xl_prev` equal to the previous
//!   record's start, once there is one), a matching CRC-32C and consistent block headers.
//! * A record's end LSN is the `MAXALIGN`ed position after its last byte; at a page boundary it
//!   stays there (the next record starts after the next page header). After `XLOG_SWITCH` the
//!   rest of the segment is unused and the end LSN is the next segment's start.
//!
//! Starting: the decoder begins at a record boundary, or at a page boundary; at a page
//! boundary it first skips any continuation of an earlier record (as `XLogFindNextRecord`), so
//! it can start at the beginning of any segment.
//!
//! A torn record at the end of the input is not an error: [`WalStreamDecoder::poll_decode`]
//! returns `Ok(None)` until more bytes arrive. Invalid bytes are an error naming the LSN
//! where they were found; errors are sticky. When reading files after a crash, an error is how
//! the end of valid WAL is found (see [`crate::wal_segment::find_end_of_wal`]).

use bytes::{Buf, Bytes, BytesMut};
use utils::Lsn;

use crate::v15::{
    SIZE_OF_XLOG_LONG_PHD, SIZE_OF_XLOG_RECORD, SIZE_OF_XLOG_SHORT_PHD, XLOG_RECORD_MAX_SIZE,
};
use crate::xlog_page::{PageHeaderError, XLogPageHeader};
use crate::xlog_record::{DecodedWalRecord, RecordErrorKind, XLogRecordHeader, record_crc};
use crate::{PgMajorVersion, XLOG_BLCKSZ, maxalign};

/// Invalid WAL, with the LSN where it was found (the record's start for record-level
/// problems, the page's LSN for page-level ones).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid WAL at {lsn}: {kind}")]
pub struct WalDecodeError {
    /// Where.
    pub lsn: Lsn,
    /// What.
    pub kind: WalDecodeErrorKind,
}

impl WalDecodeError {
    /// Whether the bytes at the error were zeros where a record or page header should be:
    /// the usual look of the end of WAL (an unwritten tail), as opposed to garbage.
    pub fn is_zeroed(&self) -> bool {
        matches!(
            self.kind,
            WalDecodeErrorKind::Record(RecordErrorKind::InvalidLength(0))
                | WalDecodeErrorKind::PageHeader(PageHeaderError::BadMagic { found: 0, .. })
        )
    }
}

/// What is wrong with the WAL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalDecodeErrorKind {
    /// A page header that is not valid here.
    #[error("{0}")]
    PageHeader(#[from] PageHeaderError),
    /// A record that is not valid.
    #[error("{0}")]
    Record(#[from] RecordErrorKind),
    /// The start LSN is not a possible record start (unaligned, or inside a page header).
    #[error("invalid record offset")]
    InvalidStartLsn,
    /// A record was expected at the start of a page, but the page continues an earlier one.
    #[error("contrecord is requested")]
    UnexpectedContrecord,
    /// A record continues onto a page that does not say so.
    #[error("there is no contrecord flag")]
    MissingContrecord,
    /// A continuation page's `xlp_rem_len` disagrees with the record being reassembled.
    #[error("invalid contrecord length {rem_len} (expected {expected})")]
    BadContrecordLength {
        /// `xlp_rem_len` on the page.
        rem_len: u32,
        /// Bytes still missing from the record.
        expected: u64,
    },
    /// A page's timeline is older than an earlier page's.
    #[error("out-of-sequence timeline ID {found} (after {previous})")]
    TimelineWentBackwards {
        /// `xlp_tli` found.
        found: u32,
        /// The previous page's timeline.
        previous: u32,
    },
}

/// What to do once a skip reaches its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterSkip {
    /// Expect a record (or a page header, at a page boundary).
    Record,
    /// Still looking for the first record after a page-boundary start.
    FindFirstRecord,
}

#[derive(Debug)]
enum State {
    /// At a page boundary at the start: skip continuation data of an earlier record.
    FindFirstRecord,
    /// At a record boundary (or a page boundary with a record after the header).
    WaitingForRecord,
    /// Collecting a record's bytes.
    Reassembling {
        start: Lsn,
        tot_len: usize,
        buf: BytesMut,
        header_checked: bool,
    },
    /// Consuming bytes without interpretation up to `until` (alignment padding, the unused
    /// tail of a segment after a switch, continuation data before the first record).
    Skipping { until: Lsn, then: AfterSkip },
}

/// Decoder settings that do not change while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalDecoderConfig {
    /// The major version whose WAL this is.
    pub version: PgMajorVersion,
    /// `wal_segment_size`.
    pub seg_size: u64,
    /// The cluster's system identifier, if known; otherwise the first long header sets it.
    pub system_id: Option<u64>,
}

impl WalDecoderConfig {
    /// PostgreSQL 15 with 16 MiB segments and no system id check.
    pub fn v15_default() -> Self {
        WalDecoderConfig {
            version: PgMajorVersion::V15,
            seg_size: crate::DEFAULT_WAL_SEGMENT_SIZE as u64,
            system_id: None,
        }
    }
}

/// Reassembles and validates WAL records from a byte stream. See the module docs.
#[derive(Debug)]
pub struct WalStreamDecoder {
    config: WalDecoderConfig,
    /// LSN of `inbuf[0]`.
    lsn: Lsn,
    inbuf: BytesMut,
    state: State,
    /// Start of the last record returned, for the `xl_prev` check.
    prev_record: Option<Lsn>,
    last_tli: Option<u32>,
    /// Start of the last record abandoned by an `XLP_FIRST_IS_OVERWRITE_CONTRECORD` page.
    aborted_record: Option<Lsn>,
    error: Option<WalDecodeError>,
}

/// One decoded record: its start LSN, end LSN (where the next record begins, before any page
/// header) and contents.
pub type DecodedRecordAt = (Lsn, Lsn, DecodedWalRecord);

impl WalStreamDecoder {
    /// A decoder whose first fed byte is at `start`: a record boundary or a page boundary.
    pub fn new(start: Lsn, config: WalDecoderConfig) -> Self {
        let state = if start.page_offset() == 0 {
            State::FindFirstRecord
        } else {
            State::WaitingForRecord
        };
        let header = if start.segment_offset(config.seg_size) < XLOG_BLCKSZ as u64 {
            SIZE_OF_XLOG_LONG_PHD
        } else {
            SIZE_OF_XLOG_SHORT_PHD
        } as u64;
        let error = (start.page_offset() != 0
            && (!start.is_aligned() || start.page_offset() < header))
            .then_some(WalDecodeError {
                lsn: start,
                kind: WalDecodeErrorKind::InvalidStartLsn,
            });
        WalStreamDecoder {
            config,
            lsn: start,
            inbuf: BytesMut::new(),
            state,
            prev_record: None,
            last_tli: None,
            aborted_record: None,
            error,
        }
    }

    /// Also checks that the first record's `xl_prev` is `prev` (the start of the record
    /// before `start`), as PostgreSQL does when it reads sequentially.
    pub fn with_prev_record(mut self, prev: Lsn) -> Self {
        self.prev_record = Some(prev);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &WalDecoderConfig {
        &self.config
    }

    /// The LSN just past the last byte fed.
    pub fn available(&self) -> Lsn {
        Lsn(self.lsn.0 + self.inbuf.len() as u64)
    }

    /// The start of the last record abandoned because the next page said
    /// `XLP_FIRST_IS_OVERWRITE_CONTRECORD`, if any.
    pub fn aborted_record(&self) -> Option<Lsn> {
        self.aborted_record
    }

    /// The system identifier, once given or seen in a long page header.
    pub fn system_id(&self) -> Option<u64> {
        self.config.system_id
    }

    /// Appends the next bytes of WAL (continuing from [`WalStreamDecoder::available`]).
    pub fn feed_bytes(&mut self, buf: &[u8]) {
        self.inbuf.extend_from_slice(buf);
    }

    /// The next complete record, `Ok(None)` if more bytes are needed, or the error that
    /// stops decoding (returned again on every later call).
    pub fn poll_decode(&mut self) -> Result<Option<DecodedRecordAt>, WalDecodeError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let result = self.poll_inner();
        if let Err(e) = &result {
            self.error = Some(e.clone());
        }
        result
    }

    fn consume(&mut self, n: usize) {
        self.inbuf.advance(n);
        self.lsn = Lsn(self.lsn.0 + n as u64);
    }

    fn err(&self, lsn: Lsn, kind: impl Into<WalDecodeErrorKind>) -> WalDecodeError {
        WalDecodeError {
            lsn,
            kind: kind.into(),
        }
    }

    fn poll_inner(&mut self) -> Result<Option<DecodedRecordAt>, WalDecodeError> {
        loop {
            if let State::Skipping { until, then } = self.state {
                if self.lsn < until {
                    let n = ((until.0 - self.lsn.0) as usize).min(self.inbuf.len());
                    if n == 0 {
                        return Ok(None);
                    }
                    self.consume(n);
                    continue;
                }
                self.state = match then {
                    AfterSkip::Record => State::WaitingForRecord,
                    AfterSkip::FindFirstRecord => State::FindFirstRecord,
                };
            }

            if self.lsn.page_offset() == 0 {
                if !self.read_page_header()? {
                    return Ok(None);
                }
                continue;
            }

            match &mut self.state {
                // Resolved at the top of the loop.
                State::Skipping { .. } => continue,
                State::FindFirstRecord => {
                    // Only reachable mid-page if the start was mid-page; then it is a record.
                    self.state = State::WaitingForRecord;
                }
                State::WaitingForRecord => {
                    if self.inbuf.len() < 4 {
                        return Ok(None);
                    }
                    let tot_len = u32::from_le_bytes([
                        self.inbuf[0],
                        self.inbuf[1],
                        self.inbuf[2],
                        self.inbuf[3],
                    ]);
                    if (tot_len as usize) < SIZE_OF_XLOG_RECORD {
                        return Err(self.err(self.lsn, RecordErrorKind::InvalidLength(tot_len)));
                    }
                    if tot_len > XLOG_RECORD_MAX_SIZE {
                        return Err(self.err(self.lsn, RecordErrorKind::TooLong(tot_len)));
                    }
                    self.state = State::Reassembling {
                        start: self.lsn,
                        tot_len: tot_len as usize,
                        buf: BytesMut::with_capacity((tot_len as usize).min(1 << 16)),
                        header_checked: false,
                    };
                }
                State::Reassembling {
                    start,
                    tot_len,
                    buf,
                    header_checked,
                } => {
                    let start = *start;
                    let need = *tot_len - buf.len();
                    let room = self.lsn.remaining_in_page() as usize;
                    let n = need.min(room).min(self.inbuf.len());
                    if n == 0 {
                        return Ok(None);
                    }
                    buf.extend_from_slice(&self.inbuf[..n]);
                    let mut header_bytes = None;
                    if !*header_checked && buf.len() >= SIZE_OF_XLOG_RECORD {
                        *header_checked = true;
                        let mut h = [0u8; SIZE_OF_XLOG_RECORD];
                        h.copy_from_slice(&buf[..SIZE_OF_XLOG_RECORD]);
                        header_bytes = Some(h);
                    }
                    let raw = (buf.len() == *tot_len).then(|| std::mem::take(buf).freeze());
                    self.consume(n);
                    if let Some(h) = header_bytes {
                        let header = XLogRecordHeader::decode(&h)
                            .map_err(|e| self.err(start, RecordErrorKind::Truncated(e)))?;
                        self.check_header(start, &header)?;
                    }
                    if let Some(raw) = raw {
                        return self.finish_record(start, raw).map(Some);
                    }
                }
            }
        }
    }

    fn check_header(&self, start: Lsn, header: &XLogRecordHeader) -> Result<(), WalDecodeError> {
        header.validate().map_err(|k| self.err(start, k))?;
        if let Some(prev) = self.prev_record
            && header.prev != prev
        {
            return Err(self.err(
                start,
                RecordErrorKind::BadPrevLink {
                    found: header.prev,
                    expected: prev,
                },
            ));
        }
        Ok(())
    }

    fn finish_record(&mut self, start: Lsn, raw: Bytes) -> Result<DecodedRecordAt, WalDecodeError> {
        let header = XLogRecordHeader::decode(&raw)
            .map_err(|e| self.err(start, RecordErrorKind::Truncated(e)))?;
        let computed = record_crc(&raw);
        if computed != header.crc {
            return Err(self.err(
                start,
                RecordErrorKind::BadCrc {
                    stored: header.crc,
                    computed,
                },
            ));
        }
        let record = DecodedWalRecord::decode(start, raw).map_err(|e| self.err(e.lsn, e.kind))?;
        // `self.lsn` is just past the last byte.
        let mut end = Lsn(maxalign(self.lsn.0 as usize) as u64);
        if record.is_xlog_switch() {
            end = Lsn(self.lsn.0.next_multiple_of(self.config.seg_size));
        }
        self.prev_record = Some(start);
        self.state = State::Skipping {
            until: end,
            then: AfterSkip::Record,
        };
        Ok((start, end, record))
    }

    /// Reads and applies the page header at `self.lsn`. `Ok(false)` if more bytes are needed.
    fn read_page_header(&mut self) -> Result<bool, WalDecodeError> {
        if self.inbuf.len() < SIZE_OF_XLOG_SHORT_PHD {
            return Ok(false);
        }
        let info = u16::from_le_bytes([self.inbuf[2], self.inbuf[3]]);
        let size = XLogPageHeader::size_for_info(info);
        if self.inbuf.len() < size {
            return Ok(false);
        }
        let page_lsn = self.lsn;
        let hdr = XLogPageHeader::decode(&self.inbuf[..size]).map_err(|e| self.err(page_lsn, e))?;
        hdr.validate(
            self.config.version,
            page_lsn,
            self.config.seg_size,
            self.config.system_id,
        )
        .map_err(|e| self.err(page_lsn, e))?;
        if let Some(previous) = self.last_tli
            && hdr.tli < previous
        {
            return Err(self.err(
                page_lsn,
                WalDecodeErrorKind::TimelineWentBackwards {
                    found: hdr.tli,
                    previous,
                },
            ));
        }
        self.last_tli = Some(hdr.tli);
        if let Some(long) = &hdr.long {
            self.config.system_id.get_or_insert(long.sysid);
        }
        self.consume(size);

        match &mut self.state {
            State::FindFirstRecord => {
                if hdr.is_contrecord() {
                    let skip = maxalign(hdr.rem_len as usize) as u64;
                    let room = (XLOG_BLCKSZ - size) as u64;
                    self.state = if skip >= room {
                        // The whole page continues the earlier record; so may the next.
                        State::Skipping {
                            until: Lsn(page_lsn.0 + XLOG_BLCKSZ as u64),
                            then: AfterSkip::FindFirstRecord,
                        }
                    } else {
                        State::Skipping {
                            until: Lsn(self.lsn.0 + skip),
                            then: AfterSkip::Record,
                        }
                    };
                } else {
                    self.state = State::WaitingForRecord;
                }
            }
            State::WaitingForRecord => {
                if hdr.is_contrecord() {
                    return Err(self.err(page_lsn, WalDecodeErrorKind::UnexpectedContrecord));
                }
            }
            State::Reassembling {
                start,
                tot_len,
                buf,
                ..
            } => {
                if hdr.is_overwrite_contrecord() {
                    // The partial record was never finished; a new record starts here.
                    self.aborted_record = Some(*start);
                    self.state = State::WaitingForRecord;
                } else if !hdr.is_contrecord() {
                    return Err(self.err(page_lsn, WalDecodeErrorKind::MissingContrecord));
                } else {
                    let expected = (*tot_len - buf.len()) as u64;
                    if hdr.rem_len == 0 || u64::from(hdr.rem_len) != expected {
                        return Err(self.err(
                            page_lsn,
                            WalDecodeErrorKind::BadContrecordLength {
                                rem_len: hdr.rem_len,
                                expected,
                            },
                        ));
                    }
                }
            }
            // Skips are resolved before headers are read.
            State::Skipping { .. } => {}
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
