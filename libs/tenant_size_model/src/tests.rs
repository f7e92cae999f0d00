//! The calculation against the reference's worked examples and against brute force.

use proptest::prelude::*;

use crate::{Branch, Method, ModelBuilder, ModelError, Segment, StorageModel, calculate};

/// main: start 100 → end 1000, cutoff 700, sizes 300 at 500 and 350 at 700; a child from 500
/// to 600 whose own cutoff is below its start. `wal_500_700` stretches the WAL between the
/// branch point and the cutoff (200 in the reference's example).
pub(crate) fn worked_example(wal_500_700: u64) -> StorageModel {
    let cutoff = 500 + wal_500_700;
    let mut builder = ModelBuilder::new();
    let main = builder.add_root("main", 100, None);
    builder.insert_point(main, 500, Some(300)).unwrap();
    builder.insert_point(main, cutoff, Some(350)).unwrap();
    builder.end_branch(main, cutoff + 300, None).unwrap();
    builder.retain_after(main, cutoff).unwrap();
    let child = builder.add_child("child", main, 500).unwrap();
    builder.end_branch(child, 600, None).unwrap();
    builder.retain_after(child, 400).unwrap();
    builder.build().unwrap()
}

fn methods(model: &StorageModel) -> Vec<Method> {
    calculate(model)
        .unwrap()
        .segments
        .iter()
        .map(|s| s.method)
        .collect()
}

#[test]
fn worked_example_is_900() {
    use Method::*;
    let model = worked_example(200);
    let result = calculate(&model).unwrap();
    assert_eq!(result.total_size, 900);
    assert_eq!(
        methods(&model),
        vec![Skipped, SnapshotHere, Wal, Wal, Wal, Wal]
    );
    let accum: Vec<u64> = result.segments.iter().map(|s| s.accum_size).collect();
    assert_eq!(accum, vec![900, 900, 500, 300, 100, 100]);
}

#[test]
fn worked_example_with_more_wal_before_the_cutoff_is_1050() {
    use Method::*;
    let model = worked_example(1000);
    assert_eq!(calculate(&model).unwrap().total_size, 1050);
    assert_eq!(
        methods(&model),
        vec![Skipped, SnapshotHere, SnapshotHere, Wal, Wal, Wal]
    );
}

#[test]
fn a_fresh_tenant_inside_retention_pays_for_its_wal() {
    let mut builder = ModelBuilder::new();
    let main = builder.add_root("main", 0x0100_0000, Some(8 << 20));
    builder
        .end_branch(main, 0x0100_0000 + 0x4000, None)
        .unwrap();
    builder.retain_after(main, 0).unwrap();
    let result = calculate(&builder.build().unwrap()).unwrap();
    assert_eq!(result.total_size, (8 << 20) + 0x4000);
}

#[test]
fn nothing_to_keep_is_still_at_least_one_byte() {
    let mut builder = ModelBuilder::new();
    let main = builder.add_root("main", 100, None);
    builder.insert_point(main, 200, None).unwrap();
    assert_eq!(calculate(&builder.build().unwrap()).unwrap().total_size, 1);
    assert_eq!(calculate(&StorageModel::default()).unwrap().total_size, 1);
}

#[test]
fn a_needed_root_without_a_size_is_refused() {
    let mut builder = ModelBuilder::new();
    let main = builder.add_root("main", 100, None);
    builder.insert_point(main, 200, None).unwrap();
    builder.retain_after(main, 50).unwrap();
    let error = calculate(&builder.build().unwrap()).unwrap_err();
    assert_eq!(
        error,
        ModelError::NeededWithoutSize {
            branch: "main".into(),
            lsn: 100,
            segment: 0
        }
    );
    assert!(error.to_string().contains("must stay readable"), "{error}");
}

#[test]
fn malformed_models_from_json_are_refused() {
    let mut model = worked_example(200);
    model.segments[4].parent = Some(5);
    assert!(matches!(
        calculate(&model),
        Err(ModelError::ParentNotBefore {
            segment: 4,
            parent: 5
        })
    ));
    let mut model = worked_example(200);
    model.segments[3].lsn = 10;
    assert!(matches!(
        calculate(&model),
        Err(ModelError::LsnBackwards { lsn: 10, .. })
    ));
    let mut model = worked_example(200);
    model.segments[3].branch = 7;
    assert!(matches!(
        calculate(&model),
        Err(ModelError::UnknownBranch { branch: 7, .. })
    ));
}

#[test]
fn inputs_and_results_round_trip_through_json() {
    let model = worked_example(200);
    let result = calculate(&model).unwrap();
    let model_json = serde_json::to_string(&model).unwrap();
    let result_json = serde_json::to_string(&result).unwrap();
    let model_back: StorageModel = serde_json::from_str(&model_json).unwrap();
    assert_eq!(model_back, model);
    assert_eq!(calculate(&model_back).unwrap(), result);
    assert_eq!(
        serde_json::from_str::<crate::SizeResult>(&result_json).unwrap(),
        result
    );
    assert!(result_json.contains("\"SnapshotHere\""), "{result_json}");
}

#[test]
fn deep_chains_and_wide_trees_do_not_overflow_the_stack() {
    let mut builder = ModelBuilder::new();
    let main = builder.add_root("main", 0, Some(1));
    let mut parent = main;
    for depth in 1..=10_000u64 {
        let child = builder
            .add_child(format!("b{depth}"), parent, depth * 10)
            .unwrap();
        builder.retain_after(child, 0).unwrap();
        parent = child;
    }
    builder.end_branch(parent, 1_000_000, None).unwrap();
    let result = calculate(&builder.build().unwrap()).unwrap();
    assert_eq!(result.total_size, 1 + 1_000_000);

    let mut builder = ModelBuilder::new();
    let main = builder.add_root("main", 0, Some(1));
    builder.retain_after(main, 0).unwrap();
    for index in 0..10_000u64 {
        let child = builder.add_child(format!("c{index}"), main, 0).unwrap();
        builder.end_branch(child, 5, None).unwrap();
        builder.retain_after(child, 0).unwrap();
    }
    let result = calculate(&builder.build().unwrap()).unwrap();
    assert_eq!(result.total_size, 1 + 10_000 * 5);
}

/// The cheapest valid assignment of methods, by trying every one (`None`: none is valid).
fn brute_force(model: &StorageModel) -> Option<u128> {
    const METHODS: [Method; 3] = [Method::Wal, Method::SnapshotHere, Method::Skipped];
    let n = model.segments.len();
    let mut best: Option<u128> = None;
    for code in 0..3usize.pow(n as u32) {
        let assignment: Vec<Method> = (0..n)
            .map(|i| METHODS[(code / 3usize.pow(i as u32)) % 3])
            .collect();
        if let Some(cost) = cost_of(model, &assignment) {
            best = Some(best.map_or(cost, |b| b.min(cost)));
        }
    }
    best
}

/// The cost of one assignment, or `None` when it breaks a rule.
fn cost_of(model: &StorageModel, assignment: &[Method]) -> Option<u128> {
    let mut cost = 0u128;
    for (segment, method) in model.segments.iter().zip(assignment) {
        let is_root = segment.parent.is_none();
        match method {
            Method::Skipped if segment.needed => return None,
            Method::Skipped => {}
            Method::SnapshotHere => {
                if segment.needed && !is_root {
                    return None;
                }
                cost += u128::from(segment.size?);
            }
            Method::Wal => {
                let parent = segment.parent?;
                if assignment[parent] == Method::Skipped {
                    return None;
                }
                cost += u128::from(segment.lsn - model.segments[parent].lsn);
            }
        }
    }
    Some(cost)
}

/// Random forests of up to 8 segments: each picks an earlier parent (or none), a distance, a
/// size or none, and whether it is needed.
fn arbitrary_model() -> impl Strategy<Value = StorageModel> {
    prop::collection::vec(
        (
            any::<Option<prop::sample::Index>>(),
            0u64..1000,
            prop::option::of(0u64..1500),
            any::<bool>(),
        ),
        1..=8,
    )
    .prop_map(|raw| {
        let mut segments: Vec<Segment> = Vec::new();
        for (index, (parent, distance, size, needed)) in raw.into_iter().enumerate() {
            let parent = if index == 0 {
                None
            } else {
                parent.map(|p| p.index(index))
            };
            let base = parent.map_or(0, |p: usize| segments[p].lsn);
            segments.push(Segment {
                parent,
                branch: 0,
                lsn: base + distance,
                size,
                needed,
            });
        }
        StorageModel {
            branches: vec![Branch {
                name: "b".into(),
                retention_cutoff: None,
            }],
            segments,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_calculation_finds_the_cheapest_valid_assignment(model in arbitrary_model()) {
        let brute = brute_force(&model);
        match calculate(&model) {
            Ok(result) => {
                let best = brute.expect("the calculation found storage where brute force found none");
                prop_assert_eq!(u128::from(result.total_size), best.max(1));
                let chosen: Vec<Method> = result.segments.iter().map(|s| s.method).collect();
                prop_assert_eq!(cost_of(&model, &chosen), Some(best));
            }
            Err(error) => {
                prop_assert!(brute.is_none(), "refused a keepable model: {}", error);
                let is_needed_without_size =
                    matches!(error, ModelError::NeededWithoutSize { .. });
                prop_assert!(is_needed_without_size, "{}", error);
            }
        }
    }
}
