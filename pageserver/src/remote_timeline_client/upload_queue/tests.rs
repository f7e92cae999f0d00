use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use utils::{Lsn, TimelineId};

use super::*;
use crate::keyspace::Key;
use crate::timeline::metadata::TimelineMetadata;

const GEN: Generation = Generation(1);

fn layer(i: u64) -> LayerName {
    LayerName::delta(Key::MIN..Key::MAX, Lsn(0x100 + i)..Lsn(0x200 + i))
}

fn meta() -> LayerFileMeta {
    LayerFileMeta {
        file_size: 1,
        generation: GEN,
        checksum: 0,
    }
}

fn metadata(lsn: u64) -> TimelineMetadata {
    TimelineMetadata {
        disk_consistent_lsn: Lsn(lsn),
        prev_record_lsn: None,
        ancestor_timeline: None::<TimelineId>,
        ancestor_lsn: Lsn(0),
        latest_gc_cutoff_lsn: Lsn(0),
        initdb_lsn: Lsn(0x100),
        pg_version: 15,
    }
}

/// A timeline's projected layers and the operations it queues, as the client does.
struct Projected {
    layers: BTreeSet<u64>,
    lsn: u64,
}

impl Projected {
    fn index(&self) -> UploadOp {
        let mut i = IndexPart::empty(metadata(self.lsn));
        for l in &self.layers {
            i.layer_metadata.insert(layer(*l).to_string(), meta());
        }
        UploadOp::UploadIndex {
            bytes: Bytes::from(i.to_json().unwrap()),
            index: Arc::new(i),
        }
    }
}

fn upload(i: u64) -> UploadOp {
    UploadOp::UploadLayer {
        name: layer(i),
        meta: meta(),
        local: PathBuf::from(format!("/x/{i}")),
    }
}

#[test]
fn an_index_waits_for_the_layers_it_names_and_a_deletion_for_the_index() {
    let mut q = UploadQueue::new(10, None);
    let mut p = Projected {
        layers: BTreeSet::new(),
        lsn: 1,
    };
    let up = q.push(upload(1)).unwrap();
    p.layers.insert(1);
    q.push(p.index()).unwrap();
    let started = q.take_ready();
    assert_eq!(started.len(), 1, "only the layer upload: {started:?}");
    assert_eq!(started[0].0, up);
    q.complete(up);
    let started = q.take_ready();
    assert!(matches!(started[..], [(_, UploadOp::UploadIndex { .. })]));
    // Delete layer 1: a new index without it, then the deletion.
    p.layers.remove(&1);
    p.lsn = 2;
    q.push(p.index()).unwrap();
    q.push(UploadOp::Delete {
        layers: vec![(layer(1), GEN)],
    })
    .unwrap();
    assert!(
        q.take_ready().is_empty(),
        "the first index is still running"
    );
    q.complete(started[0].0);
    let s = q.take_ready();
    assert!(
        matches!(s[..], [(_, UploadOp::UploadIndex { .. })]),
        "{s:?}"
    );
    assert!(
        q.take_ready().is_empty(),
        "the deletion waits for the index"
    );
    q.complete(s[0].0);
    let d = q.take_ready();
    assert!(matches!(d[..], [(_, UploadOp::Delete { .. })]));
    q.complete(d[0].0);
    assert!(q.is_idle());
}

#[test]
fn queued_indexes_coalesce_and_barriers_fence() {
    let mut q = UploadQueue::new(10, None);
    let mut p = Projected {
        layers: BTreeSet::new(),
        lsn: 1,
    };
    for lsn in 1..=5 {
        p.lsn = lsn;
        q.push(p.index()).unwrap();
    }
    let b = q.push(UploadOp::Barrier).unwrap();
    q.push(upload(9)).unwrap();
    let s = q.take_ready();
    assert_eq!(s.len(), 1);
    let UploadOp::UploadIndex { index, .. } = &s[0].1 else {
        panic!("{s:?}")
    };
    assert_eq!(index.metadata.disk_consistent_lsn, Lsn(5), "the newest one");
    assert_eq!(q.coalesced, 4);
    q.complete(s[0].0);
    let s = q.take_ready();
    assert_eq!(s[0].0, b);
    assert!(q.take_ready().is_empty(), "nothing passes a barrier");
    q.complete(b);
    assert!(q.completed_through(b));
    assert_eq!(q.take_ready().len(), 1);
    q.push(UploadOp::Shutdown).unwrap();
    assert_eq!(q.push(UploadOp::Barrier), Err(QueueStopped));
}

#[test]
fn the_limit_bounds_parallel_work() {
    let mut q = UploadQueue::new(3, None);
    for i in 0..10 {
        q.push(upload(i)).unwrap();
    }
    let s = q.take_ready();
    assert_eq!(s.len(), 3);
    q.complete(s[1].0);
    assert_eq!(q.take_ready().len(), 1);
    assert_eq!(q.depth(OpKind::UploadLayer), 9);
}

/// Random schedules and completion orders against a model of the bucket: after every
/// completion, the uploaded index names only uploaded layers; no deletion starts while an
/// uploaded or running index names its layers; a drained queue has uploaded the newest
/// index.
#[test]
fn random_schedules_keep_the_invariants() {
    for seed in 0..300 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut q = UploadQueue::new(rng.random_range(1..=6), None);
        let mut p = Projected {
            layers: BTreeSet::new(),
            lsn: 0,
        };
        let mut bucket: BTreeSet<u64> = BTreeSet::new();
        let mut running: Vec<(OpId, UploadOp)> = Vec::new();
        let mut next_layer = 0;
        let mut last_index_lsn = 0;
        for _ in 0..200 {
            match rng.random_range(0..10) {
                0..3 => {
                    next_layer += 1;
                    q.push(upload(next_layer)).unwrap();
                    p.layers.insert(next_layer);
                    p.lsn += 1;
                    q.push(p.index()).unwrap();
                    last_index_lsn = p.lsn;
                }
                3 if !p.layers.is_empty() => {
                    let victims: Vec<u64> = p
                        .layers
                        .iter()
                        .copied()
                        .filter(|_| rng.random_bool(0.4))
                        .collect();
                    for v in &victims {
                        p.layers.remove(v);
                    }
                    p.lsn += 1;
                    q.push(p.index()).unwrap();
                    last_index_lsn = p.lsn;
                    q.push(UploadOp::Delete {
                        layers: victims.iter().map(|v| (layer(*v), GEN)).collect(),
                    })
                    .unwrap();
                }
                4 => {
                    q.push(UploadOp::Barrier).unwrap();
                }
                _ => {}
            }
            for (id, op) in q.take_ready() {
                if let UploadOp::Delete { layers } = &op {
                    for (n, g) in layers {
                        let named_by = |i: &IndexPart| i.names(n, *g);
                        assert!(!q.clean().is_some_and(|c| named_by(c)), "seed {seed}");
                        assert!(
                            !running.iter().any(|(_, r)| matches!(
                                r,
                                UploadOp::UploadIndex { index, .. } if named_by(index)
                            )),
                            "seed {seed}: deletion while a running index names {n}"
                        );
                    }
                }
                running.push((id, op));
            }
            // Complete a random running op.
            if !running.is_empty() && rng.random_bool(0.7) {
                let (id, op) = running.swap_remove(rng.random_range(0..running.len()));
                match &op {
                    UploadOp::UploadLayer { local, .. } => {
                        let n: u64 = local
                            .file_name()
                            .unwrap()
                            .to_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        bucket.insert(n);
                    }
                    UploadOp::Delete { layers } => {
                        for (n, _) in layers {
                            bucket.retain(|b| layer(*b) != *n);
                        }
                    }
                    _ => {}
                }
                q.complete(id);
                if let Some(clean) = q.clean() {
                    for (name, _) in clean.layers() {
                        assert!(
                            bucket.iter().any(|b| layer(*b) == name),
                            "seed {seed}: the uploaded index names {name}, not uploaded"
                        );
                    }
                }
            }
        }
        // Drain.
        loop {
            for r in q.take_ready() {
                running.push(r);
            }
            let Some((id, _)) = running.pop() else { break };
            q.complete(id);
        }
        assert!(q.is_idle(), "seed {seed}: stuck");
        if last_index_lsn > 0 {
            let clean = q.clean().unwrap();
            assert_eq!(
                clean.metadata.disk_consistent_lsn,
                Lsn(last_index_lsn),
                "seed {seed}"
            );
        }
    }
}
