use std::time::Duration;

use safekeeper_api::membership::{Generation, Member};
use safekeeper_api::term::TermLsn;
use utils::NodeId;

use super::*;

fn sample() -> TimelinePersistentState {
    let mut s = TimelinePersistentState::new(
        TenantTimelineId::generate(),
        Configuration::new(
            Generation(3),
            vec![Member {
                node_id: NodeId(1),
                host: "sk1".to_string(),
                pg_port: 5454,
            }],
        ),
        ServerInfo {
            pg_version: 150007,
            system_id: 0x1234_5678_9abc,
            wal_seg_size: 16 * 1024 * 1024,
        },
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    );
    s.acceptor_state = AcceptorState {
        term: 5,
        term_history: TermHistory(vec![
            TermLsn::new(1, Lsn(0x0100_0028)),
            TermLsn::new(4, Lsn(0x0200_0000)),
        ]),
    };
    s.timeline_start_lsn = Lsn(0x0100_0028);
    s.local_start_lsn = Lsn(0x0100_0028);
    s.commit_lsn = Lsn(0x0200_1000);
    s.backup_lsn = Lsn(0x0100_0000);
    s.peer_horizon_lsn = Lsn(0x0200_0800);
    s.remote_consistent_lsn = Lsn(0x0180_0000);
    s
}

fn p() -> &'static Path {
    Path::new("/data/t/safekeeper.control")
}

#[test]
fn round_trip_and_readable_body() {
    let s = sample();
    let bytes = encode(&s, p()).unwrap();
    assert_eq!(&bytes[..4], b"SKCF");
    assert_eq!(le_u32(&bytes[4..]), FORMAT_VERSION);
    let body = std::str::from_utf8(&bytes[12..bytes.len() - 4]).unwrap();
    assert!(body.contains("\"commit_lsn\": \"0/02001000\""), "{body}");
    assert_eq!(decode(&bytes, p()).unwrap(), s);
}

#[test]
fn every_kind_of_damage_is_a_clear_error() {
    let good = encode(&sample(), p()).unwrap();
    let check = |bytes: &[u8], want: &str| {
        let e = decode(bytes, p()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("/data/t/safekeeper.control"),
            "names the file: {msg}"
        );
        assert!(msg.contains(want), "expected {want:?} in {msg}");
    };
    check(&[], "truncated");
    check(&good[..10], "truncated");
    check(&good[..good.len() - 1], "truncated");
    let mut longer = good.clone();
    longer.push(0);
    check(&longer, "trailing garbage");
    let mut magic = good.clone();
    magic[0] = b'X';
    check(&magic, "bad magic");
    for at in [5, 20, good.len() / 2, good.len() - 2] {
        let mut flipped = good.clone();
        flipped[at] ^= 0x40;
        let e = decode(&flipped, p()).unwrap_err();
        assert!(
            matches!(
                e,
                ControlFileError::BadChecksum { .. } | ControlFileError::Truncated { .. }
            ),
            "flip at {at}: {e}"
        );
    }
    let mut huge = good.clone();
    huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    check(&huge, "exceeds the limit");
    // A future version, correctly framed.
    let body = &good[12..good.len() - 4];
    check(
        &frame(FORMAT_VERSION + 1, body),
        "unsupported format version 2",
    );
    // A body that does not parse, correctly framed.
    check(
        &frame(1, b"{\"tenant_id\": 7}"),
        "invalid body (format version 1)",
    );
    // A body that parses to an impossible state.
    let mut bad = sample();
    bad.acceptor_state.term_history.0.reverse();
    let body = serde_json::to_vec(&bad).unwrap();
    check(&frame(1, &body), "term history");
    let mut bad = sample();
    bad.acceptor_state.term = 2;
    let body = serde_json::to_vec(&bad).unwrap();
    check(&frame(1, &body), "above the acceptor term 2");
}

/// The upgrade path: a hand-written version 0 file decodes into the current state.
#[test]
fn version_0_is_upgraded() {
    let body = br#"{
        "tenant_id": "0123456789abcdef0123456789abcdef",
        "timeline_id": "fedcba9876543210fedcba9876543210",
        "term": 7,
        "term_history": [{"term": 2, "lsn": "0/1000028"}, {"term": 7, "lsn": "0/1800000"}],
        "pg_version": 150004,
        "system_id": 42,
        "wal_seg_size": 16777216,
        "timeline_start_lsn": "0/1000028",
        "commit_lsn": "0/1900000",
        "backup_lsn": "0/1000000",
        "peer_horizon_lsn": "0/1850000",
        "remote_consistent_lsn": "0/1100000"
    }"#;
    let mut file = Vec::new();
    file.extend_from_slice(b"SKCF");
    file.extend_from_slice(&0u32.to_le_bytes());
    file.extend_from_slice(&(body.len() as u32).to_le_bytes());
    file.extend_from_slice(body);
    let crc = crc32c::crc32c(&file);
    file.extend_from_slice(&crc.to_le_bytes());

    let s = decode(&file, p()).unwrap();
    assert_eq!(s.tenant_id.to_string(), "0123456789abcdef0123456789abcdef");
    assert_eq!(
        s.timeline_id.to_string(),
        "fedcba9876543210fedcba9876543210"
    );
    assert_eq!(s.mconf, Configuration::empty());
    assert_eq!(s.mconf.generation, Generation::NONE);
    assert_eq!(s.acceptor_state.term, 7);
    assert_eq!(
        s.acceptor_state.term_history,
        TermHistory(vec![
            TermLsn::new(2, Lsn(0x0100_0028)),
            TermLsn::new(7, Lsn(0x0180_0000))
        ])
    );
    assert_eq!(
        s.server,
        ServerInfo {
            pg_version: 150004,
            system_id: 42,
            wal_seg_size: 16 * 1024 * 1024
        }
    );
    assert_eq!(s.timeline_start_lsn, Lsn(0x0100_0028));
    assert_eq!(s.local_start_lsn, Lsn(0x0100_0028));
    assert_eq!(s.commit_lsn, Lsn(0x0190_0000));
    assert_eq!(s.backup_lsn, Lsn(0x0100_0000));
    assert_eq!(s.peer_horizon_lsn, Lsn(0x0185_0000));
    assert_eq!(s.remote_consistent_lsn, Lsn(0x0110_0000));
    assert_eq!(s.creation_ts, SystemTime::UNIX_EPOCH);
    // Re-encoding writes the current version.
    let again = encode(&s, p()).unwrap();
    assert_eq!(le_u32(&again[4..]), FORMAT_VERSION);
    assert_eq!(decode(&again, p()).unwrap(), s);
}

#[test]
fn store_persists_durably_and_keeps_old_state_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample();
    let mut store = ControlFileStore::create(dir.path(), s.clone(), Sync::Yes).unwrap();
    assert_eq!(store.path(), dir.path().join(CONTROL_FILE_NAME));
    let mut next = s.clone();
    next.commit_lsn = Lsn(0x0300_0000);
    store.persist(next.clone()).unwrap();
    assert_eq!(store.state(), &next);
    let loaded = ControlFileStore::load(dir.path(), Sync::No).unwrap();
    assert_eq!(loaded.state(), &next);
    assert!(
        !crashsafe::temp_path_for(store.path()).exists(),
        "no temp file left behind"
    );

    // A failed write leaves the in-memory state as it was, and breaks the store: the file
    // may hold either state, so no later change is accepted, even once writes would work.
    let gone = dir.path().join("gone");
    std::fs::create_dir(&gone).unwrap();
    let mut doomed = ControlFileStore::create(&gone, s.clone(), Sync::No).unwrap();
    std::fs::remove_dir_all(&gone).unwrap();
    let e = doomed.persist(next.clone()).unwrap_err();
    assert!(e.to_string().contains("gone"), "{e}");
    assert_eq!(doomed.state(), &s);
    std::fs::create_dir(&gone).unwrap();
    let e = doomed.persist(next.clone()).unwrap_err();
    assert!(matches!(e, ControlFileError::Broken { .. }), "{e}");
    assert!(e.to_string().contains("reload the timeline"), "{e}");
    assert!(doomed.check_not_broken().is_err());

    let e = ControlFileStore::load(&dir.path().join("missing"), Sync::No).unwrap_err();
    assert!(matches!(e, ControlFileError::Io { .. }), "{e}");
    assert!(e.to_string().contains("missing/safekeeper.control"), "{e}");
}

#[test]
fn creation_state() {
    let ttid = TenantTimelineId::generate();
    let s = TimelinePersistentState::new(
        ttid,
        Configuration::empty(),
        ServerInfo::default(),
        SystemTime::now(),
    );
    assert_eq!(s.ttid(), ttid);
    assert_eq!(s.acceptor_state.term, INITIAL_TERM);
    assert!(s.acceptor_state.term_history.is_empty());
    assert_eq!(s.acceptor_state.last_log_term(Lsn::MAX), INITIAL_TERM);
    assert!(!s.local_start_lsn.is_valid());
    s.validate().unwrap();
}

/// The control files of every format version that has existed, as written by that
/// version. Each must load; the current version's must also re-encode to the very same
/// bytes, so a change of the body (a new, renamed or retyped field) without a version bump
/// fails here. When that happens: bump `FORMAT_VERSION`, add the conversion step, and add
/// the new version's file (`STRATA_WRITE_CONTROL_FIXTURE=<path>` writes `sample()` there).
mod fixtures {
    use super::*;

    const V0: &[u8] = include_bytes!("fixtures/v0.control");
    const V1: &[u8] = include_bytes!("fixtures/v1.control");

    fn fixture_path(v: u32) -> PathBuf {
        PathBuf::from(format!("fixtures/v{v}.control"))
    }

    #[test]
    fn every_version_loads() {
        let v0 = decode(V0, &fixture_path(0)).unwrap();
        assert_eq!(v0.acceptor_state.term, 7);
        assert_eq!(v0.commit_lsn, Lsn(0x0190_0000));
        assert_eq!(v0.mconf, Configuration::empty());
        let v1 = decode(V1, &fixture_path(1)).unwrap();
        let expected = sample();
        // The fixture was written from `sample()` with fixed ids.
        assert_eq!(v1.acceptor_state, expected.acceptor_state);
        assert_eq!(v1.commit_lsn, expected.commit_lsn);
        assert_eq!(v1.mconf, expected.mconf);
        assert_eq!(v1.server, expected.server);
        assert_eq!(v1.creation_ts, expected.creation_ts);
    }

    #[test]
    fn the_current_version_is_byte_identical_to_its_fixture() {
        assert_eq!(
            FORMAT_VERSION, 1,
            "a new format version needs its fixture here (see the module docs)"
        );
        let state = decode(V1, &fixture_path(1)).unwrap();
        let again = encode(&state, &fixture_path(1)).unwrap();
        assert!(
            again == V1,
            "the control file body changed without a FORMAT_VERSION bump:\nfixture: {}\nnow:     {}",
            String::from_utf8_lossy(&V1[12..V1.len() - 4]),
            String::from_utf8_lossy(&again[12..again.len() - 4]),
        );
    }

    /// Writes the current version's fixture when asked (never in a normal run).
    #[test]
    fn write_fixture_when_asked() {
        let Ok(path) = std::env::var("STRATA_WRITE_CONTROL_FIXTURE") else {
            return;
        };
        let mut s = sample();
        s.tenant_id = "0123456789abcdef0123456789abcdef".parse().unwrap();
        s.timeline_id = "fedcba9876543210fedcba9876543210".parse().unwrap();
        std::fs::write(&path, encode(&s, Path::new(&path)).unwrap()).unwrap();
    }
}
