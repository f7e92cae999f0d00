//! Proposer protocol v3 and feedback block: fixed byte vectors written by hand from the
//! layout table (docs/safekeeper_protocol.md), property round-trips, and malformed input.

// Test helpers outside #[test] functions panic on broken fixtures, which is what we want.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use safekeeper_api::feedback::PageserverFeedback;
use safekeeper_api::membership::{Configuration, Generation, Member};
use safekeeper_api::proto::*;
use safekeeper_api::term::{TermHistory, TermLsn};
use safekeeper_api::{AcceptorMessage, ProposerMessage, ProtoError, ReplicationCommand};
use utils::pg_time::from_pg_timestamp;
use utils::{Lsn, NodeId, TenantId, TimelineId};

/// Hex with any whitespace, to lay vectors out field by field.
fn h(s: &str) -> Vec<u8> {
    let compact: String = s.split_whitespace().collect();
    hex::decode(compact).unwrap()
}

/// A NUL-terminated ASCII string's bytes.
fn c(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn enc_p(m: &ProposerMessage) -> Vec<u8> {
    let mut b = BytesMut::new();
    m.encode(&mut b).unwrap();
    b.to_vec()
}

fn enc_a(m: &AcceptorMessage) -> Vec<u8> {
    let mut b = BytesMut::new();
    m.encode(&mut b).unwrap();
    b.to_vec()
}

fn hist(e: &[(u64, u64)]) -> TermHistory {
    TermHistory(e.iter().map(|&(t, l)| TermLsn::new(t, Lsn(l))).collect())
}

fn member(id: u64, host: &str, port: u16) -> Member {
    Member {
        node_id: NodeId(id),
        host: host.into(),
        pg_port: port,
    }
}

const TENANT: &str = "0123456789abcdef0123456789abcdef";
const TIMELINE: &str = "fedcba9876543210fedcba9876543210";

// ---------------------------------------------------------------------------------------
// The vectors: (message, bytes).

fn proposer_greeting() -> (ProposerMessage, Vec<u8>) {
    let m = ProposerMessage::Greeting(ProposerGreeting {
        tenant_id: TENANT.parse().unwrap(),
        timeline_id: TIMELINE.parse().unwrap(),
        mconf: Configuration::new(Generation(1), vec![member(1, "sk1", 5454)]),
        pg_version: 150007,
        system_id: 0x7000_0000_0000_0001,
        wal_seg_size: 16 * 1024 * 1024,
    });
    let bytes = cat(&[
        h("67"),
        c(TENANT),
        c(TIMELINE),
        h("00000001"),         // generation
        h("00000001"),         // one member
        h("0000000000000001"), // node_id
        c("sk1"),              // host
        h("154e"),             // pg_port 5454
        h("00000000"),         // not joint
        h("000249f7"),         // pg_version 150007
        h("7000000000000001"), // system_id
        h("01000000"),         // wal_seg_size 16 MiB
    ]);
    (m, bytes)
}

fn proposer_greeting_no_mconf() -> (ProposerMessage, Vec<u8>) {
    let m = ProposerMessage::Greeting(ProposerGreeting {
        tenant_id: TENANT.parse().unwrap(),
        timeline_id: TIMELINE.parse().unwrap(),
        mconf: Configuration::empty(),
        pg_version: 150000,
        system_id: 0,
        wal_seg_size: 0x0100_0000,
    });
    let bytes = cat(&[
        h("67"),
        c(TENANT),
        c(TIMELINE),
        h("00000000 00000000 00000000"), // generation 0, no members, not joint
        h("000249f0 0000000000000000 01000000"),
    ]);
    (m, bytes)
}

fn acceptor_greeting() -> (AcceptorMessage, Vec<u8>) {
    let m = AcceptorMessage::Greeting(AcceptorGreeting {
        node_id: NodeId(3),
        mconf: Configuration {
            generation: Generation(4),
            members: vec![member(1, "a", 1)],
            new_members: Some(vec![member(2, "b", 2)]),
        },
        term: 9,
    });
    let bytes = cat(&[
        h("67 0000000000000003"),
        h("00000004 00000001 0000000000000001"),
        c("a"),
        h("0001 00000001 0000000000000002"),
        c("b"),
        h("0002"),
        h("0000000000000009"),
    ]);
    (m, bytes)
}

fn vote_request() -> (ProposerMessage, Vec<u8>) {
    let m = ProposerMessage::VoteRequest(VoteRequest {
        generation: Generation(7),
        term: 0x0102_0304_0506_0708,
    });
    (m, h("76 00000007 0102030405060708"))
}

fn vote_response() -> (AcceptorMessage, Vec<u8>) {
    let m = AcceptorMessage::VoteResponse(VoteResponse {
        generation: Generation(1),
        term: 5,
        vote_given: true,
        flush_lsn: Lsn(0x0100_0028),
        truncate_lsn: Lsn(0x0100_0000),
        term_history: hist(&[(1, 0x0100_0000), (5, 0x0100_0028)]),
    });
    let bytes = h("76 00000001 0000000000000005 01
                   0000000001000028 0000000001000000
                   00000002 0000000000000001 0000000001000000
                            0000000000000005 0000000001000028");
    (m, bytes)
}

fn vote_refused_empty_history() -> (AcceptorMessage, Vec<u8>) {
    let m = AcceptorMessage::VoteResponse(VoteResponse {
        generation: Generation::NONE,
        term: 8,
        vote_given: false,
        flush_lsn: Lsn(0),
        truncate_lsn: Lsn(0),
        term_history: TermHistory::empty(),
    });
    let bytes = h("76 00000000 0000000000000008 00 0000000000000000 0000000000000000 00000000");
    (m, bytes)
}

fn proposer_elected() -> (ProposerMessage, Vec<u8>) {
    let m = ProposerMessage::Elected(ProposerElected {
        generation: Generation::NONE,
        term: 6,
        start_streaming_at: Lsn(0x0100_0028),
        term_history: hist(&[(5, 0x0100_0028), (6, 0x0200_0000)]),
    });
    let bytes = h("65 00000000 0000000000000006 0000000001000028
                   00000002 0000000000000005 0000000001000028
                            0000000000000006 0000000002000000");
    (m, bytes)
}

fn append_request() -> (ProposerMessage, Vec<u8>) {
    let m = ProposerMessage::AppendRequest(AppendRequest {
        h: AppendRequestHeader {
            generation: Generation(2),
            term: 6,
            begin_lsn: Lsn(0x10),
            end_lsn: Lsn(0x13),
            commit_lsn: Lsn(0x8),
            truncate_lsn: Lsn(0x4),
        },
        wal_data: Bytes::from_static(b"abc"),
    });
    let bytes = h(
        "61 00000002 0000000000000006 0000000000000010 0000000000000013
                   0000000000000008 0000000000000004 616263",
    );
    (m, bytes)
}

fn heartbeat_append_request() -> (ProposerMessage, Vec<u8>) {
    let m = ProposerMessage::AppendRequest(AppendRequest {
        h: AppendRequestHeader {
            generation: Generation::NONE,
            term: 1,
            begin_lsn: Lsn(0x20),
            end_lsn: Lsn(0x20),
            commit_lsn: Lsn(0x20),
            truncate_lsn: Lsn(0),
        },
        wal_data: Bytes::new(),
    });
    let bytes = h(
        "61 00000000 0000000000000001 0000000000000020 0000000000000020
                   0000000000000020 0000000000000000",
    );
    (m, bytes)
}

fn append_response() -> (AcceptorMessage, Vec<u8>) {
    let m = AcceptorMessage::AppendResponse(AppendResponse {
        generation: Generation(2),
        term: 6,
        flush_lsn: Lsn(0x13),
        commit_lsn: Lsn(0x10),
        hs_feedback: HotStandbyFeedback {
            ts: -1,
            xmin: 0x0000_0001_0000_0200,
            catalog_xmin: 0,
        },
        pageserver_feedback: None,
    });
    let bytes = h(
        "61 00000002 0000000000000006 0000000000000013 0000000000000010
                   ffffffffffffffff 0000000100000200 0000000000000000",
    );
    (m, bytes)
}

fn feedback() -> (PageserverFeedback, Vec<u8>) {
    let fb = PageserverFeedback {
        current_timeline_size: 0x2000,
        last_received_lsn: Lsn(0x0100_0100),
        disk_consistent_lsn: Lsn(0x0100_0080),
        remote_consistent_lsn: Lsn(0x0100_0000),
        replytime: from_pg_timestamp(0x0002_dc6c_0ead_8a00),
        shard_number: 0,
        corruption_detected: false,
    };
    let bytes = cat(&[
        h("05"),
        c("current_timeline_size"),
        h("00000008 0000000000002000"),
        c("ps_writelsn"),
        h("00000008 0000000001000100"),
        c("ps_flushlsn"),
        h("00000008 0000000001000080"),
        c("ps_applylsn"),
        h("00000008 0000000001000000"),
        c("ps_replytime"),
        h("00000008 0002dc6c0ead8a00"),
    ]);
    (fb, bytes)
}

fn feedback_sharded_corrupt() -> (PageserverFeedback, Vec<u8>) {
    let fb = PageserverFeedback {
        shard_number: 3,
        corruption_detected: true,
        ..PageserverFeedback::empty()
    };
    let bytes = cat(&[
        h("07"),
        c("current_timeline_size"),
        h("00000008 0000000000000000"),
        c("ps_writelsn"),
        h("00000008 0000000000000000"),
        c("ps_flushlsn"),
        h("00000008 0000000000000000"),
        c("ps_applylsn"),
        h("00000008 0000000000000000"),
        c("ps_replytime"),
        h("00000008 0000000000000000"),
        c("shard_number"),
        h("00000004 00000003"),
        c("corruption_detected"),
        h("00000001 01"),
    ]);
    (fb, bytes)
}

fn append_response_with_feedback() -> (AcceptorMessage, Vec<u8>) {
    let (fb, fb_bytes) = feedback();
    let m = AcceptorMessage::AppendResponse(AppendResponse {
        generation: Generation::NONE,
        term: 2,
        flush_lsn: Lsn(0x0100_0200),
        commit_lsn: Lsn(0x0100_0100),
        hs_feedback: HotStandbyFeedback::default(),
        pageserver_feedback: Some(fb),
    });
    let bytes = cat(&[
        h(
            "61 00000000 0000000000000002 0000000001000200 0000000001000100
           0000000000000000 0000000000000000 0000000000000000",
        ),
        fb_bytes,
    ]);
    (m, bytes)
}

fn proposer_vectors() -> Vec<(ProposerMessage, Vec<u8>)> {
    vec![
        proposer_greeting(),
        proposer_greeting_no_mconf(),
        vote_request(),
        proposer_elected(),
        append_request(),
        heartbeat_append_request(),
    ]
}

fn acceptor_vectors() -> Vec<(AcceptorMessage, Vec<u8>)> {
    vec![
        acceptor_greeting(),
        vote_response(),
        vote_refused_empty_history(),
        append_response(),
        append_response_with_feedback(),
    ]
}

#[test]
fn fixed_vectors_encode_and_decode() {
    for (m, bytes) in proposer_vectors() {
        assert_eq!(hex::encode(enc_p(&m)), hex::encode(&bytes), "{}", m.name());
        assert_eq!(ProposerMessage::decode(&bytes).unwrap(), m);
        assert_eq!(
            ProposerMessage::decode_bytes(&Bytes::from(bytes)).unwrap(),
            m
        );
    }
    for (m, bytes) in acceptor_vectors() {
        assert_eq!(hex::encode(enc_a(&m)), hex::encode(&bytes), "{}", m.name());
        assert_eq!(AcceptorMessage::decode(&bytes).unwrap(), m);
    }
    for (fb, bytes) in [feedback(), feedback_sharded_corrupt()] {
        let mut b = BytesMut::new();
        fb.encode(&mut b);
        assert_eq!(hex::encode(&b), hex::encode(&bytes));
        assert_eq!(PageserverFeedback::decode(&bytes).unwrap(), fb);
    }
    // The header size constant matches the layout.
    assert_eq!(append_request().1.len(), APPEND_REQUEST_HEADER_SIZE + 3);
}

#[test]
fn every_truncation_is_rejected() {
    for (m, bytes) in proposer_vectors() {
        for cut in 0..bytes.len() {
            assert!(ProposerMessage::decode_bytes(&Bytes::copy_from_slice(&bytes[..cut])).is_err());
            let e = ProposerMessage::decode(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(
                    e,
                    ProtoError::Empty { .. }
                        | ProtoError::Truncated { .. }
                        | ProtoError::Invalid { .. }
                ),
                "{} cut at {cut}: {e}",
                m.name()
            );
        }
    }
    for (m, bytes) in acceptor_vectors() {
        // An AppendResponse's fixed part is complete on its own: a cut inside the feedback
        // block is a feedback error, a cut right after the fixed part is a valid message.
        let fixed = if matches!(m, AcceptorMessage::AppendResponse(_)) {
            53
        } else {
            bytes.len()
        };
        for cut in (0..bytes.len()).filter(|&c| c != fixed) {
            assert!(
                AcceptorMessage::decode(&bytes[..cut]).is_err(),
                "{} cut at {cut}",
                m.name()
            );
        }
    }
    let e = ProposerMessage::decode(&vote_request().1[..5]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "VoteRequest: truncated reading term (need 8 bytes, 0 left)"
    );
    let e = AcceptorMessage::decode(&vote_response().1[..20]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "VoteResponse: truncated reading flush_lsn (need 8 bytes, 6 left)"
    );
}

#[test]
fn trailing_bytes_are_rejected() {
    for (m, mut bytes) in proposer_vectors() {
        bytes.push(0);
        let e = ProposerMessage::decode(&bytes).unwrap_err();
        // AppendRequest: the extra byte is WAL the header does not announce.
        assert!(
            matches!(e, ProtoError::TrailingBytes { extra: 1, .. }),
            "{}: {e}",
            m.name()
        );
    }
    for (m, mut bytes) in acceptor_vectors() {
        // (A single 0 after an AppendResponse would be a valid, empty feedback block.)
        bytes.push(7);
        let e = AcceptorMessage::decode(&bytes).unwrap_err();
        assert!(
            matches!(
                e,
                ProtoError::TrailingBytes { .. } | ProtoError::Invalid { .. }
            ),
            "{}: {e}",
            m.name()
        );
    }
    let mut b = append_request().1;
    b.push(b'd');
    assert!(ProposerMessage::decode_bytes(&Bytes::from(b.clone())).is_err());
    assert_eq!(
        ProposerMessage::decode(&b).unwrap_err().to_string(),
        "AppendRequest: 1 unexpected trailing bytes"
    );
}

#[test]
fn unknown_and_missing_tags() {
    assert_eq!(
        ProposerMessage::decode(&[]).unwrap_err().to_string(),
        "empty proposer message"
    );
    assert_eq!(
        ProposerMessage::decode(b"x\0\0").unwrap_err().to_string(),
        "unknown proposer message tag 0x78 ('x')"
    );
    assert_eq!(
        AcceptorMessage::decode(&[0xff]).unwrap_err().to_string(),
        "unknown acceptor message tag 0xff ('?')"
    );
    // 'e' is a proposer-only tag.
    assert!(matches!(
        AcceptorMessage::decode(&proposer_elected().1),
        Err(ProtoError::UnknownTag { tag: b'e', .. })
    ));
}

#[test]
fn oversized_and_inconsistent_append_requests() {
    let header = |begin: u64, end: u64| {
        h(&format!(
            "61 00000000 0000000000000001 {begin:016x} {end:016x} 0000000000000000 0000000000000000"
        ))
    };
    // end < begin.
    let e = ProposerMessage::decode(&header(0x20, 0x10)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "AppendRequest: invalid end_lsn: end_lsn 0/00000010 is before begin_lsn 0/00000020"
    );
    // More than 128 KiB announced: rejected before looking for the bytes.
    let e = ProposerMessage::decode(&header(0, MAX_WAL_PAYLOAD as u64 + 1)).unwrap_err();
    assert!(e.to_string().contains("131073 bytes of WAL"), "{e}");
    // Exactly 128 KiB is fine.
    let mut b = header(0, MAX_WAL_PAYLOAD as u64);
    b.resize(b.len() + MAX_WAL_PAYLOAD, 0xaa);
    assert_eq!(b.len(), MAX_APPEND_REQUEST_SIZE);
    ProposerMessage::decode(&b).unwrap();
    // Fewer bytes than announced.
    let mut b = header(0, 4);
    b.extend_from_slice(b"ab");
    let e = ProposerMessage::decode(&b).unwrap_err();
    assert_eq!(
        e.to_string(),
        "AppendRequest: truncated reading wal_data (need 4 bytes, 2 left)"
    );
    // The encoder refuses what the decoder would.
    let (ProposerMessage::AppendRequest(mut req), _) = append_request() else {
        unreachable!()
    };
    req.wal_data = Bytes::from_static(b"abcd");
    let e = ProposerMessage::AppendRequest(req)
        .encode(&mut BytesMut::new())
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("4 bytes, but end_lsn − begin_lsn = 3"),
        "{e}"
    );
}

#[test]
fn invalid_fields_are_named() {
    // vote_given must be 0 or 1.
    let mut b = vote_response().1;
    b[13] = 2;
    assert_eq!(
        AcceptorMessage::decode(&b).unwrap_err().to_string(),
        "VoteResponse: invalid vote_given: expected 0 or 1, got 2"
    );
    // A tenant id that is not hex.
    let mut b = proposer_greeting().1;
    b[1] = b'z';
    let e = ProposerMessage::decode(&b).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("ProposerGreeting: invalid tenant_id: invalid tenant id"),
        "{e}"
    );
    // A history whose terms go backwards.
    let b = h("65 00000000 0000000000000006 0000000000000000
               00000002 0000000000000006 0000000000000010 0000000000000005 0000000000000020");
    let e = ProposerMessage::decode(&b).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("ProposerElected: invalid term_history: "),
        "{e}"
    );
    // A history count larger than the bytes that follow: no allocation, clear error.
    let b = h("65 00000000 0000000000000006 0000000000000000 ffffffff");
    assert_eq!(
        ProposerMessage::decode(&b).unwrap_err().to_string(),
        "ProposerElected: truncated reading term_history length (need 68719476720 bytes, 0 left)"
    );
    // Too many members.
    let b = h("67 0000000000000001 00000001 00000021");
    assert_eq!(
        AcceptorMessage::decode(&b).unwrap_err().to_string(),
        "AcceptorGreeting: invalid mconf members: 33 entries, at most 32 allowed"
    );
    // A host without its NUL.
    let b = cat(&[
        h("67 0000000000000001 00000001 00000001 0000000000000001"),
        b"host".to_vec(),
    ]);
    let e = AcceptorMessage::decode(&b).unwrap_err();
    assert!(e.to_string().contains("no NUL terminator"), "{e}");
    // Hosts containing NUL cannot be encoded.
    let m = AcceptorMessage::Greeting(AcceptorGreeting {
        node_id: NodeId(1),
        mconf: Configuration::new(Generation(1), vec![member(1, "a\0b", 1)]),
        term: 1,
    });
    assert!(m.encode(&mut BytesMut::new()).is_err());
}

#[test]
fn feedback_decoding_rules() {
    // Unknown keys are skipped by length; the new spellings are accepted.
    let b = cat(&[
        h("04"),
        c("some_future_key"),
        h("00000003 aabbcc"),
        c("last_received_lsn"),
        h("00000008 0000000000000030"),
        c("remote_consistent_lsn"),
        h("00000008 0000000000000010"),
        c("disk_consistent_lsn"),
        h("00000008 0000000000000020"),
    ]);
    let fb = PageserverFeedback::decode(&b).unwrap();
    assert_eq!(fb.last_received_lsn, Lsn(0x30));
    assert_eq!(fb.disk_consistent_lsn, Lsn(0x20));
    assert_eq!(fb.remote_consistent_lsn, Lsn(0x10));
    assert_eq!(fb.current_timeline_size, 0);
    // The new spelling of the reply time.
    let b = cat(&[h("01"), c("replytime"), h("00000008 0000000000000001")]);
    assert_eq!(
        PageserverFeedback::decode(&b).unwrap().replytime,
        from_pg_timestamp(1)
    );
    // Empty block.
    assert_eq!(
        PageserverFeedback::decode(&[0]).unwrap(),
        PageserverFeedback::empty()
    );
    // Wrong value length for a known key.
    let b = cat(&[h("01"), c("ps_writelsn"), h("00000004 00000001")]);
    assert_eq!(
        PageserverFeedback::decode(&b).unwrap_err().to_string(),
        "PageserverFeedback: invalid value length: key \"ps_writelsn\" needs 8 bytes, got 4"
    );
    // Negative length.
    let b = cat(&[h("01"), c("x"), h("ffffffff")]);
    assert!(
        PageserverFeedback::decode(&b)
            .unwrap_err()
            .to_string()
            .contains("negative (-1)")
    );
    // Length beyond the input.
    let b = cat(&[h("01"), c("x"), h("00000010 00")]);
    assert_eq!(
        PageserverFeedback::decode(&b).unwrap_err().to_string(),
        "PageserverFeedback: truncated reading value (need 16 bytes, 1 left)"
    );
    // Fewer keys than announced.
    let b = cat(&[h("02"), c("x"), h("00000000")]);
    assert!(PageserverFeedback::decode(&b).is_err());
    // Inside an AppendResponse, a bad block names both.
    let mut b = append_response().1;
    b.extend_from_slice(&h("01 78"));
    let e = AcceptorMessage::decode(&b).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("AppendResponse: invalid pageserver feedback: "),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------
// Property round-trips.

fn arb_member() -> impl Strategy<Value = Member> {
    (any::<u64>(), "[a-z0-9.-]{0,24}", any::<u16>())
        .prop_map(|(id, host, port)| member(id, &host, port))
}

fn arb_mconf() -> impl Strategy<Value = Configuration> {
    (
        any::<u32>(),
        prop::collection::vec(arb_member(), 0..5),
        prop::option::of(prop::collection::vec(arb_member(), 1..5)),
    )
        .prop_map(|(g, members, new_members)| Configuration {
            generation: Generation(g),
            members,
            new_members,
        })
}

/// Well-formed histories: strictly increasing terms, non-decreasing LSNs.
fn arb_history() -> impl Strategy<Value = TermHistory> {
    prop::collection::vec((1u64..1000, 0u64..1 << 30), 0..8).prop_map(|steps| {
        let (mut term, mut lsn) = (0u64, 0u64);
        TermHistory(
            steps
                .into_iter()
                .map(|(dt, dl)| {
                    term += dt;
                    lsn += dl;
                    TermLsn::new(term, Lsn(lsn))
                })
                .collect(),
        )
    })
}

fn arb_feedback() -> impl Strategy<Value = PageserverFeedback> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        -(1i64 << 55)..(1i64 << 55),
        any::<u32>(),
        any::<bool>(),
    )
        .prop_map(|(size, w, f, a, ts, shard, corrupt)| PageserverFeedback {
            current_timeline_size: size,
            last_received_lsn: Lsn(w),
            disk_consistent_lsn: Lsn(f),
            remote_consistent_lsn: Lsn(a),
            replytime: from_pg_timestamp(ts),
            shard_number: shard,
            corruption_detected: corrupt,
        })
}

fn arb_proposer_message() -> impl Strategy<Value = ProposerMessage> {
    prop_oneof![
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            arb_mconf(),
            any::<u32>(),
            any::<u64>(),
            any::<u32>()
        )
            .prop_map(|(t, tl, mconf, pg_version, system_id, wal_seg_size)| {
                ProposerMessage::Greeting(ProposerGreeting {
                    tenant_id: TenantId::from_bytes(t),
                    timeline_id: TimelineId::from_bytes(tl),
                    mconf,
                    pg_version,
                    system_id,
                    wal_seg_size,
                })
            }),
        (any::<u32>(), any::<u64>()).prop_map(|(g, term)| ProposerMessage::VoteRequest(
            VoteRequest {
                generation: Generation(g),
                term,
            }
        )),
        (any::<u32>(), any::<u64>(), any::<u64>(), arb_history()).prop_map(|(g, term, at, th)| {
            ProposerMessage::Elected(ProposerElected {
                generation: Generation(g),
                term,
                start_streaming_at: Lsn(at),
                term_history: th,
            })
        }),
        (
            any::<u32>(),
            any::<u64>(),
            0u64..u64::MAX / 2,
            prop::collection::vec(any::<u8>(), 0..600),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(g, term, begin, data, commit, trunc)| {
                ProposerMessage::AppendRequest(AppendRequest {
                    h: AppendRequestHeader {
                        generation: Generation(g),
                        term,
                        begin_lsn: Lsn(begin),
                        end_lsn: Lsn(begin + data.len() as u64),
                        commit_lsn: Lsn(commit),
                        truncate_lsn: Lsn(trunc),
                    },
                    wal_data: Bytes::from(data),
                })
            }),
    ]
}

fn arb_acceptor_message() -> impl Strategy<Value = AcceptorMessage> {
    prop_oneof![
        (any::<u64>(), arb_mconf(), any::<u64>()).prop_map(|(id, mconf, term)| {
            AcceptorMessage::Greeting(AcceptorGreeting {
                node_id: NodeId(id),
                mconf,
                term,
            })
        }),
        (
            any::<u32>(),
            any::<u64>(),
            any::<bool>(),
            any::<u64>(),
            any::<u64>(),
            arb_history()
        )
            .prop_map(|(g, term, vote_given, flush, trunc, th)| {
                AcceptorMessage::VoteResponse(VoteResponse {
                    generation: Generation(g),
                    term,
                    vote_given,
                    flush_lsn: Lsn(flush),
                    truncate_lsn: Lsn(trunc),
                    term_history: th,
                })
            }),
        (
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<(i64, u64, u64)>(),
            prop::option::of(arb_feedback())
        )
            .prop_map(|(g, term, flush, commit, (ts, xmin, cxmin), fb)| {
                AcceptorMessage::AppendResponse(AppendResponse {
                    generation: Generation(g),
                    term,
                    flush_lsn: Lsn(flush),
                    commit_lsn: Lsn(commit),
                    hs_feedback: HotStandbyFeedback {
                        ts,
                        xmin,
                        catalog_xmin: cxmin,
                    },
                    pageserver_feedback: fb,
                })
            }),
    ]
}

proptest! {
    #[test]
    fn proposer_messages_round_trip(m in arb_proposer_message()) {
        let bytes = enc_p(&m);
        prop_assert_eq!(&ProposerMessage::decode(&bytes).unwrap(), &m);
        prop_assert_eq!(ProposerMessage::decode_bytes(&Bytes::from(bytes)).unwrap(), m);
    }

    #[test]
    fn acceptor_messages_round_trip(m in arb_acceptor_message()) {
        let bytes = enc_a(&m);
        prop_assert_eq!(AcceptorMessage::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn feedback_round_trips(fb in arb_feedback()) {
        let mut b = BytesMut::new();
        fb.encode(&mut b);
        prop_assert_eq!(PageserverFeedback::decode(&b).unwrap(), fb);
    }

    /// Arbitrary bytes never panic the decoders.
    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = ProposerMessage::decode(&bytes);
        let _ = AcceptorMessage::decode(&bytes);
        let _ = PageserverFeedback::decode(&bytes);
        let _ = ReplicationCommand::parse(&String::from_utf8_lossy(&bytes));
    }

    /// Command-like text never panics the libpq command parser.
    #[test]
    fn commands_never_panic(q in "[A-Za-z_ ()'\",=;/0-9]{0,60}") {
        let _ = ReplicationCommand::parse(&q);
    }

    /// Flipping any byte of a valid message gives a valid message or a clean error.
    #[test]
    fn mutated_vectors_never_panic(idx in any::<prop::sample::Index>(), byte in any::<u8>()) {
        for (_, mut b) in proposer_vectors() {
            let i = idx.index(b.len());
            b[i] = byte;
            let _ = ProposerMessage::decode(&b);
        }
        for (_, mut b) in acceptor_vectors() {
            let i = idx.index(b.len());
            b[i] = byte;
            let _ = AcceptorMessage::decode(&b);
        }
    }
}
