//! Reading a PostgreSQL `pg_wal` directory into per-page histories.
//!
//! Feeds the segments from `start` onwards through the decoder and [`walingest`], and
//! collects every page's values in LSN order. The first invalid record ends the WAL, as in
//! PostgreSQL's crash recovery (recycled segments and unwritten tails look like that).
//! Used by the redo oracle test and benchmarks, and the seed of importing an existing
//! cluster's WAL.
//!
//! [`walingest`]: crate::walingest

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use postgres_ffi::WalStreamDecoder;
use postgres_ffi::decoder::WalDecoderConfig;
use postgres_ffi::wal_segment::parse_xlog_file_name;
use utils::Lsn;

use crate::walingest::{IngestError, PageKey, Value, record_values};

/// A page's values, each at the LSN where its record ends.
pub type History = Vec<(Lsn, Value)>;

/// What [`read_wal_dir`] found.
#[derive(Debug, Default)]
pub struct PageHistories {
    /// Every page's history, in LSN order.
    pub pages: BTreeMap<PageKey, History>,
    /// Records decoded.
    pub records: usize,
    /// Full-page images stored compressed (pglz, lz4 or zstd).
    pub compressed_fpis: usize,
    /// Where valid WAL ended.
    pub end_lsn: Lsn,
    /// Why decoding stopped there.
    pub end_reason: String,
}

/// Why a WAL directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WalImportError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// What.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The segment holding the start LSN is not there (removed or recycled).
    #[error("no WAL segment holds {0} (removed or recycled?)")]
    MissingStart(Lsn),
    /// A record decoded but its contents do not make sense.
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

/// Decodes `wal_dir` from `start` (a record boundary) to the end of valid WAL.
pub fn read_wal_dir(
    wal_dir: &Path,
    start: Lsn,
    seg_size: u64,
) -> Result<PageHistories, WalImportError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WalImportError::Io { path, source }
    };
    let mut segments: Vec<(u64, PathBuf)> = std::fs::read_dir(wal_dir)
        .map_err(io(wal_dir))?
        .filter_map(|e| {
            let e = e.ok()?;
            let (segno, _) = parse_xlog_file_name(&e.file_name().to_string_lossy(), seg_size)?;
            Some((segno, e.path()))
        })
        .collect();
    segments.sort();
    let first = start.segment_number(seg_size);
    if !segments.iter().any(|(s, _)| *s == first) {
        return Err(WalImportError::MissingStart(start));
    }
    let config = WalDecoderConfig {
        seg_size,
        ..WalDecoderConfig::v15_default()
    };
    let mut decoder = WalStreamDecoder::new(start, config);
    let mut out = PageHistories {
        end_lsn: start,
        ..Default::default()
    };
    'segments: for (segno, path) in segments.into_iter().filter(|(s, _)| *s >= first) {
        let data = std::fs::read(&path).map_err(io(&path))?;
        let from = if segno == first {
            start.segment_offset(seg_size) as usize
        } else {
            0
        };
        decoder.feed_bytes(data.get(from..).unwrap_or_default());
        loop {
            match decoder.poll_decode() {
                Ok(Some((start_lsn, end_lsn, rec))) => {
                    out.records += 1;
                    out.end_lsn = end_lsn;
                    out.compressed_fpis += rec
                        .blocks
                        .iter()
                        .filter(|b| b.image.as_ref().is_some_and(|i| i.compression().is_some()))
                        .count();
                    for (key, value) in record_values(&rec, start_lsn, end_lsn)? {
                        out.pages.entry(key).or_default().push((end_lsn, value));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    out.end_reason = e.to_string();
                    break 'segments;
                }
            }
        }
    }
    if out.end_reason.is_empty() {
        out.end_reason = "end of the last segment".into();
    }
    Ok(out)
}

/// What rebuilding a page needs from its history: the base image (if any) and the records
/// to apply on top.
#[derive(Debug, Clone, Default)]
pub struct PageReplay {
    /// The latest image and its LSN; `None` when the replay starts with an initializing
    /// record (or the history has neither, which redo will reject).
    pub base: Option<(Lsn, bytes::Bytes)>,
    /// The records after the base, in LSN order.
    pub records: Vec<(Lsn, crate::walrecord::WalRecord)>,
}

impl PageReplay {
    /// The shortest replay that rebuilds the page's last version: from the latest image or
    /// the latest record that initializes the page, whichever comes last.
    pub fn from_history(history: &[(Lsn, Value)]) -> Self {
        let start = history.iter().rposition(|(_, v)| match v {
            Value::Image(_) => true,
            Value::Record(r) => r.will_init(),
        });
        let (base, rest) = match start.map(|i| (i, &history[i])) {
            Some((i, (lsn, Value::Image(img)))) => (Some((*lsn, img.clone())), &history[i + 1..]),
            Some((i, _)) => (None, &history[i..]),
            None => (None, history),
        };
        let records = rest
            .iter()
            .filter_map(|(lsn, v)| match v {
                Value::Record(r) => Some((*lsn, r.clone())),
                Value::Image(_) => None,
            })
            .collect();
        PageReplay { base, records }
    }

    /// The base as `request_redo` takes it.
    pub fn base_ref(&self) -> Option<(Lsn, &[u8])> {
        self.base.as_ref().map(|(lsn, img)| (*lsn, &img[..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walrecord::WalRecord;
    use bytes::Bytes;

    fn rec(start: u64, will_init: bool) -> Value {
        Value::Record(WalRecord::Postgres {
            start_lsn: Lsn(start),
            will_init,
            rec: Bytes::new(),
        })
    }

    #[test]
    fn replay_starts_at_the_latest_image_or_init() {
        let img = Value::Image(Bytes::from_static(b"page"));
        let h = vec![
            (Lsn(10), rec(5, true)),
            (Lsn(20), img.clone()),
            (Lsn(30), rec(25, false)),
        ];
        let r = PageReplay::from_history(&h);
        assert_eq!(r.base.as_ref().map(|b| b.0), Some(Lsn(20)));
        assert_eq!(r.records.len(), 1);

        let h = vec![
            (Lsn(20), img),
            (Lsn(30), rec(25, true)),
            (Lsn(40), rec(35, false)),
        ];
        let r = PageReplay::from_history(&h);
        assert!(
            r.base.is_none(),
            "a later initializing record makes the image irrelevant"
        );
        assert_eq!(
            r.records.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![Lsn(30), Lsn(40)]
        );

        let h = vec![(Lsn(30), rec(25, false))];
        assert_eq!(PageReplay::from_history(&h).records.len(), 1);
    }
}
