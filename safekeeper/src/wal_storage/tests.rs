use std::fs;

use postgres_ffi::v15::{RM_XLOG_ID, XLOG_NOOP};
use postgres_ffi::wal_generate::XLogRecordBuilder;
use postgres_ffi::xlog_page::XLogPageHeader;

use super::*;

const SEG: u64 = 1024 * 1024;
const SYSID: u64 = 0x5EED;

fn config(dir: &Path) -> WalStorageConfig {
    WalStorageConfig {
        fs: utils::vfs::os(),
        dir: dir.to_path_buf(),
        ttid: TenantTimelineId::generate(),
        seg_size: SEG,
        pg_version: PgMajorVersion::V15,
        system_id: SYSID,
        sync: Sync::No,
    }
}

/// WAL as a compute would send it from `start`: records of `size` main-data bytes each.
fn generate(start: Lsn, sizes: &[usize]) -> (Vec<u8>, Vec<(Lsn, Lsn)>) {
    generate_after(start, Lsn::INVALID, sizes)
}

/// Like [`generate`], the first record linking back to `prev`.
fn generate_after(start: Lsn, prev: Lsn, sizes: &[usize]) -> (Vec<u8>, Vec<(Lsn, Lsn)>) {
    let mut w = WalWriter::new(config(Path::new(".")).writer_config(), start, prev);
    let mut positions = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let data = vec![(i % 251) as u8; size];
        positions.push(w.append(XLogRecordBuilder::new(RM_XLOG_ID, XLOG_NOOP).main_data(&data)));
    }
    let end = positions.last().map_or(start, |p| p.1);
    w.zero_until(end);
    (w.into_bytes(), positions)
}

fn start_positions(local_start_lsn: Lsn, commit_lsn: Lsn) -> WalStartPositions {
    WalStartPositions {
        local_start_lsn,
        commit_lsn,
    }
}

fn new_storage(dir: &Path, start: Lsn) -> PhysicalStorage {
    let mut s =
        PhysicalStorage::open(config(dir), start_positions(Lsn::INVALID, Lsn::INVALID)).unwrap();
    assert!(!s.is_initialized());
    s.initialize(start).unwrap();
    s
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn read_all(dir: &Path, timeline_start: Lsn, from: Lsn, to: Lsn) -> Vec<u8> {
    WalReader::new(&config(dir), timeline_start, from)
        .unwrap()
        .read_to_vec(to)
        .unwrap()
}

/// Start mid-segment, mid-page: the third page of segment 2.
const START: Lsn = Lsn(2 * SEG + 2 * 8192 + 1000);

#[test]
fn first_segment_gets_valid_headers_before_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let s = new_storage(dir.path(), START);
    assert_eq!(s.write_lsn(), START);
    assert_eq!(s.flush_lsn(), START);
    assert_eq!(
        segment_files(dir.path()),
        vec!["000000010000000000000002.partial"]
    );
    let seg = fs::read(dir.path().join("000000010000000000000002.partial")).unwrap();
    assert_eq!(seg.len() as u64, SEG);
    for page in 0..3u64 {
        let page_lsn = Lsn(2 * SEG + page * 8192);
        let h = XLogPageHeader::decode(&seg[(page * 8192) as usize..]).unwrap();
        h.validate(PgMajorVersion::V15, page_lsn, SEG, Some(SYSID))
            .unwrap();
        assert_eq!(h.long.is_some(), page == 0);
        assert_eq!(h.rem_len, 0);
    }
    let headers = [0..40usize, 8192..8192 + 24, 2 * 8192..2 * 8192 + 24];
    for (i, &b) in seg[..START.segment_offset(SEG) as usize].iter().enumerate() {
        if !headers.iter().any(|h| h.contains(&i)) {
            assert_eq!(b, 0, "byte {i} of the prefix is not zero");
        }
    }
    assert!(
        seg[START.segment_offset(SEG) as usize..]
            .iter()
            .all(|&b| b == 0)
    );
    // The reader serves exactly those bytes.
    let prefix = read_all(dir.path(), START, Lsn(2 * SEG), START);
    assert_eq!(prefix, seg[..prefix.len()]);
    assert_eq!(
        prefix,
        synthesize_prefix(config(dir.path()).writer_config(), START)
    );
    // Nothing before the first segment.
    let e = WalReader::new(&config(dir.path()), START, Lsn(2 * SEG - 1)).unwrap_err();
    assert!(matches!(e, StorageError::NotAvailable { .. }), "{e}");
}

#[test]
fn flush_lsn_moves_only_to_flushed_record_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = new_storage(dir.path(), START);
    let (wal, pos) = generate(START, &[100, 5000, 30]);
    // The first record and half of the second.
    let cut = (pos[1].0.0 - START.0 + 100) as usize;
    s.write_wal(START, &wal[..cut]).unwrap();
    assert_eq!(s.write_lsn(), Lsn(START.0 + cut as u64));
    assert_eq!(s.write_record_lsn(), pos[0].1);
    assert_eq!(s.flush_lsn(), START, "nothing flushed yet");
    assert!(s.has_unflushed());
    s.flush().unwrap();
    assert_eq!(s.flush_lsn(), pos[0].1);
    s.write_wal(Lsn(START.0 + cut as u64), &wal[cut..]).unwrap();
    assert_eq!(s.flush_lsn(), pos[0].1);
    s.flush().unwrap();
    assert_eq!(s.flush_lsn(), pos[2].1);
    assert!(!s.has_unflushed());
    let back = read_all(dir.path(), START, START, pos[2].1);
    assert_eq!(back, wal);
}

#[test]
fn record_end_counts_only_once_its_padding_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = new_storage(dir.path(), START);
    // A 24 + 2 + 3 = 29 byte record: its end is 3 bytes of padding later.
    let (wal, pos) = generate(START, &[3]);
    assert_eq!(pos[0].1.0 - START.0, 32);
    s.write_wal(START, &wal[..29]).unwrap();
    s.flush().unwrap();
    assert_eq!(
        s.flush_lsn(),
        START,
        "padding not written: record not complete"
    );
    s.write_wal(Lsn(START.0 + 29), &wal[29..]).unwrap();
    s.flush().unwrap();
    assert_eq!(s.flush_lsn(), pos[0].1);
}

#[test]
fn appends_are_sequential() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = new_storage(dir.path(), START);
    let (wal, pos) = generate(START, &[100, 100]);
    let e = s.write_wal(Lsn(START.0 + 8), &wal).unwrap_err();
    assert!(matches!(e, StorageError::Gap { .. }), "{e}");
    assert!(e.to_string().contains("gap"), "{e}");
    s.write_wal(START, &wal).unwrap();
    let e = s.write_wal(pos[0].1, &wal[..8]).unwrap_err();
    assert!(matches!(e, StorageError::Rewrite { .. }), "{e}");
    assert!(e.to_string().contains("rewrite"), "{e}");
    let mut fresh = PhysicalStorage::open(
        config(&dir.path().join("none")),
        start_positions(Lsn::INVALID, Lsn::INVALID),
    )
    .map(Some)
    .unwrap_or(None);
    // A directory that does not exist cannot even be opened.
    assert!(fresh.is_none());
    fs::create_dir(dir.path().join("empty")).unwrap();
    fresh = Some(
        PhysicalStorage::open(
            config(&dir.path().join("empty")),
            start_positions(Lsn::INVALID, Lsn::INVALID),
        )
        .unwrap(),
    );
    let e = fresh.as_mut().unwrap().write_wal(START, &wal).unwrap_err();
    assert!(matches!(e, StorageError::NotInitialized { .. }), "{e}");
}

#[test]
fn invalid_wal_is_refused_and_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = new_storage(dir.path(), START);
    let (mut wal, pos) = generate(START, &[100, 100]);
    s.write_wal(START, &wal[..(pos[0].1.0 - START.0) as usize])
        .unwrap();
    // Corrupt the second record's payload: its CRC no longer matches.
    let off = (pos[1].0.0 - START.0) as usize + 40;
    wal[off] ^= 0xFF;
    let e = s
        .write_wal(pos[0].1, &wal[(pos[0].1.0 - START.0) as usize..])
        .unwrap_err();
    assert!(matches!(e, StorageError::InvalidWal { .. }), "{e}");
    assert_eq!(s.write_lsn(), pos[0].1);
    s.flush().unwrap();
    assert_eq!(s.flush_lsn(), pos[0].1);
    let seg = fs::read(dir.path().join("000000010000000000000002.partial")).unwrap();
    let from = pos[0].1.segment_offset(SEG) as usize;
    assert!(
        seg[from..].iter().all(|&b| b == 0),
        "nothing of the bad append on disk"
    );
    // Still refused until a truncation resets the decoder.
    assert!(s.write_wal(pos[0].1, &[0u8; 8]).is_err());
    s.truncate(pos[0].1).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn segments_are_completed_and_renamed() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = new_storage(dir.path(), START);
    let (wal, pos) = generate(START, &vec![20_000; 120]); // ~2.3 MiB
    let end = pos.last().unwrap().1;
    for chunk_start in (0..wal.len()).step_by(100_000) {
        let chunk = &wal[chunk_start..(chunk_start + 100_000).min(wal.len())];
        s.write_wal(Lsn(START.0 + chunk_start as u64), chunk)
            .unwrap();
    }
    s.flush().unwrap();
    assert_eq!(s.flush_lsn(), end);
    assert_eq!(end.segment_number(SEG), 4);
    assert_eq!(
        segment_files(dir.path()),
        vec![
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000004.partial"
        ]
    );
    assert_eq!(read_all(dir.path(), START, START, end), wal);
    // Across a segment boundary from the middle.
    let from = Lsn(3 * SEG - 100);
    let back = read_all(dir.path(), START, from, Lsn(3 * SEG + 100));
    let off = (from.0 - START.0) as usize;
    assert_eq!(back, wal[off..off + 200]);
}

#[test]
fn switch_record_completes_at_the_next_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = new_storage(dir.path(), START);
    let mut w = WalWriter::new(config(dir.path()).writer_config(), START, Lsn::INVALID);
    let (_, e1) = w.append(XLogRecordBuilder::new(RM_XLOG_ID, XLOG_NOOP).main_data(&[1; 10]));
    let (_, switch_end) = w.switch();
    assert_eq!(switch_end, Lsn(3 * SEG));
    let (_, e3) = w.append(XLogRecordBuilder::new(RM_XLOG_ID, XLOG_NOOP).main_data(&[3; 10]));
    w.zero_until(e3);
    let wal = w.into_bytes();
    let half = (switch_end.0 - START.0) as usize - 5000;
    s.write_wal(START, &wal[..half]).unwrap();
    s.flush().unwrap();
    assert_eq!(
        s.flush_lsn(),
        e1,
        "the switch's segment tail is not all written"
    );
    s.write_wal(Lsn(START.0 + half as u64), &wal[half..])
        .unwrap();
    s.flush().unwrap();
    assert_eq!(s.flush_lsn(), e3);
    assert_eq!(
        segment_files(dir.path()),
        vec![
            "000000010000000000000002",
            "000000010000000000000003.partial"
        ]
    );
}

#[test]
fn truncate_refuses_committed_wal_and_cuts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = new_storage(dir.path(), START);
    let (wal, pos) = generate(START, &vec![20_000; 120]);
    let end = pos.last().unwrap().1;
    s.write_wal(START, &wal).unwrap();
    s.flush().unwrap();
    let commit = pos[10].1;
    s.set_commit_lsn(commit);
    s.set_commit_lsn(pos[5].1); // never lowers
    let e = s.truncate(pos[9].1).unwrap_err();
    assert!(matches!(e, StorageError::TruncateBelowCommit { .. }), "{e}");
    assert!(e.to_string().contains("below commit_lsn"), "{e}");
    let e = s.truncate(Lsn(end.0 + 8)).unwrap_err();
    assert!(matches!(e, StorageError::TruncateOutOfRange { .. }), "{e}");
    assert_eq!(s.flush_lsn(), end, "refusals change nothing");

    let e = s.truncate(Lsn(pos[15].1.0 + 8)).unwrap_err();
    assert!(matches!(e, StorageError::NotRecordBoundary { .. }), "{e}");
    assert_eq!(s.flush_lsn(), end);

    // Cut back into segment 2: segments 3 and 4 go, 2 becomes .partial again.
    let cut = pos[20];
    assert_eq!(cut.1.segment_number(SEG), 2);
    s.truncate(cut.1).unwrap();
    assert_eq!((s.write_lsn(), s.flush_lsn()), (cut.1, cut.1));
    assert_eq!(
        segment_files(dir.path()),
        vec!["000000010000000000000002.partial"]
    );
    let seg = fs::read(dir.path().join("000000010000000000000002.partial")).unwrap();
    assert_eq!(seg.len() as u64, SEG);
    assert!(
        seg[cut.1.segment_offset(SEG) as usize..]
            .iter()
            .all(|&b| b == 0)
    );
    // A new term's WAL continues from the cut.
    let (bad, _) = generate(cut.1, &[10]);
    let e = s.write_wal(cut.1, &bad).unwrap_err();
    assert!(
        e.to_string().contains("prev"),
        "the next record must link back: {e}"
    );
    s.truncate(cut.1).unwrap();
    let (wal2, pos2) = generate_after(cut.1, cut.0, &[50_000, 50_000]);
    s.write_wal(cut.1, &wal2).unwrap();
    s.flush().unwrap();
    assert_eq!(s.flush_lsn(), pos2[1].1);
    // Truncating exactly at the end is a no-op.
    s.truncate(pos2[1].1).unwrap();
    assert_eq!(s.flush_lsn(), pos2[1].1);
    let mut expect = wal[..(cut.1.0 - START.0) as usize].to_vec();
    expect.extend_from_slice(&wal2);
    assert_eq!(read_all(dir.path(), START, START, pos2[1].1), expect);
    drop(s);
    // And a restart finds exactly that.
    let s = PhysicalStorage::open(config(dir.path()), start_positions(START, commit)).unwrap();
    assert_eq!(s.flush_lsn(), pos2[1].1);
}

#[test]
fn truncate_to_a_segment_boundary_after_a_switch() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = new_storage(dir.path(), START);
    let mut w = WalWriter::new(config(dir.path()).writer_config(), START, Lsn::INVALID);
    w.append(XLogRecordBuilder::new(RM_XLOG_ID, XLOG_NOOP).main_data(&[1; 10]));
    let (_, switch_end) = w.switch();
    let (_, e3) = w.append(XLogRecordBuilder::new(RM_XLOG_ID, XLOG_NOOP).main_data(&[3; 10]));
    w.zero_until(e3);
    s.write_wal(START, w.bytes()).unwrap();
    s.flush().unwrap();
    s.truncate(switch_end).unwrap();
    assert_eq!(
        segment_files(dir.path()),
        vec![
            "000000010000000000000002",
            "000000010000000000000003.partial"
        ]
    );
    drop(s);
    let s = PhysicalStorage::open(config(dir.path()), start_positions(START, switch_end)).unwrap();
    assert_eq!(s.flush_lsn(), switch_end);
}

#[test]
fn open_finds_the_end_and_cuts_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = new_storage(dir.path(), START);
    let (wal, pos) = generate(START, &vec![30_000; 60]); // crosses into segment 3
    let torn = (pos[50].0.0 - START.0) as usize + 10_000;
    s.write_wal(START, &wal[..torn]).unwrap();
    s.flush().unwrap();
    drop(s);
    // Garbage after the torn record, as an older generation of WAL might leave.
    let seg3 = dir.path().join("000000010000000000000003.partial");
    let mut bytes = fs::read(&seg3).unwrap();
    let torn_off = (START.0 + torn as u64 - 3 * SEG) as usize;
    for b in &mut bytes[torn_off..torn_off + 3000] {
        *b = 0xA5;
    }
    fs::write(&seg3, &bytes).unwrap();
    // Also a later segment that must not survive.
    fs::write(
        dir.path().join("000000010000000000000004.partial"),
        vec![7u8; SEG as usize],
    )
    .unwrap();

    let commit = pos[30].1;
    let mut s = PhysicalStorage::open(config(dir.path()), start_positions(START, commit)).unwrap();
    assert_eq!(s.flush_lsn(), pos[49].1, "end of the last complete record");
    assert_eq!(s.write_lsn(), pos[49].1);
    assert_eq!(
        segment_files(dir.path()),
        vec![
            "000000010000000000000002",
            "000000010000000000000003.partial"
        ]
    );
    let bytes = fs::read(&seg3).unwrap();
    assert!(
        bytes[pos[49].1.segment_offset(SEG) as usize..]
            .iter()
            .all(|&b| b == 0)
    );
    // The same WAL can be appended again from there.
    let from = (pos[49].1.0 - START.0) as usize;
    s.write_wal(pos[49].1, &wal[from..]).unwrap();
    s.flush().unwrap();
    assert_eq!(s.flush_lsn(), pos[59].1);
}

/// The last record crosses into a new segment and commit_lsn is its end: a scan from that
/// segment's start sees only the record's continuation, so it must look further back (or,
/// if that segment was removed, trust commit_lsn as a record boundary).
#[test]
fn open_with_commit_at_the_end_of_a_record_from_the_previous_segment() {
    let (wal, pos) = generate(START, &vec![30_000; 40]);
    let k = pos
        .iter()
        .position(|&(b, e)| b < Lsn(3 * SEG) && e > Lsn(3 * SEG))
        .unwrap();
    let end = pos[k].1;
    for remove_previous in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = new_storage(dir.path(), START);
        s.write_wal(START, &wal[..(end.0 - START.0) as usize])
            .unwrap();
        s.flush().unwrap();
        drop(s);
        if remove_previous {
            assert_eq!(
                remove_segments_below(&config(dir.path()), end).unwrap(),
                [2]
            );
        }
        let mut s = PhysicalStorage::open(config(dir.path()), start_positions(START, end))
            .unwrap_or_else(|e| panic!("remove_previous {remove_previous}: {e}"));
        assert_eq!((s.flush_lsn(), s.write_lsn()), (end, end));
        // The next record can be appended (its xl_prev is checked when the record ending at
        // commit_lsn was found).
        let from = (end.0 - START.0) as usize;
        let next = (pos[k + 1].1.0 - START.0) as usize;
        s.write_wal(end, &wal[from..next]).unwrap();
        s.flush().unwrap();
        assert_eq!(s.flush_lsn(), pos[k + 1].1);
    }
}

#[test]
fn open_with_commit_beyond_valid_wal_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = new_storage(dir.path(), START);
    let (wal, pos) = generate(START, &[1000, 1000, 1000]);
    s.write_wal(START, &wal).unwrap();
    s.flush().unwrap();
    drop(s);
    // Zero the last record: the persisted commit LSN is now beyond valid WAL.
    let path = dir.path().join("000000010000000000000002.partial");
    let mut bytes = fs::read(&path).unwrap();
    let off = pos[2].0.segment_offset(SEG) as usize;
    bytes[off..off + 1000].fill(0);
    fs::write(&path, &bytes).unwrap();
    let e =
        PhysicalStorage::open(config(dir.path()), start_positions(START, pos[2].1)).unwrap_err();
    assert!(matches!(e, StorageError::CommittedWalMissing { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&pos[2].1.to_string()) && msg.contains(&pos[1].1.to_string()),
        "{msg}"
    );
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
}

#[test]
fn open_completes_partial_segments_below_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = new_storage(dir.path(), START);
    let (wal, pos) = generate(START, &vec![30_000; 60]);
    let end = pos.last().unwrap().1;
    s.write_wal(START, &wal).unwrap();
    s.flush().unwrap();
    drop(s);
    // A crash that lost the rename of the completed segment.
    fs::rename(
        dir.path().join("000000010000000000000002"),
        dir.path().join("000000010000000000000002.partial"),
    )
    .unwrap();
    // And a temp file of a preallocation.
    fs::write(
        dir.path().join("000000010000000000000004.partial.___temp"),
        b"x",
    )
    .unwrap();
    let s = PhysicalStorage::open(config(dir.path()), start_positions(START, pos[40].1)).unwrap();
    assert_eq!(s.flush_lsn(), end);
    assert_eq!(
        segment_files(dir.path()),
        vec![
            "000000010000000000000002",
            "000000010000000000000003.partial"
        ]
    );
}

#[test]
fn open_without_segments() {
    let dir = tempfile::tempdir().unwrap();
    // Never elected: uninitialized.
    let s = PhysicalStorage::open(
        config(dir.path()),
        start_positions(Lsn::INVALID, Lsn::INVALID),
    )
    .unwrap();
    assert!(!s.is_initialized());
    assert_eq!(s.flush_lsn(), Lsn::INVALID);
    // Start persisted but the segment never created: it is created now.
    let s =
        PhysicalStorage::open(config(dir.path()), start_positions(START, Lsn::INVALID)).unwrap();
    assert_eq!(s.flush_lsn(), START);
    assert_eq!(
        segment_files(dir.path()),
        vec!["000000010000000000000002.partial"]
    );
    // Segments without a start position contradict the control file.
    let e = PhysicalStorage::open(
        config(dir.path()),
        start_positions(Lsn::INVALID, Lsn::INVALID),
    )
    .unwrap_err();
    assert!(matches!(e, StorageError::Inconsistent { .. }), "{e}");
    // A committed position with no WAL at all is an error.
    let empty = dir.path().join("e");
    fs::create_dir(&empty).unwrap();
    let e = PhysicalStorage::open(config(&empty), start_positions(START, Lsn(START.0 + 64)))
        .unwrap_err();
    assert!(matches!(e, StorageError::CommittedWalMissing { .. }), "{e}");
    let mut bad = config(&empty);
    bad.seg_size = 12345;
    let e = PhysicalStorage::open(bad, start_positions(Lsn::INVALID, Lsn::INVALID)).unwrap_err();
    assert!(e.to_string().contains("12345"), "{e}");
}

#[test]
fn start_at_a_page_boundary_and_at_a_segment_boundary() {
    for start in [Lsn(2 * SEG + 3 * 8192), Lsn(2 * SEG)] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = new_storage(dir.path(), start);
        // At a boundary the compute's stream carries the page header itself.
        let (wal, pos) = generate(start, &[100, 70_000]);
        s.write_wal(start, &wal).unwrap();
        s.flush().unwrap();
        assert_eq!(s.flush_lsn(), pos[1].1);
        drop(s);
        let s =
            PhysicalStorage::open(config(dir.path()), start_positions(start, pos[0].1)).unwrap();
        assert_eq!(s.flush_lsn(), pos[1].1);
        let seg_start = Lsn(2 * SEG);
        let back = read_all(dir.path(), start, seg_start, pos[1].1);
        let mut expect = synthesize_prefix(config(dir.path()).writer_config(), start);
        expect.extend_from_slice(&wal);
        assert_eq!(back, expect);
    }
}

#[test]
fn wal_removal_keeps_the_horizon_segment_and_partials() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = new_storage(dir.path(), START);
    let (wal, pos) = generate(START, &vec![30_000; 100]); // segments 2..=4
    let end = pos.last().unwrap().1;
    s.write_wal(START, &wal).unwrap();
    s.flush().unwrap();
    assert_eq!(end.segment_number(SEG), 4);
    let removed = remove_segments_below(&config(dir.path()), Lsn(3 * SEG + 5)).unwrap();
    assert_eq!(removed, vec![2]);
    let removed = remove_segments_below(&config(dir.path()), Lsn(9 * SEG)).unwrap();
    assert_eq!(removed, vec![3], "the open segment is never removed");
    assert_eq!(
        segment_files(dir.path()),
        vec!["000000010000000000000004.partial"]
    );
    let e = WalReader::new(&config(dir.path()), START, START)
        .unwrap()
        .read_to_vec(end)
        .unwrap_err();
    assert!(matches!(e, StorageError::NotAvailable { .. }), "{e}");
    assert!(e.to_string().contains("000000010000000000000002"), "{e}");
    // The storage keeps working.
    s.flush().unwrap();
}

#[test]
fn flush_due_after_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = new_storage(dir.path(), START);
    let now = Instant::now();
    assert!(!s.flush_due(now));
    let (wal, _) = generate(START, &[10]);
    s.write_wal(START, &wal).unwrap();
    assert!(!s.flush_due(Instant::now()));
    assert!(s.flush_due(Instant::now() + FLUSH_INTERVAL));
    s.flush().unwrap();
    assert!(!s.flush_due(Instant::now() + FLUSH_INTERVAL));
}

#[test]
fn system_id_mismatch_is_invalid_wal() {
    let dir = tempfile::tempdir().unwrap();
    let start = Lsn(2 * SEG);
    let mut s = new_storage(dir.path(), start);
    let mut other = config(dir.path()).writer_config();
    other.system_id = SYSID + 1;
    let mut w = WalWriter::new(other, start, Lsn::INVALID);
    let (_, e) = w.append(XLogRecordBuilder::new(RM_XLOG_ID, XLOG_NOOP).main_data(&[1; 10]));
    w.zero_until(e);
    let err = s.write_wal(start, w.bytes()).unwrap_err();
    assert!(err.to_string().contains("different system"), "{err}");
}

#[test]
fn initialize_refuses_impossible_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = PhysicalStorage::open(
        config(dir.path()),
        start_positions(Lsn::INVALID, Lsn::INVALID),
    )
    .unwrap();
    for bad in [
        Lsn::INVALID,
        Lsn(START.0 + 3),        // unaligned
        Lsn(2 * SEG + 16),       // inside the long header
        Lsn(2 * SEG + 8192 + 8), // inside a short header
    ] {
        let e = s.initialize(bad).unwrap_err();
        assert!(
            e.to_string().contains("not a possible record start"),
            "{bad}: {e}"
        );
    }
    assert_eq!(segment_files(dir.path()), Vec::<String>::new());
    s.initialize(Lsn(2 * SEG + 40)).unwrap();
}

#[test]
fn truncate_at_commit_after_the_previous_segment_was_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = new_storage(dir.path(), START);
    let mut w = WalWriter::new(config(dir.path()).writer_config(), START, Lsn::INVALID);
    w.append(XLogRecordBuilder::new(RM_XLOG_ID, XLOG_NOOP).main_data(&[1; 10]));
    let (_, switch_end) = w.switch();
    let (_, e3) = w.append(XLogRecordBuilder::new(RM_XLOG_ID, XLOG_NOOP).main_data(&[3; 10]));
    w.zero_until(e3);
    s.write_wal(START, w.bytes()).unwrap();
    s.flush().unwrap();
    s.set_commit_lsn(switch_end);
    assert_eq!(
        remove_segments_below(&config(dir.path()), switch_end).unwrap(),
        vec![2]
    );
    s.truncate(switch_end).unwrap();
    assert_eq!(s.flush_lsn(), switch_end);
}

/// A `size` tmpfs mounted for the test (root only; `None` elsewhere).
struct SmallTmpfs(tempfile::TempDir);

impl SmallTmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallTmpfs(dir))
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn a_segment_that_does_not_fit_is_an_error_and_leaves_nothing_behind() {
    // Room for one 1 MiB segment, not two.
    let Some(fs) = SmallTmpfs::mount("1536k") else {
        eprintln!("cannot mount a tmpfs here (not root?): nothing checked");
        return;
    };
    let dir = fs.0.path();
    create_segment(&utils::vfs::OsFs, dir, 1, SEG, &[], Sync::No).expect("the first segment fits");
    let e = create_segment(&utils::vfs::OsFs, dir, 2, SEG, &[], Sync::No).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("preallocate") && msg.contains("No space left"),
        "{msg}"
    );
    let names = segment_files(dir);
    assert_eq!(names.len(), 1, "no second segment, no temp file: {names:?}");
}
