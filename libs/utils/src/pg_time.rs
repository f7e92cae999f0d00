//! PostgreSQL timestamps on the wire: signed microseconds since 2000-01-01 00:00:00 UTC
//! (`TimestampTz`), as replication messages and the feedback block carry them.
//!
//! Conversions truncate to whole microseconds and saturate instead of failing, because a
//! peer's clock value is informational (lag reporting), never a correctness input.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds since 2000-01-01 00:00:00 UTC.
pub type TimestampTz = i64;

/// Seconds from the Unix epoch to PostgreSQL's epoch.
const PG_EPOCH_UNIX_SECS: u64 = 946_684_800;

/// PostgreSQL's epoch, 2000-01-01 00:00:00 UTC, as a [`SystemTime`].
pub fn pg_epoch() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS)
}

/// `t` as a PostgreSQL timestamp (saturating at the `i64` range).
pub fn to_pg_timestamp(t: SystemTime) -> TimestampTz {
    match t.duration_since(pg_epoch()) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros())
            .map(|m| -m)
            .unwrap_or(i64::MIN),
    }
}

/// The [`SystemTime`] of a PostgreSQL timestamp (saturating where the platform's time
/// cannot represent it).
pub fn from_pg_timestamp(ts: TimestampTz) -> SystemTime {
    let epoch = pg_epoch();
    let d = Duration::from_micros(ts.unsigned_abs());
    let t = if ts >= 0 {
        epoch.checked_add(d)
    } else {
        epoch.checked_sub(d)
    };
    t.unwrap_or(epoch)
}

/// The current time as a PostgreSQL timestamp.
pub fn now_pg_timestamp() -> TimestampTz {
    to_pg_timestamp(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for ts in [
            0,
            1,
            -1,
            1_000_000,
            805_000_000_000_000,
            -946_684_800_000_000,
            i64::MAX,
            i64::MIN + 1,
        ] {
            assert_eq!(to_pg_timestamp(from_pg_timestamp(ts)), ts, "{ts}");
        }
        assert_eq!(to_pg_timestamp(UNIX_EPOCH), -946_684_800_000_000);
        assert!(now_pg_timestamp() > 700_000_000_000_000);
    }
}
