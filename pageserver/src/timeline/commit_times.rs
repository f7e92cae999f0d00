//! Which LSN a wall-clock time corresponds to, for retention by time (the PITR interval).
//!
//! Ingest notes every commit's `xact_time` and end LSN; this keeps a bounded, sampled list
//! (at most one sample per [`SAMPLE_EVERY_US`] of commit time, at most [`MAX_SAMPLES`]; when
//! full, every second sample is dropped (the oldest stays), which keeps the whole range at half
//! the resolution).
//! The list lives in memory: after a restart it starts empty and fills as commits arrive.
//!
//! Answers are conservative: [`CommitTimes::cutoff_for`] returns an LSN at or below the first
//! commit after the asked time, or `None` when it does not know (no sample at or before that
//! time), and callers then keep everything. A retention cutoff from here can only be too
//! early (keeping more), never too late.

use parking_lot::Mutex;
use postgres_ffi::TimestampTz;
use utils::Lsn;

/// One sample per this much commit time (microseconds).
pub const SAMPLE_EVERY_US: i64 = 1_000_000;
/// Samples kept per timeline (16 bytes each).
pub const MAX_SAMPLES: usize = 8192;

/// The sampled `(commit time, end LSN)` pairs of one timeline, oldest first.
#[derive(Debug, Default)]
pub struct CommitTimes {
    samples: Mutex<Vec<(TimestampTz, Lsn)>>,
}

impl CommitTimes {
    /// Notes a commit at `time` that ended at `lsn`. Commits whose time is below the newest
    /// sample (a clock step back) are ignored, so the list stays sorted by time and LSN.
    pub fn note(&self, time: TimestampTz, lsn: Lsn) {
        let mut samples = self.samples.lock();
        if let Some(&(last_time, last_lsn)) = samples.last()
            && (time < last_time.saturating_add(SAMPLE_EVERY_US) || lsn <= last_lsn)
        {
            return;
        }
        if samples.len() >= MAX_SAMPLES {
            let mut index = 0;
            samples.retain(|_| {
                index += 1;
                index % 2 == 1
            });
        }
        samples.push((time, lsn));
    }

    /// An LSN such that every commit after `time` is above it: the LSN of the newest sampled
    /// commit at or before `time`. `None` when no sample is that old.
    pub fn cutoff_for(&self, time: TimestampTz) -> Option<Lsn> {
        let samples = self.samples.lock();
        let after = samples.partition_point(|&(t, _)| t <= time);
        after.checked_sub(1).map(|index| samples[index].1)
    }

    /// How many samples are kept (for tests and the debug view).
    pub fn len(&self) -> usize {
        self.samples.lock().len()
    }

    /// Whether nothing has been sampled yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_once_per_interval_and_answers_conservatively() {
        let times = CommitTimes::default();
        times.note(10_000_000, Lsn(100));
        times.note(10_500_000, Lsn(150)); // within the interval: not sampled
        times.note(11_000_000, Lsn(200));
        times.note(10_000_000, Lsn(250)); // clock stepped back: ignored
        assert_eq!(times.len(), 2);
        assert_eq!(times.cutoff_for(9_999_999), None);
        assert_eq!(times.cutoff_for(10_000_000), Some(Lsn(100)));
        // The commit at 10.5 s ended at 150: a cutoff at 100 keeps it.
        assert_eq!(times.cutoff_for(10_700_000), Some(Lsn(100)));
        assert_eq!(times.cutoff_for(i64::MAX), Some(Lsn(200)));
    }

    #[test]
    fn a_full_list_halves_its_resolution_and_keeps_its_range() {
        let times = CommitTimes::default();
        for i in 0..(MAX_SAMPLES as i64 * 3) {
            times.note(i * SAMPLE_EVERY_US, Lsn(i as u64 + 1));
        }
        assert!(times.len() <= MAX_SAMPLES);
        let newest = (MAX_SAMPLES as i64 * 3 - 1) * SAMPLE_EVERY_US;
        assert_eq!(times.cutoff_for(newest), Some(Lsn(MAX_SAMPLES as u64 * 3)));
        let oldest = times.cutoff_for(MAX_SAMPLES as i64 * SAMPLE_EVERY_US);
        assert!(
            oldest.is_some_and(|lsn| lsn <= Lsn(MAX_SAMPLES as u64 + 1)),
            "{oldest:?}"
        );
    }
}
