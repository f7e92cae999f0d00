//! WAL segment files: their names, and finding where valid WAL ends.
//!
//! A segment file is named `TTTTTTTTXXXXXXXXYYYYYYYY` (24 upper-case hex digits): the
//! timeline, then the segment number split into "log id" and "segment within log id", where a
//! log id covers 4 GiB of WAL (`XLogFileName`). Safekeepers keep the segment being written as
//! `<name>.partial`.
//!
//! After a crash, a segment's tail may hold zeros, half a record, or an older generation of
//! WAL (segments are recycled). Like PostgreSQL's crash recovery, [`find_end_of_wal`] reads
//! records from a known-good position and stops at the first thing that is not a valid
//! record; the end of valid WAL is the end of the last valid record.

use std::fs;
use std::io;
use std::path::Path;

use utils::Lsn;

use crate::decoder::{WalDecodeError, WalDecoderConfig, WalStreamDecoder};
use crate::types::TimeLineId;

/// The suffix safekeepers give the segment being written.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// Segments per 4 GiB "log id" (`XLogSegmentsPerXLogId`).
pub fn segments_per_xlog_id(seg_size: u64) -> u64 {
    0x1_0000_0000 / seg_size
}

/// The file name of segment `segno` on timeline `tli` (`XLogFileName`).
pub fn xlog_file_name(tli: TimeLineId, segno: u64, seg_size: u64) -> String {
    let per_id = segments_per_xlog_id(seg_size);
    format!("{:08X}{:08X}{:08X}", tli, segno / per_id, segno % per_id)
}

/// Whether `name` is a complete segment name (24 hex digits, as `IsXLogFileName`).
pub fn is_xlog_file_name(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `name` is a segment name with the [`PARTIAL_SUFFIX`] (`IsPartialXLogFileName`).
pub fn is_partial_xlog_file_name(name: &str) -> bool {
    name.strip_suffix(PARTIAL_SUFFIX)
        .is_some_and(is_xlog_file_name)
}

/// Parses a segment name, with or without [`PARTIAL_SUFFIX`], into `(segno, tli)`
/// (`XLogFromFileName`). `None` for anything else.
pub fn parse_xlog_file_name(name: &str, seg_size: u64) -> Option<(u64, TimeLineId)> {
    let base = name.strip_suffix(PARTIAL_SUFFIX).unwrap_or(name);
    if !is_xlog_file_name(base) {
        return None;
    }
    let tli = u32::from_str_radix(&base[0..8], 16).ok()?;
    let log = u64::from_str_radix(&base[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&base[16..24], 16).ok()?;
    let per_id = segments_per_xlog_id(seg_size);
    if seg >= per_id {
        return None;
    }
    Some((log.checked_mul(per_id)?.checked_add(seg)?, tli))
}

/// The name of a timeline history file (`TLHistoryFileName`).
pub fn timeline_history_file_name(tli: TimeLineId) -> String {
    format!("{tli:08X}.history")
}

/// Where valid WAL ends, and why reading stopped there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndOfWal {
    /// The end LSN of the last valid record (the start position if there was none): where
    /// the next record would be written.
    pub end_lsn: Lsn,
    /// The start LSN of the last valid record, if any.
    pub last_record_lsn: Option<Lsn>,
    /// Why reading stopped.
    pub reason: EndOfWalReason,
}

/// Why [`find_end_of_wal`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndOfWalReason {
    /// The input ran out (at a record boundary or inside a torn record).
    EndOfInput,
    /// Bytes that are not valid WAL; [`WalDecodeError::is_zeroed`] tells an unwritten tail
    /// from garbage.
    Invalid(WalDecodeError),
}

/// Scans `wal` (bytes starting at `start`, which is a record or page boundary) and returns
/// the end of the last valid record. Never fails: invalid bytes end the WAL.
pub fn find_end_of_wal_in_bytes(start: Lsn, wal: &[u8], config: WalDecoderConfig) -> EndOfWal {
    let mut decoder = WalStreamDecoder::new(start, config);
    let mut scan = Scan::new(start);
    decoder.feed_bytes(wal);
    scan.drain(&mut decoder);
    scan.finish()
}

/// Finds the end of valid WAL in the segment files of `dir`, reading from `start` (a record
/// boundary, or a segment or page boundary) through consecutive segments of timeline `tli`
/// until a segment is missing or the WAL stops being valid. Segment files may carry the
/// `.partial` suffix. Fails only on I/O errors.
pub fn find_end_of_wal(
    dir: &Path,
    tli: TimeLineId,
    start: Lsn,
    config: WalDecoderConfig,
) -> io::Result<EndOfWal> {
    let seg_size = config.seg_size;
    find_end_of_wal_with(start, config, |segno| {
        let name = xlog_file_name(tli, segno, seg_size);
        for name in [name.clone(), format!("{name}{PARTIAL_SUFFIX}")] {
            match fs::read(dir.join(name)) {
                Ok(d) => return Ok(Some(d)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    })
}

/// [`find_end_of_wal`] over segments that `read_segment` returns by number (`None`: the
/// segment does not exist), for callers whose files are not plain `std::fs` ones.
pub fn find_end_of_wal_with(
    start: Lsn,
    config: WalDecoderConfig,
    mut read_segment: impl FnMut(u64) -> io::Result<Option<Vec<u8>>>,
) -> io::Result<EndOfWal> {
    let seg_size = config.seg_size;
    let mut decoder = WalStreamDecoder::new(start, config);
    let mut scan = Scan::new(start);
    let mut segno = start.segment_number(seg_size);
    while let Some(data) = read_segment(segno)? {
        let seg_start = segno * seg_size;
        let from = (decoder.available().0 - seg_start) as usize;
        let to = data.len().min(seg_size as usize);
        if from < to {
            decoder.feed_bytes(&data[from..to]);
        }
        if !scan.drain(&mut decoder) || to < seg_size as usize {
            break;
        }
        segno += 1;
    }
    Ok(scan.finish())
}

struct Scan {
    end: Lsn,
    last: Option<Lsn>,
    error: Option<WalDecodeError>,
}

impl Scan {
    fn new(start: Lsn) -> Self {
        Scan {
            end: start,
            last: None,
            error: None,
        }
    }

    /// Takes every record the decoder has; `false` once it hits invalid WAL.
    fn drain(&mut self, decoder: &mut WalStreamDecoder) -> bool {
        loop {
            match decoder.poll_decode() {
                Ok(Some((start, end, _))) => {
                    self.last = Some(start);
                    self.end = end;
                }
                Ok(None) => return true,
                Err(e) => {
                    self.error = Some(e);
                    return false;
                }
            }
        }
    }

    fn finish(self) -> EndOfWal {
        EndOfWal {
            end_lsn: self.end,
            last_record_lsn: self.last,
            reason: match self.error {
                Some(e) => EndOfWalReason::Invalid(e),
                None => EndOfWalReason::EndOfInput,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PgMajorVersion;
    use crate::v15::{RM_XLOG_ID, XLOG_NOOP};
    use crate::wal_generate::{WalWriter, WalWriterConfig, XLogRecordBuilder};

    const SEG: u64 = 1024 * 1024;

    #[test]
    fn names() {
        let seg16 = 16 * 1024 * 1024;
        assert_eq!(xlog_file_name(1, 1, seg16), "000000010000000000000001");
        assert_eq!(xlog_file_name(1, 0x100, seg16), "000000010000000100000000");
        assert_eq!(
            xlog_file_name(0xA, 0x1FF, seg16),
            "0000000A00000001000000FF"
        );
        assert_eq!(
            parse_xlog_file_name("0000000A00000001000000FF", seg16),
            Some((0x1FF, 0xA))
        );
        assert_eq!(
            parse_xlog_file_name("000000010000000000000003.partial", seg16),
            Some((3, 1))
        );
        assert_eq!(
            parse_xlog_file_name("000000010000000000000100", seg16),
            None
        );
        assert_eq!(parse_xlog_file_name("00000001000000000000000", seg16), None);
        assert_eq!(parse_xlog_file_name("00000001.history", seg16), None);
        assert!(is_partial_xlog_file_name(
            "000000010000000000000003.partial"
        ));
        assert!(!is_partial_xlog_file_name("000000010000000000000003"));
        assert_eq!(timeline_history_file_name(2), "00000002.history");
        // 1 MiB segments: 4096 per log id.
        assert_eq!(xlog_file_name(1, 4097, SEG), "000000010000000100000001");
        for segno in [0u64, 1, 4095, 4096, 123_456] {
            let n = xlog_file_name(3, segno, SEG);
            assert_eq!(parse_xlog_file_name(&n, SEG), Some((segno, 3)));
        }
    }

    fn cfg() -> (WalWriterConfig, WalDecoderConfig) {
        (
            WalWriterConfig {
                version: PgMajorVersion::V15,
                seg_size: SEG,
                system_id: 1,
                timeline: 1,
            },
            WalDecoderConfig {
                version: PgMajorVersion::V15,
                seg_size: SEG,
                system_id: None,
            },
        )
    }

    fn noop(len: usize) -> XLogRecordBuilder {
        XLogRecordBuilder::new(RM_XLOG_ID, XLOG_NOOP).main_data(&vec![7; len])
    }

    #[test]
    fn end_of_wal_in_files_across_segments() {
        let (wc, dc) = cfg();
        let dir = tempfile::tempdir().unwrap();
        let start = Lsn(SEG + 40);
        let mut w = WalWriter::new(wc, Lsn(SEG), Lsn::INVALID);
        w.fill_until(start);
        let mut last = (Lsn(0), Lsn(0));
        while w.position() < Lsn(2 * SEG + 20_000) {
            last = w.append(noop(5000));
        }
        // A torn record after the last complete one.
        let torn_start = w.append(noop(9000)).0;
        let mut bytes = w.into_bytes();
        bytes.truncate((torn_start.0 - SEG) as usize + 100);
        bytes.resize(2 * SEG as usize, 0);
        fs::write(
            dir.path().join(xlog_file_name(1, 1, SEG)),
            &bytes[..SEG as usize],
        )
        .unwrap();
        fs::write(
            dir.path()
                .join(format!("{}.partial", xlog_file_name(1, 2, SEG))),
            &bytes[SEG as usize..],
        )
        .unwrap();
        let end = find_end_of_wal(dir.path(), 1, start, dc).unwrap();
        assert_eq!(end.end_lsn, last.1);
        assert_eq!(end.last_record_lsn, Some(last.0));
        assert!(matches!(end.reason, EndOfWalReason::Invalid(ref e) if e.is_zeroed()));

        // Starting from the second segment's beginning finds the same end.
        let end2 = find_end_of_wal(dir.path(), 1, Lsn(2 * SEG), dc).unwrap();
        assert_eq!(end2.end_lsn, last.1);

        // A missing first segment: nothing read.
        let end3 = find_end_of_wal(dir.path(), 1, Lsn(5 * SEG), dc).unwrap();
        assert_eq!(end3.end_lsn, Lsn(5 * SEG));
        assert_eq!(end3.reason, EndOfWalReason::EndOfInput);
    }

    #[test]
    fn end_of_wal_in_bytes_with_recycled_tail() {
        let (wc, dc) = cfg();
        // The "old" generation of the segment, written one cycle earlier.
        let mut old = WalWriter::new(wc, Lsn(SEG), Lsn::INVALID);
        old.fill_until(Lsn(SEG + 40));
        while old.position() < Lsn(SEG + 60_000) {
            old.append(noop(3000));
        }
        let mut seg = old.into_bytes();
        // Rewrite it as a newer segment (different pageaddr) whose WAL stops after 3 pages.
        let mut new = WalWriter::new(wc, Lsn(3 * SEG), Lsn::INVALID);
        new.fill_until(Lsn(3 * SEG + 40));
        let mut last = (Lsn(0), Lsn(0));
        while new.position() < Lsn(3 * SEG + 3 * 8192 - 500) {
            last = new.append(noop(1000));
        }
        let fresh = new.into_bytes();
        seg[..fresh.len()].copy_from_slice(&fresh);
        // The rest of the page after the last record is zero; the old pages after it hold
        // WAL of another generation.
        let page_end = fresh.len().next_multiple_of(8192);
        seg[fresh.len()..page_end].fill(0);
        let end = find_end_of_wal_in_bytes(Lsn(3 * SEG), &seg, dc);
        assert_eq!(end.end_lsn, last.1);
        assert!(matches!(end.reason, EndOfWalReason::Invalid(_)));

        // A tail of garbage after the last record is the end too, not an error.
        let mut seg2 = fresh.clone();
        seg2.extend_from_slice(&[0xAB; 100]);
        let end = find_end_of_wal_in_bytes(Lsn(3 * SEG), &seg2, dc);
        assert_eq!(end.end_lsn, last.1);
        match end.reason {
            EndOfWalReason::Invalid(e) => assert!(!e.is_zeroed()),
            other => panic!("{other:?}"),
        }
    }
}
