use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn key(n: u32) -> Key {
    Key {
        f4: n / 7,
        f6: n,
        ..Key::MIN
    }
}

type Model = BTreeMap<(Key, Lsn), (Vec<u8>, bool)>;

fn write(dir: &Path, model: &Model, kind: LayerKind, compress: bool) -> PathBuf {
    let name = match kind {
        LayerKind::Delta => LayerName::delta(Key::MIN..Key::MAX, Lsn(1)..Lsn(1 << 40)),
        LayerKind::Image => LayerName::image(Key::MIN..Key::MAX, Lsn(5)),
    };
    let mut w = LayerWriter::create(
        dir,
        TenantId::generate(),
        TimelineId::generate(),
        &name,
        compress,
    )
    .unwrap();
    for ((k, l), (v, init)) in model {
        w.put(*k, *l, v, *init, true).unwrap();
    }
    w.finish(Sync::No).unwrap().0
}

fn cache() -> Arc<PageCache> {
    Arc::new(PageCache::new(64))
}

/// What the file must answer for `key` below `end`: newest first, up to the first init.
fn expected(model: &Model, key: Key, range: Range<Lsn>) -> Vec<(Lsn, Vec<u8>)> {
    let mut out = Vec::new();
    for ((_, l), (v, init)) in model.range((key, range.start)..(key, range.end)).rev() {
        out.push((*l, v.clone()));
        if *init {
            break;
        }
    }
    out
}

fn check(model: &Model, path: &Path) {
    let f = LayerFile::open(path, cache()).unwrap();
    assert_eq!(f.summary().value_count, model.len() as u64);
    let keys: std::collections::BTreeSet<Key> = model.keys().map(|(k, _)| *k).collect();
    for k in keys.iter().copied().chain([key(999_999)]) {
        for range in [Lsn(1)..Lsn(u64::MAX), Lsn(10)..Lsn(50), Lsn(1)..Lsn(30)] {
            let mut refs = Vec::new();
            f.refs_for_key(k, range.clone(), &mut refs).unwrap();
            let got: Vec<(Lsn, Vec<u8>)> = refs
                .iter()
                .map(|r| (r.lsn, f.read_value(r).unwrap().to_vec()))
                .collect();
            assert_eq!(got, expected(model, k, range), "{k}");
        }
    }
    let mut scanned = Vec::new();
    f.scan(Key::MIN..Key::MAX, Lsn(u64::MAX), |r| {
        scanned.push((r.key, r.lsn));
        Ok(())
    })
    .unwrap();
    assert_eq!(scanned, model.keys().copied().collect::<Vec<_>>());
    if let Some(k) = keys.iter().nth(keys.len() / 2) {
        let mut part = Vec::new();
        f.scan(*k..Key::MAX, Lsn(40), |r| {
            part.push((r.key, r.lsn));
            Ok(())
        })
        .unwrap();
        let want: Vec<_> = model
            .keys()
            .filter(|(kk, l)| kk >= k && *l < Lsn(40))
            .copied()
            .collect();
        assert_eq!(part, want);
    }
}

#[test]
fn round_trip_many_leaves_and_levels() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    // Enough entries for three index levels (209 per leaf, 272 per inner node).
    for n in 0..60_000u32 {
        let k = key(n / 3);
        let l = Lsn(u64::from(10 + (n % 3) * 10));
        model.insert(
            (k, l),
            (vec![(n % 251) as u8; (n % 50) as usize], n % 3 == 0),
        );
    }
    let p = write(dir.path(), &model, LayerKind::Delta, false);
    check(&model, &p);
}

#[test]
fn empty_layer() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::new();
    let p = write(dir.path(), &model, LayerKind::Delta, false);
    check(&model, &p);
}

#[test]
fn images_compress_when_smaller() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    model.insert((key(1), Lsn(5)), (vec![0u8; 8192], true));
    let noisy: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    model.insert((key(2), Lsn(5)), (noisy, true));
    let p = write(dir.path(), &model, LayerKind::Image, true);
    assert!(std::fs::metadata(&p).unwrap().len() < 8192 * 4);
    check(&model, &p);
}

#[test]
fn out_of_order_put_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let name = LayerName::delta(Key::MIN..Key::MAX, Lsn(1)..Lsn(100));
    let mut w = LayerWriter::create(
        dir.path(),
        TenantId::generate(),
        TimelineId::generate(),
        &name,
        false,
    )
    .unwrap();
    w.put(key(2), Lsn(5), b"a", false, false).unwrap();
    assert!(w.put(key(2), Lsn(5), b"b", false, false).is_err());
    assert!(w.put(key(1), Lsn(9), b"b", false, false).is_err());
    assert!(w.put(key(3), Lsn(100), b"b", false, false).is_err());
}

#[test]
fn every_flipped_bit_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    for n in 0..500u32 {
        model.insert((key(n), Lsn(7)), (vec![n as u8; 40], true));
    }
    let p = write(dir.path(), &model, LayerKind::Delta, false);
    let original = std::fs::read(&p).unwrap();
    let len = original.len();
    // Summary, a value, the index and the trailer.
    for pos in [3, 100, BLOCK + 20, len - BLOCK - 16 + 50, len - 10, len - 1] {
        let mut bad = original.clone();
        bad[pos] ^= 0x10;
        std::fs::write(&p, &bad).unwrap();
        let outcome = LayerFile::open(&p, cache()).and_then(|f| {
            for k in 0..500 {
                let mut refs = Vec::new();
                f.refs_for_key(key(k), Lsn(0)..Lsn(100), &mut refs)?;
                for r in &refs {
                    f.read_value(r)?;
                }
            }
            Ok(())
        });
        assert!(
            matches!(outcome, Err(LayerFileError::Corrupt { .. })),
            "flip at {pos}: {outcome:?}"
        );
    }
    std::fs::write(&p, &original[..len - 100]).unwrap();
    assert!(matches!(
        LayerFile::open(&p, cache()),
        Err(LayerFileError::Corrupt { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn property_round_trip(
        entries in proptest::collection::btree_map(
            (0u32..400, 1u64..60),
            (proptest::collection::vec(any::<u8>(), 0..300), any::<bool>()),
            0..3000,
        )
    ) {
        let dir = tempfile::tempdir().unwrap();
        let model: Model = entries
            .into_iter()
            .map(|((k, l), v)| ((key(k), Lsn(l)), v))
            .collect();
        let p = write(dir.path(), &model, LayerKind::Delta, false);
        check(&model, &p);
    }
}
