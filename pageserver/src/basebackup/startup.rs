//! The two files that make a stock PostgreSQL 15 start at an arbitrary LSN `L` without
//! recovery: `global/pg_control` saying "shut down cleanly, checkpoint at L", and the
//! WAL segment holding that shutdown checkpoint record.
//!
//! Rules (docs/basebackup.md, from `reference/basebackup_for_stock_postgres.md`):
//! * The record starts at `L`, or just past the page header when `L` is a page boundary
//!   (as PostgreSQL places its own records); its `redo` is its own start, and pg_control's
//!   `checkPoint` and `checkPointCopy` say the same.
//! * `xl_prev` is the start of the record that ends at `L` when it is known; otherwise 0,
//!   which startup accepts. Nothing in Strata reads through `L` in sequence (a compute's
//!   only WAL consumer is its sidecar, which starts at exactly `L`), so the difference is
//!   only visible to a person running pg_waldump across the junction.
//! * Segments are full segments; the first page of each carries a long header with the
//!   cluster's system identifier even when the record is on a later page; the pages before
//!   `L` are empty pages with valid headers (no consumer reads them, see ARCHITECTURE.md).
//!   A record that crosses a segment boundary gives two segments, the second's first page
//!   marked as a continuation.
//! * nextXid, nextOid, nextMulti and the oldest-xid fields come from the checkpoint key,
//!   which ingest keeps current record by record: they are exactly the values as of `L`.
//!   `oldestActiveXid` is 0 (a shutdown checkpoint has no running transactions).

use postgres_ffi::PgMajorVersion;
use postgres_ffi::controlfile::{CheckPoint, ControlFileData, DbState};
use postgres_ffi::v15::{RM_XLOG_ID, XLOG_CHECKPOINT_SHUTDOWN};
use postgres_ffi::wal_generate::{WalWriter, WalWriterConfig, XLogRecordBuilder};
use postgres_ffi::wal_segment::xlog_file_name;
use postgres_ffi::xlog_page::skip_page_header;
use utils::Lsn;

/// What a basebackup at one LSN adds to the data directory besides the stored state.
#[derive(Debug)]
pub struct StartupFiles {
    /// `global/pg_control` (8192 bytes, CRC set).
    pub control: Vec<u8>,
    /// `pg_wal/<name>` and its bytes (a full segment each; two when the record crosses
    /// a segment boundary).
    pub wal_segments: Vec<(String, Vec<u8>)>,
    /// Where the checkpoint record starts (= its redo).
    pub checkpoint_lsn: Lsn,
    /// Where it ends: the first LSN the new server writes.
    pub checkpoint_end: Lsn,
}

/// Builds pg_control and the WAL segment for a start at `lsn` (8-byte aligned, the end of
/// a record), from the control file as imported and the checkpoint state at `lsn`.
/// `now` is the Unix time written as the checkpoint's and the file's time.
pub fn startup_files(
    stored_control: &ControlFileData,
    checkpoint_at_lsn: &CheckPoint,
    lsn: Lsn,
    prev_record: Lsn,
    now: i64,
) -> Result<StartupFiles, String> {
    if !lsn.is_aligned() {
        return Err(format!("{lsn} is not on a record boundary"));
    }
    let seg_size = u64::from(stored_control.xlog_seg_size);
    if !seg_size.is_power_of_two() || seg_size < 1 << 20 {
        return Err(format!(
            "pg_control names a WAL segment size of {seg_size} bytes"
        ));
    }
    let timeline = stored_control.checkpoint_copy.this_timeline_id;
    let start = skip_page_header(lsn, seg_size);
    let checkpoint = CheckPoint {
        redo: start,
        this_timeline_id: timeline,
        prev_timeline_id: timeline,
        oldest_active_xid: 0,
        time: now,
        ..*checkpoint_at_lsn
    };
    let record = XLogRecordBuilder::new(RM_XLOG_ID, XLOG_CHECKPOINT_SHUTDOWN)
        .main_data(&checkpoint.encode());
    let config = WalWriterConfig {
        version: PgMajorVersion::V15,
        seg_size,
        system_id: stored_control.system_identifier,
        timeline,
    };
    let seg_start = lsn.segment_start(seg_size);
    let mut w = WalWriter::new(config, seg_start, prev_record);
    w.fill_until(lsn);
    let (rec_start, rec_end) = w.append(record);
    w.zero_until(Lsn(w.position().0.next_multiple_of(seg_size)));
    let bytes = w.into_bytes();
    let wal_segments = bytes
        .chunks(seg_size as usize)
        .enumerate()
        .map(|(i, seg)| {
            let segno = seg_start.segment_number(seg_size) + i as u64;
            (xlog_file_name(timeline, segno, seg_size), seg.to_vec())
        })
        .collect();
    if rec_start != start {
        return Err(format!(
            "the checkpoint record landed at {rec_start}, expected {start}"
        ));
    }
    let control = ControlFileData {
        state: DbState::Shutdowned,
        time: now,
        checkpoint: start,
        checkpoint_copy: checkpoint,
        min_recovery_point: Lsn(0),
        min_recovery_point_tli: 0,
        backup_start_point: Lsn(0),
        backup_end_point: Lsn(0),
        backup_end_required: false,
        ..stored_control.clone()
    };
    Ok(StartupFiles {
        control: control.encode(),
        wal_segments,
        checkpoint_lsn: start,
        checkpoint_end: rec_end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_ffi::WalStreamDecoder;
    use postgres_ffi::decoder::WalDecoderConfig;

    const SEG: u64 = 16 * 1024 * 1024;

    fn control() -> ControlFileData {
        let mut c = ControlFileData::decode_unchecked(&vec![0u8; 8192]).unwrap();
        c.system_identifier = 0x1234_5678_9abc_def0;
        c.pg_control_version = postgres_ffi::v15::PG_CONTROL_VERSION;
        c.catalog_version_no = postgres_ffi::v15::CATALOG_VERSION_NO;
        c.xlog_seg_size = SEG as u32;
        c.xlog_blcksz = 8192;
        c.blcksz = 8192;
        c.state = DbState::InProduction;
        c.checkpoint_copy.this_timeline_id = 1;
        c.min_recovery_point = Lsn(77);
        c
    }

    fn checkpoint() -> CheckPoint {
        CheckPoint {
            next_xid: 1000,
            next_oid: 24576,
            next_multi: 3,
            oldest_active_xid: 999,
            ..CheckPoint::default()
        }
    }

    fn check(lsn: Lsn, expect_start: Lsn) {
        let prev = Lsn(lsn.0.saturating_sub(200));
        let f = startup_files(&control(), &checkpoint(), lsn, prev, 1_700_000_000).unwrap();
        assert_eq!(f.checkpoint_lsn, expect_start, "at {lsn}");
        let wal: Vec<u8> = f.wal_segments.iter().flat_map(|(_, b)| b.clone()).collect();
        assert!(f.wal_segments.iter().all(|(_, b)| b.len() as u64 == SEG));
        let crosses = f.checkpoint_end.segment_number(SEG) != expect_start.segment_number(SEG)
            && f.checkpoint_end.segment_offset(SEG) != 0;
        assert_eq!(
            f.wal_segments.len(),
            if crosses { 2 } else { 1 },
            "at {lsn}"
        );
        let cf = ControlFileData::decode(&f.control).unwrap();
        assert_eq!(cf.state, DbState::Shutdowned);
        assert_eq!(cf.checkpoint, expect_start);
        assert_eq!(cf.checkpoint_copy.redo, expect_start);
        assert_eq!(cf.checkpoint_copy.next_xid, 1000);
        assert_eq!(cf.checkpoint_copy.oldest_active_xid, 0);
        assert_eq!(cf.min_recovery_point, Lsn(0));
        // Decode from `lsn` on, as PostgreSQL reads the record (checking xl_prev and,
        // when `lsn` is a page boundary, the page header).
        let config = WalDecoderConfig {
            system_id: Some(0x1234_5678_9abc_def0),
            ..WalDecoderConfig::v15_default()
        };
        let mut d = WalStreamDecoder::new(lsn, config).with_prev_record(prev);
        d.feed_bytes(&wal[lsn.segment_offset(SEG) as usize..]);
        // The segment's first page has the long header with the system id.
        let first = postgres_ffi::xlog_page::XLogPageHeader::decode(&wal).unwrap();
        assert_eq!(first.long.unwrap().sysid, 0x1234_5678_9abc_def0);
        let (start, end, rec) = d.poll_decode().unwrap().expect("a record");
        assert_eq!((start, end), (expect_start, f.checkpoint_end));
        assert_eq!(rec.rmid(), RM_XLOG_ID);
        let ckpt = CheckPoint::decode(&rec.main_data).unwrap();
        assert_eq!(ckpt, cf.checkpoint_copy);
        assert_eq!(
            f.wal_segments[0].0,
            xlog_file_name(1, expect_start.segment_number(SEG), SEG)
        );
    }

    #[test]
    fn the_record_is_placed_as_postgres_places_it() {
        // Mid-page, on a page boundary, on a segment boundary, near a page's end (the
        // record crosses into the next page).
        check(Lsn(0x1_0000_0128), Lsn(0x1_0000_0128));
        check(Lsn(0x1_0000_6000), Lsn(0x1_0000_6018));
        check(Lsn(0x1_0100_0000), Lsn(0x1_0100_0028));
        check(Lsn(0x1_0000_7FD0), Lsn(0x1_0000_7FD0));
        check(Lsn(0x1_00FF_FFD0), Lsn(0x1_00FF_FFD0));
    }

    #[test]
    fn unaligned_lsns_and_bad_geometry_are_refused() {
        assert!(startup_files(&control(), &checkpoint(), Lsn(0x1_0000_0129), Lsn(0), 0).is_err());
        let mut c = control();
        c.xlog_seg_size = 12345;
        assert!(startup_files(&c, &checkpoint(), Lsn(0x1_0000_0128), Lsn(0), 0).is_err());
    }
}
