//! Crafted edge cases for the streaming decoder, built with [`crate::wal_generate`].

use super::*;
use crate::v15::{
    RM_HEAP_ID, RM_XLOG_ID, XLOG_NOOP, XLOG_SWITCH, XLP_FIRST_IS_OVERWRITE_CONTRECORD,
};
use crate::wal_generate::{WalWriter, WalWriterConfig, XLogRecordBuilder};
use proptest::prelude::*;

const SEG: u64 = 1024 * 1024;
const SYSID: u64 = 0x5EED;

fn wcfg() -> WalWriterConfig {
    WalWriterConfig {
        version: PgMajorVersion::V15,
        seg_size: SEG,
        system_id: SYSID,
        timeline: 1,
    }
}

fn dcfg() -> WalDecoderConfig {
    WalDecoderConfig {
        version: PgMajorVersion::V15,
        seg_size: SEG,
        system_id: Some(SYSID),
    }
}

/// A record with `main_len` bytes of main data (a byte pattern that depends on `seed`).
fn rec(main_len: usize, seed: u8) -> XLogRecordBuilder {
    let data: Vec<u8> = (0..main_len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    XLogRecordBuilder::new(RM_XLOG_ID, XLOG_NOOP)
        .xid(seed as u32)
        .main_data(&data)
}

/// Total record length for `main_len` bytes of main data.
fn tot_len(main_len: usize) -> usize {
    match main_len {
        0 => 24,
        1..=255 => 26 + main_len,
        _ => 29 + main_len,
    }
}

/// Main data length that makes a record exactly `tot` bytes (tot >= 24, != 25).
fn main_len_for(tot: usize) -> usize {
    if tot == 24 {
        0
    } else if tot - 26 <= 255 {
        tot - 26
    } else {
        tot - 29
    }
}

fn decode_all(start: Lsn, bytes: &[u8], chunk: usize) -> (Vec<(Lsn, Lsn)>, Option<WalDecodeError>) {
    let mut d = WalStreamDecoder::new(start, dcfg());
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        d.feed_bytes(piece);
        loop {
            match d.poll_decode() {
                Ok(Some((s, e, r))) => {
                    assert_eq!(r.lsn, s);
                    out.push((s, e));
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

#[test]
fn records_across_pages_any_chunking() {
    let start = Lsn(SEG);
    let mut w = WalWriter::new(wcfg(), start, Lsn::INVALID);
    let mut expected = Vec::new();
    for (i, len) in [0usize, 10, 300, 9000, 5, 17000, 255, 256, 8100, 3]
        .iter()
        .enumerate()
    {
        expected.push(w.append(rec(*len, i as u8)));
    }
    for chunk in [1, 7, 24, 100, 8192, 1 << 20] {
        let (got, err) = decode_all(start, w.bytes(), chunk);
        assert!(err.is_none(), "chunk {chunk}: {err:?}");
        assert_eq!(got, expected, "chunk {chunk}");
    }
}

#[test]
fn decoded_bytes_are_the_record_as_written() {
    let start = Lsn(SEG);
    let mut w = WalWriter::new(wcfg(), start, Lsn::INVALID);
    let r1 = rec(20000, 1).prev(Lsn::INVALID).build();
    w.append_raw(&r1);
    let mut d = WalStreamDecoder::new(start, dcfg());
    d.feed_bytes(w.bytes());
    let (_, _, got) = d.poll_decode().unwrap().unwrap();
    assert_eq!(got.raw, r1, "reassembly restores the exact record bytes");
    assert_eq!(got.main_data.len(), 20000);
}

#[test]
fn record_crossing_a_segment_boundary() {
    // Start near the end of segment 1 and write a record that spills into segment 2.
    let start = Lsn(2 * SEG - 8192 + 1000);
    let mut w = WalWriter::new(wcfg(), start, Lsn::INVALID);
    let (s1, e1) = w.append(rec(12000, 1));
    let (s2, e2) = w.append(rec(40, 2));
    assert!(s1 < Lsn(2 * SEG) && e1 > Lsn(2 * SEG));
    let (got, err) = decode_all(start, w.bytes(), 333);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, vec![(s1, e1), (s2, e2)]);
    // The second segment's first page has the long header and the continuation.
    let off = (2 * SEG - start.0) as usize;
    let h = XLogPageHeader::decode(&w.bytes()[off..]).unwrap();
    assert!(h.long.is_some() && h.is_contrecord());

    // Decoding segment 2 alone skips the continuation and finds the second record.
    let (got, err) = decode_all(Lsn(2 * SEG), &w.bytes()[off..], 4096);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, vec![(s2, e2)]);
}

#[test]
fn record_ending_exactly_at_a_page_boundary() {
    let start = Lsn(SEG);
    let mut w = WalWriter::new(wcfg(), start, Lsn::INVALID);
    let (s0, e0) = w.append(rec(100, 0));
    // Fill the rest of the first page exactly.
    let room = (e0.remaining_in_page()) as usize;
    let (s1, e1) = w.append(rec(main_len_for(room), 1));
    assert_eq!(e1, Lsn(SEG + 8192), "end LSN stays at the page boundary");
    let (s2, e2) = w.append(rec(8, 2));
    assert_eq!(
        s2,
        Lsn(SEG + 8192 + 24),
        "next record starts after the short header"
    );
    let h = XLogPageHeader::decode(&w.bytes()[8192..]).unwrap();
    assert!(!h.is_contrecord());
    // Also a multi-page record ending at a page boundary.
    let room = e2.remaining_in_page() as usize + 8192 - 24;
    let (s3, e3) = w.append(rec(main_len_for(room), 3));
    assert_eq!(e3, Lsn(SEG + 3 * 8192));
    let (s4, e4) = w.append(rec(0, 4));
    for chunk in [1, 5, 8192] {
        let (got, err) = decode_all(start, w.bytes(), chunk);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got, vec![(s0, e0), (s1, e1), (s2, e2), (s3, e3), (s4, e4)]);
    }
    // A decoder started at the boundary (what PostgreSQL reports as the end LSN) works too.
    let off = (e1.0 - start.0) as usize;
    let (got, err) = decode_all(e1, &w.bytes()[off..], 100);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got[0], (s2, e2));
}

#[test]
fn record_header_split_across_pages() {
    // Records starting 8 and 16 bytes before a page end: even the 24-byte header continues on
    // the next page, after its page header.
    for before_end in [8usize, 16] {
        let start = Lsn(SEG);
        let mut w = WalWriter::new(wcfg(), start, Lsn::INVALID);
        let (s0, e0) = w.append(rec(10, 0));
        let room = e0.remaining_in_page() as usize - before_end;
        let r1 = w.append(rec(main_len_for(room), 1));
        assert_eq!(r1.1.remaining_in_page() as usize, before_end);
        let r2 = w.append(rec(40, 2));
        assert_eq!(r2.0.page_offset() as usize, 8192 - before_end);
        let r3 = w.append(rec(0, 3));
        for chunk in [1, 3, 8192] {
            let (got, err) = decode_all(start, w.bytes(), chunk);
            assert!(err.is_none(), "{err:?}");
            assert_eq!(got, vec![(s0, e0), r1, r2, r3]);
        }
        // An invalid rmgr in a split header is still caught, with the record's LSN.
        let mut bad = w.bytes().to_vec();
        let hdr_on_next_page = 8192 + 24 + (17 - before_end);
        bad[hdr_on_next_page] = 99;
        let (_, e) = first_error(start, &bad);
        assert_eq!(e.lsn, r2.0);
        assert_eq!(
            e.kind,
            WalDecodeErrorKind::Record(RecordErrorKind::InvalidRmgr(99))
        );
    }
}

#[test]
fn xlog_switch_skips_to_the_next_segment() {
    let start = Lsn(SEG + 40);
    let mut w = WalWriter::new(wcfg(), start, Lsn::INVALID);
    let (s0, e0) = w.append(rec(50, 0));
    let (sw, ew) = w.switch();
    assert_eq!(ew, Lsn(2 * SEG));
    let (s1, e1) = w.append(rec(10, 1));
    assert_eq!(s1, Lsn(2 * SEG + 40));
    let (got, err) = decode_all(start, w.bytes(), 10_000);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, vec![(s0, e0), (sw, Lsn(2 * SEG)), (s1, e1)]);
    // The switch record is yielded as soon as its own bytes are in, before the padding.
    let mut d = WalStreamDecoder::new(start, dcfg());
    let off = (sw.0 - start.0) as usize + 24;
    d.feed_bytes(&w.bytes()[..off]);
    assert_eq!(d.poll_decode().unwrap().unwrap().0, s0);
    let (s, e, r) = d.poll_decode().unwrap().unwrap();
    assert_eq!((s, e), (sw, Lsn(2 * SEG)));
    assert_eq!((r.rmid(), r.rmgr_info()), (RM_XLOG_ID, XLOG_SWITCH));
}

#[test]
fn torn_last_record_is_not_an_error() {
    let start = Lsn(SEG);
    let mut w = WalWriter::new(wcfg(), start, Lsn::INVALID);
    let first = w.append(rec(30, 0));
    let (s1, _) = w.append(rec(20000, 1));
    let bytes = w.bytes();
    for cut in [
        (s1.0 - start.0) as usize + 2,
        (s1.0 - start.0) as usize + 30,
        8192,
        8192 + 10,
        bytes.len() - 1,
    ] {
        let (got, err) = decode_all(start, &bytes[..cut], 1000);
        assert!(err.is_none(), "cut at {cut}: {err:?}");
        assert_eq!(got, vec![first], "cut at {cut}");
    }
}

fn first_error(start: Lsn, bytes: &[u8]) -> (Vec<(Lsn, Lsn)>, WalDecodeError) {
    let (got, err) = decode_all(start, bytes, 1 << 20);
    match err {
        Some(e) => (got, e),
        None => panic!("expected an error, decoded {got:?}"),
    }
}

#[test]
fn corrupt_records_are_reported_with_their_lsn() {
    let start = Lsn(SEG);
    let mut w = WalWriter::new(wcfg(), start, Lsn::INVALID);
    let r0 = w.append(rec(30, 0));
    let (s1, _) = w.append(rec(9000, 1));
    w.append(rec(10, 2));
    let good = w.bytes().to_vec();
    let off1 = (s1.0 - start.0) as usize;

    // Bad CRC: flip a byte of the second record's main data on its second page.
    let mut bad = good.clone();
    bad[8192 + 100] ^= 1;
    let (got, e) = first_error(start, &bad);
    assert_eq!(got, vec![r0]);
    assert_eq!(e.lsn, s1);
    assert!(matches!(
        e.kind,
        WalDecodeErrorKind::Record(RecordErrorKind::BadCrc { .. })
    ));
    assert!(e.to_string().contains(&s1.to_string()), "{e}");

    // Unknown resource manager.
    let mut bad = good.clone();
    bad[off1 + 17] = 77;
    let (_, e) = first_error(start, &bad);
    assert_eq!(e.lsn, s1);
    assert_eq!(
        e.kind,
        WalDecodeErrorKind::Record(RecordErrorKind::InvalidRmgr(77))
    );

    // A length past anything PostgreSQL writes.
    let mut bad = good.clone();
    bad[off1..off1 + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let (_, e) = first_error(start, &bad);
    assert_eq!(
        (e.lsn, e.kind),
        (s1, RecordErrorKind::TooLong(u32::MAX).into())
    );

    // A length past the end of the record's contents: the main-data length runs over.
    let inner = rec(40, 9).prev(r0.0).build();
    let mut inner = inner.to_vec();
    inner[25] = 200; // XLR_BLOCK_ID_DATA_SHORT length
    let crc = crate::xlog_record::record_crc(&inner);
    inner[20..24].copy_from_slice(&crc.to_le_bytes());
    let mut w2 = WalWriter::new(wcfg(), start, Lsn::INVALID);
    w2.append(rec(30, 0));
    let (s, _) = w2.append_raw(&inner);
    let (_, e) = first_error(start, w2.bytes());
    assert_eq!(e.lsn, s);
    assert!(
        matches!(
            e.kind,
            WalDecodeErrorKind::Record(RecordErrorKind::PayloadMismatch { .. })
        ),
        "{e}"
    );

    // A zeroed tail is the usual end of WAL.
    let mut bad = good.clone();
    bad[off1..].fill(0);
    let (got, e) = first_error(start, &bad);
    assert_eq!(got, vec![r0]);
    assert!(e.is_zeroed(), "{e}");
    assert_eq!(e.lsn, s1);
}

#[test]
fn page_level_corruption() {
    let start = Lsn(SEG);
    let mut w = WalWriter::new(wcfg(), start, Lsn::INVALID);
    w.append(rec(30, 0));
    w.append(rec(9000, 1));
    w.append(rec(10, 2));
    let good = w.bytes().to_vec();
    let page2 = Lsn(SEG + 8192);

    // A recycled page: old pageaddr.
    let mut bad = good.clone();
    bad[8192 + 8..8192 + 16].copy_from_slice(&(SEG - 8192).to_le_bytes());
    let (_, e) = first_error(start, &bad);
    assert_eq!(e.lsn, page2);
    assert!(matches!(
        e.kind,
        WalDecodeErrorKind::PageHeader(PageHeaderError::UnexpectedPageAddr { .. })
    ));

    // Continuation without the flag.
    let mut bad = good.clone();
    bad[8192 + 2] = 0;
    let (_, e) = first_error(start, &bad);
    assert_eq!(
        (e.lsn, e.kind),
        (page2, WalDecodeErrorKind::MissingContrecord)
    );

    // Wrong xlp_rem_len.
    let mut bad = good.clone();
    bad[8192 + 16] ^= 4;
    let (_, e) = first_error(start, &bad);
    assert!(matches!(
        e.kind,
        WalDecodeErrorKind::BadContrecordLength { .. }
    ));

    // Another cluster's WAL.
    let mut d = WalStreamDecoder::new(
        start,
        WalDecoderConfig {
            system_id: Some(1),
            ..dcfg()
        },
    );
    d.feed_bytes(&good);
    let e = d.poll_decode().unwrap_err();
    assert!(matches!(
        e.kind,
        WalDecodeErrorKind::PageHeader(PageHeaderError::SystemIdMismatch { .. })
    ));
    assert_eq!(d.poll_decode().unwrap_err(), e, "errors are sticky");

    // A timeline going backwards.
    let mut bad = good.clone();
    bad[4..8].copy_from_slice(&5u32.to_le_bytes());
    let (_, e) = first_error(start, &bad);
    assert!(matches!(
        e.kind,
        WalDecodeErrorKind::TimelineWentBackwards {
            found: 1,
            previous: 5
        }
    ));
}

#[test]
fn prev_link_is_checked() {
    let start = Lsn(SEG);
    let mut w = WalWriter::new(wcfg(), start, Lsn::INVALID);
    let (s0, _) = w.append(rec(30, 0));
    let wrong = rec(30, 1).prev(Lsn(0x1234_5678)).build();
    let (s1, _) = w.append_raw(&wrong);
    let (got, e) = first_error(start, w.bytes());
    assert_eq!(got.len(), 1);
    assert_eq!(e.lsn, s1);
    assert_eq!(
        e.kind,
        WalDecodeErrorKind::Record(RecordErrorKind::BadPrevLink {
            found: Lsn(0x1234_5678),
            expected: s0
        })
    );
    // with_prev_record checks the very first record too.
    let mut d = WalStreamDecoder::new(start, dcfg()).with_prev_record(Lsn(8));
    d.feed_bytes(w.bytes());
    assert!(matches!(
        d.poll_decode().unwrap_err().kind,
        WalDecodeErrorKind::Record(RecordErrorKind::BadPrevLink { .. })
    ));
}

#[test]
fn overwrite_contrecord_abandons_the_partial_record() {
    // A record started on page 1 but the server crashed; after recovery, page 2 starts with
    // XLP_FIRST_IS_OVERWRITE_CONTRECORD and a fresh record.
    let start = Lsn(SEG);
    let mut w = WalWriter::new(wcfg(), start, Lsn::INVALID);
    let r0 = w.append(rec(30, 0));
    let (s_partial, _) = w.append(rec(9000, 1));
    let mut bytes = w.bytes()[..8192].to_vec();
    let mut w2 = WalWriter::new(wcfg(), Lsn(SEG + 8192), r0.0);
    let r2 = w2.append(rec(16, 2));
    let mut page2 = w2.bytes().to_vec();
    page2[2..4].copy_from_slice(&XLP_FIRST_IS_OVERWRITE_CONTRECORD.to_le_bytes());
    bytes.extend_from_slice(&page2);
    let mut d = WalStreamDecoder::new(start, dcfg());
    d.feed_bytes(&bytes);
    assert_eq!(d.poll_decode().unwrap().map(|(s, e, _)| (s, e)), Some(r0));
    assert_eq!(d.poll_decode().unwrap().map(|(s, e, _)| (s, e)), Some(r2));
    assert_eq!(d.aborted_record(), Some(s_partial));
    assert!(d.poll_decode().unwrap().is_none());
}

#[test]
fn start_positions() {
    let start = Lsn(SEG);
    let mut w = WalWriter::new(wcfg(), start, Lsn::INVALID);
    let recs: Vec<_> = (0..40).map(|i| w.append(rec(700, i))).collect();
    // Mid-page at a record boundary.
    let (s, _) = recs[5];
    let off = (s.0 - start.0) as usize;
    let (got, err) = decode_all(s, &w.bytes()[off..], 999);
    assert!(err.is_none());
    assert_eq!(got, recs[5..].to_vec());
    // A page boundary in the middle of a record: skip to the next record.
    let page = Lsn(SEG + 2 * 8192);
    let (got, err) = decode_all(page, &w.bytes()[2 * 8192..], 999);
    assert!(err.is_none());
    assert_eq!(got[0].0, recs.iter().find(|(s, _)| *s > page).unwrap().0);
    // Not a possible record start.
    for bad in [Lsn(SEG + 8192 + 8), Lsn(SEG + 8), Lsn(SEG + 8192 + 41)] {
        let mut d = WalStreamDecoder::new(bad, dcfg());
        d.feed_bytes(&[0; 100]);
        assert_eq!(
            d.poll_decode().unwrap_err().kind,
            WalDecodeErrorKind::InvalidStartLsn
        );
    }
}

#[test]
fn continuation_spanning_whole_pages_is_skipped_at_start() {
    let start = Lsn(SEG);
    let mut w = WalWriter::new(wcfg(), start, Lsn::INVALID);
    w.append(rec(30, 0));
    w.append(rec(40000, 1)); // covers pages 1..=5 entirely
    let last = w.append(rec(30, 2));
    let (got, err) = decode_all(Lsn(SEG + 2 * 8192), &w.bytes()[2 * 8192..], 1234);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, vec![last]);
}

#[test]
fn heap_record_with_blocks_survives_reassembly() {
    use crate::types::{ForkNumber, RelFileNode};
    use crate::wal_generate::{BlockRefSpec, ImageSpec};
    let rel = RelFileNode {
        spc_node: 1663,
        db_node: 5,
        rel_node: 16384,
    };
    let mut page = vec![0u8; 8192];
    page[12..14].copy_from_slice(&40u16.to_le_bytes());
    page[14..16].copy_from_slice(&100u16.to_le_bytes());
    page[100..].fill(0xAB);
    let start = Lsn(SEG + 8000);
    let mut w = WalWriter::new(wcfg(), start, Lsn::INVALID);
    let (s, e) = w.append(
        XLogRecordBuilder::new(RM_HEAP_ID, 0)
            .xid(900)
            .block(BlockRefSpec {
                block_id: 0,
                rel,
                fork: ForkNumber::Main,
                blkno: 42,
                will_init: false,
                image: Some(ImageSpec::new(&page, true, None)),
                data: vec![1, 2, 3],
            })
            .main_data(&[3, 0, 0]),
    );
    let mut d = WalStreamDecoder::new(start, dcfg());
    d.feed_bytes(w.bytes());
    let (gs, ge, r) = d.poll_decode().unwrap().unwrap();
    assert_eq!((gs, ge), (s, e));
    let b = r.block(0).unwrap();
    assert_eq!(b.blkno, 42);
    assert_eq!(r.restore_image(b).unwrap().unwrap().as_ref(), &page[..]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_record_sizes_and_chunks(
        lens in proptest::collection::vec(prop_oneof![0usize..300, 0usize..20000], 1..30),
        chunk in 1usize..20000,
        start_off in 0u64..3,
    ) {
        let start = Lsn(SEG + 40 + start_off * 8);
        let mut w = WalWriter::new(wcfg(), start, Lsn::INVALID);
        let expected: Vec<_> = lens.iter().enumerate().map(|(i, l)| w.append(rec(*l, i as u8))).collect();
        let (got, err) = decode_all(start, w.bytes(), chunk);
        prop_assert!(err.is_none(), "{:?}", err);
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn garbage_never_panics(garbage in proptest::collection::vec(any::<u8>(), 0..3000), at in 0usize..20000) {
        let start = Lsn(SEG);
        let mut w = WalWriter::new(wcfg(), start, Lsn::INVALID);
        for i in 0..5 {
            w.append(rec(3000, i));
        }
        let mut bytes = w.bytes().to_vec();
        let at = at.min(bytes.len());
        let end = (at + garbage.len()).min(bytes.len());
        bytes[at..end].copy_from_slice(&garbage[..end - at]);
        let _ = decode_all(start, &bytes, 777);
    }
}

#[test]
fn tot_len_helper_matches_builder() {
    for len in [0usize, 1, 255, 256, 5000] {
        assert_eq!(rec(len, 0).build().len(), tot_len(len));
        assert_eq!(main_len_for(tot_len(len)), len);
    }
}
