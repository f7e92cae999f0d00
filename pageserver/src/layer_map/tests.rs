use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn k(n: u32) -> Key {
    Key { f6: n, ..Key::MIN }
}

/// A layer's contents in the model: records (delta) or images (image layer).
#[derive(Debug, Clone)]
struct Contents {
    /// (key, lsn) → value id.
    values: BTreeMap<(u32, u64), u64>,
}

struct World {
    map: LayerMap<usize>,
    contents: Vec<(LayerName, Contents)>,
    /// Every value: (key, lsn) → (is_image, id).
    all: BTreeMap<(u32, u64), Vec<(bool, u64)>>,
}

const KEYS: u32 = 40;

fn build(seed: u64) -> World {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut contents: Vec<(LayerName, Contents)> = Vec::new();
    let mut next_id = 0u64;
    let mut lsn = 10u64;
    // Key-partitioned deltas at the bottom (like L1s), then full-range deltas (L0s).
    let l1_end = lsn + rng.random_range(20..60);
    let mut cut = 0u32;
    while cut < KEYS {
        let next = (cut + rng.random_range(1..15)).min(KEYS);
        contents.push((
            LayerName::delta(
                k(cut)..if next == KEYS { Key::MAX } else { k(next) },
                Lsn(lsn)..Lsn(l1_end),
            ),
            Contents {
                values: BTreeMap::new(),
            },
        ));
        cut = next;
    }
    lsn = l1_end;
    for _ in 0..rng.random_range(1..8) {
        let end = lsn + rng.random_range(1..40);
        contents.push((
            LayerName::delta(Key::MIN..Key::MAX, Lsn(lsn)..Lsn(end)),
            Contents {
                values: BTreeMap::new(),
            },
        ));
        lsn = end;
    }
    let top = lsn;
    let mut all: BTreeMap<(u32, u64), Vec<(bool, u64)>> = BTreeMap::new();
    // Records, each in the delta that covers it.
    for _ in 0..rng.random_range(0..300) {
        let key = rng.random_range(0..KEYS);
        let at = rng.random_range(10..top);
        let Some((_, c)) = contents
            .iter_mut()
            .find(|(n, _)| n.key_range.contains(&k(key)) && n.lsn_range.contains(&Lsn(at)))
        else {
            continue;
        };
        if c.values.contains_key(&(key, at)) {
            continue;
        }
        next_id += 1;
        c.values.insert((key, at), next_id);
        all.entry((key, at)).or_default().push((false, next_id));
    }
    // Image layers at random LSNs over random key ranges, holding every key.
    for _ in 0..rng.random_range(0..5) {
        let at = rng.random_range(10..top);
        let a = rng.random_range(0..KEYS);
        let b = rng.random_range(a + 1..=KEYS);
        let name = LayerName::image(k(a)..k(b), Lsn(at));
        if contents.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let mut values = BTreeMap::new();
        for key in a..b {
            next_id += 1;
            values.insert((key, at), next_id);
            all.entry((key, at)).or_default().push((true, next_id));
        }
        contents.push((name, Contents { values }));
    }
    let mut map = LayerMap::new();
    for (i, (n, _)) in contents.iter().enumerate() {
        map.insert(n.clone(), i);
    }
    World { map, contents, all }
}

/// What a read must collect: values below `end`, newest first, down to the newest image.
fn brute_force(w: &World, key: u32, end: u64) -> Vec<u64> {
    let mut out = Vec::new();
    for ((_, _), vals) in w.all.range((key, 0)..(key, end)).rev() {
        // An image at an LSN subsumes a record at the same LSN.
        if let Some((_, id)) = vals.iter().find(|(img, _)| *img) {
            out.push(*id);
            return out;
        }
        out.extend(vals.iter().map(|(_, id)| *id));
    }
    out
}

fn via_map(w: &World, key: u32, mut end: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut visited = 0;
    while let Some(res) = w.map.search(k(key), Lsn(end)) {
        visited += 1;
        assert!(visited < 100, "search does not make progress");
        let (name, c) = &w.contents[*res.layer];
        assert!(
            res.lsn_floor.0 < end,
            "floor {} at end {end}",
            res.lsn_floor
        );
        if name.kind == LayerKind::Image {
            out.push(c.values[&(key, name.lsn().0)]);
            return out;
        }
        for ((_, _), id) in c.values.range((key, res.lsn_floor.0)..(key, end)).rev() {
            out.push(*id);
        }
        end = res.lsn_floor.0;
    }
    out
}

#[test]
fn search_matches_brute_force() {
    for seed in 0..300 {
        let w = build(seed);
        for key in 0..KEYS {
            for end in (10..w.map.max_lsn_end().unwrap().0 + 3).step_by(3) {
                assert_eq!(
                    via_map(&w, key, end),
                    brute_force(&w, key, end),
                    "seed {seed} key {key} end {end}"
                );
            }
        }
    }
}

#[test]
fn insert_remove_and_overlap() {
    let mut m = LayerMap::new();
    let a = LayerName::delta(Key::MIN..Key::MAX, Lsn(10)..Lsn(20));
    let b = LayerName::delta(Key::MIN..Key::MAX, Lsn(20)..Lsn(30));
    let i = LayerName::image(k(0)..k(5), Lsn(9));
    m.insert(a.clone(), 1);
    m.insert(b.clone(), 2);
    m.insert(i.clone(), 3);
    assert_eq!(m.len(), 3);
    assert_eq!(m.iter().map(|(_, l)| *l).collect::<Vec<_>>(), vec![2, 1, 3]);
    assert_eq!(m.max_lsn_end(), Some(Lsn(30)));
    assert_eq!(m.search(k(1), Lsn(25)).unwrap().lsn_floor, Lsn(20));
    assert_eq!(*m.search(k(1), Lsn(15)).unwrap().layer, 1);
    assert_eq!(*m.search(k(1), Lsn(10)).unwrap().layer, 3);
    assert!(m.search(k(7), Lsn(10)).is_none());
    assert_eq!(m.overlapping(k(0)..k(1), Lsn(0)..Lsn(12)).count(), 2);
    assert_eq!(m.remove(&a), Some(1));
    assert_eq!(m.remove(&a), None);
    m.insert(b.clone(), 9);
    assert_eq!(m.len(), 2);
    assert!(!m.is_empty());
}
