//! Importing a cleanly stopped PostgreSQL 15 data directory as one image layer.
//!
//! The same code bootstraps a new timeline (after `initdb`) and brings an existing
//! database in (`import_pgdata`). The image layer is at the end LSN of the cluster's
//! shutdown checkpoint record: the compute's WAL continues exactly there.
//!
//! What is imported (`docs/pageserver_keyspace.md`): every fork of every relation in
//! `global/` and `base/<db>/` (segments joined), the relation maps, the database
//! directories, the SLRUs (`pg_xact`, `pg_multixact/{offsets,members}`), `pg_twophase`,
//! `global/pg_control` and its checkpoint, and the files a data directory needs back
//! (`PG_VERSION`, the configuration files). Everything else is PostgreSQL's runtime state
//! (`pg_wal`, `pg_stat*`, `postmaster.*`, caches) and is left out. User tablespaces are
//! refused with a clear error.
//!
//! Two passes keep memory bounded: a manifest of what exists, then one sequential write
//! in key order that streams pages from the files.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use pageserver_api::reltag::{
    FSM_FORKNUM, INIT_FORKNUM, MAIN_FORKNUM, RelTag, VISIBILITYMAP_FORKNUM,
};
use postgres_ffi::WalStreamDecoder;
use postgres_ffi::controlfile::{ControlFileData, DbState};
use postgres_ffi::decoder::WalDecoderConfig;
use postgres_ffi::slru::SLRU_PAGES_PER_SEGMENT;
use postgres_ffi::types::{DEFAULTTABLESPACE_OID, GLOBALTABLESPACE_OID};
use postgres_ffi::v15::{RM_XLOG_ID, XLOG_CHECKPOINT_SHUTDOWN};
use postgres_ffi::wal_segment::xlog_file_name;
use utils::crashsafe::Sync;
use utils::{Lsn, TenantId, TimelineId};

use crate::keyspace::{self, DIR_ENTRY_PRESENT, Key, RelSizeEntry};
use crate::layers::LayerName;
use crate::layers::file_format::{LayerFileError, LayerWriter};
use crate::value;
use crate::walingest::{SlruKind, Value};
use postgres_ffi::BLCKSZ;

/// Blocks per relation segment file (1 GiB).
const RELSEG_BLOCKS: u64 = 131_072;

/// Root files a basebackup must give back.
pub const KEPT_ROOT_FILES: &[&str] = &[
    "PG_VERSION",
    "postgresql.conf",
    "postgresql.auto.conf",
    "pg_hba.conf",
    "pg_ident.conf",
];

/// Why a data directory cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The directory is not an importable cluster.
    #[error("{0}")]
    Invalid(String),
    /// Writing the image layer failed.
    #[error(transparent)]
    Layer(#[from] LayerFileError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the import found and where the timeline starts.
#[derive(Debug, Clone)]
pub struct ImportResult {
    /// The image layer's LSN: the end of the shutdown checkpoint record.
    pub lsn: Lsn,
    /// The checkpoint record's start.
    pub prev_record_lsn: Lsn,
    /// The image layers written, in key order, with their paths: together they cover the
    /// whole key space.
    pub layers: Vec<(LayerName, PathBuf)>,
    /// Relation forks imported.
    pub relations: usize,
    /// Pages imported (relations and SLRUs).
    pub pages: u64,
    /// The cluster's system identifier.
    pub system_id: u64,
}

#[derive(Default)]
struct Manifest {
    /// Relation fork → its segment files in order.
    rels: BTreeMap<RelTag, Vec<PathBuf>>,
    dbs: Vec<(u32, u32)>,
    relmaps: BTreeMap<(u32, u32), PathBuf>,
    slru: BTreeMap<(u32, u32), PathBuf>,
    twophase: BTreeMap<u32, PathBuf>,
    files: Vec<(Key, String, PathBuf)>,
}

fn parse_rel_file(name: &str) -> Option<(u32, u8, u64)> {
    let (base, segno) = match name.split_once('.') {
        Some((b, s)) => (b, s.parse::<u64>().ok()?),
        None => (name, 0),
    };
    let (node, fork) = match base.split_once('_') {
        Some((n, "fsm")) => (n, FSM_FORKNUM),
        Some((n, "vm")) => (n, VISIBILITYMAP_FORKNUM),
        Some((n, "init")) => (n, INIT_FORKNUM),
        Some(_) => return None,
        None => (base, MAIN_FORKNUM),
    };
    if node.is_empty() || !node.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((node.parse().ok()?, fork, segno))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<(String, PathBuf)>, ImportError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
    }
    out.sort();
    Ok(out)
}

fn scan_rel_dir(m: &mut Manifest, dir: &Path, spc: u32, db: u32) -> Result<(), ImportError> {
    let mut segs: BTreeMap<RelTag, BTreeMap<u64, PathBuf>> = BTreeMap::new();
    for (name, path) in read_dir_sorted(dir)? {
        if name == "pg_filenode.map" {
            m.relmaps.insert((spc, db), path);
        } else if let Some((relnode, fork, segno)) = parse_rel_file(&name) {
            let tag = RelTag {
                spcnode: spc,
                dbnode: db,
                relnode,
                forknum: fork,
            };
            segs.entry(tag).or_default().insert(segno, path);
        }
        // Anything else (PG_VERSION, pg_internal.init, temp files) is not history.
    }
    for (tag, s) in segs {
        let expected: Vec<u64> = (0..s.len() as u64).collect();
        if s.keys().copied().collect::<Vec<_>>() != expected {
            return Err(ImportError::Invalid(format!(
                "{}: relation {tag} has missing segment files",
                dir.display()
            )));
        }
        m.rels.insert(tag, s.into_values().collect());
    }
    Ok(())
}

fn scan(datadir: &Path) -> Result<Manifest, ImportError> {
    let mut m = Manifest::default();
    scan_rel_dir(&mut m, &datadir.join("global"), GLOBALTABLESPACE_OID, 0)?;
    m.dbs.push((GLOBALTABLESPACE_OID, 0));
    for (name, path) in read_dir_sorted(&datadir.join("base"))? {
        let Ok(db) = name.parse::<u32>() else {
            continue;
        };
        scan_rel_dir(&mut m, &path, DEFAULTTABLESPACE_OID, db)?;
        m.dbs.push((DEFAULTTABLESPACE_OID, db));
    }
    let tblspc = datadir.join("pg_tblspc");
    if tblspc.is_dir() && !read_dir_sorted(&tblspc)?.is_empty() {
        return Err(ImportError::Invalid(format!(
            "{}: user tablespaces are not supported",
            tblspc.display()
        )));
    }
    for kind in [
        SlruKind::Clog,
        SlruKind::MultiXactMembers,
        SlruKind::MultiXactOffsets,
    ] {
        let dir = datadir.join(keyspace::slru_dir(kind));
        for (name, path) in read_dir_sorted(&dir)? {
            let Ok(segno) = u32::from_str_radix(&name, 16) else {
                continue;
            };
            m.slru
                .insert((keyspace::slru_kind_number(kind), segno), path);
        }
    }
    let twophase = datadir.join("pg_twophase");
    if twophase.is_dir() {
        for (name, path) in read_dir_sorted(&twophase)? {
            if let Ok(xid) = u32::from_str_radix(&name, 16) {
                m.twophase.insert(xid, path);
            }
        }
    }
    for name in KEPT_ROOT_FILES {
        let path = datadir.join(name);
        if path.is_file() {
            m.files
                .push((keyspace::file_key(name), name.to_string(), path));
        }
    }
    m.files.sort_by_key(|(k, _, _)| *k);
    m.dbs.sort();
    Ok(m)
}

/// Finds the end of the shutdown checkpoint record that `pg_control` names.
fn checkpoint_end(datadir: &Path, control: &ControlFileData) -> Result<Lsn, ImportError> {
    let seg_size = u64::from(control.xlog_seg_size);
    let start = control.checkpoint;
    let segno = start.segment_number(seg_size);
    let tli = control.checkpoint_copy.this_timeline_id;
    let path = datadir
        .join("pg_wal")
        .join(xlog_file_name(tli, segno, seg_size));
    let file = File::open(&path).map_err(io(&path))?;
    let mut config = WalDecoderConfig::v15_default();
    config.seg_size = seg_size;
    config.system_id = Some(control.system_identifier);
    let mut decoder = WalStreamDecoder::new(start, config);
    let mut off = start.segment_offset(seg_size);
    let mut buf = vec![0u8; 64 * 1024];
    // The record may continue into the next segment: read on if it does.
    let mut seg_file = file;
    let mut cur_seg = segno;
    loop {
        let n = seg_file.read_at(&mut buf, off).map_err(io(&path))?;
        if n == 0 {
            cur_seg += 1;
            let next = datadir
                .join("pg_wal")
                .join(xlog_file_name(tli, cur_seg, seg_size));
            seg_file = File::open(&next).map_err(io(&next))?;
            off = 0;
            continue;
        }
        decoder.feed_bytes(&buf[..n]);
        off += n as u64;
        match decoder.poll_decode() {
            Ok(Some((rec_start, end, rec))) => {
                if rec_start != start
                    || rec.rmid() != RM_XLOG_ID
                    || rec.rmgr_info() != XLOG_CHECKPOINT_SHUTDOWN
                {
                    return Err(ImportError::Invalid(format!(
                        "the record at {start} is not a shutdown checkpoint"
                    )));
                }
                return Ok(end);
            }
            Ok(None) => continue,
            Err(e) => {
                return Err(ImportError::Invalid(format!(
                    "reading the checkpoint record at {start}: {e}"
                )));
            }
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, ImportError> {
    std::fs::read(path).map_err(io(path))
}

/// Imports `datadir` (cleanly shut down) into one image layer in `layer_dir`.
pub fn import_datadir(
    datadir: &Path,
    layer_dir: &Path,
    tenant_id: TenantId,
    timeline_id: TimelineId,
    sync: Sync,
) -> Result<ImportResult, ImportError> {
    let control_path = datadir.join("global").join("pg_control");
    let control_bytes = read_file(&control_path)?;
    let control = ControlFileData::decode(&control_bytes)
        .map_err(|e| ImportError::Invalid(format!("{}: {e}", control_path.display())))?;
    if control.state != DbState::Shutdowned {
        return Err(ImportError::Invalid(format!(
            "{}: the cluster is not cleanly shut down (state: {}); stop it with pg_ctl stop -m fast first",
            datadir.display(),
            control.state.description()
        )));
    }
    if control.blcksz as usize != BLCKSZ {
        return Err(ImportError::Invalid(format!(
            "block size {} is not supported",
            control.blcksz
        )));
    }
    let version = std::fs::read_to_string(datadir.join("PG_VERSION")).unwrap_or_default();
    if version.trim() != "15" {
        return Err(ImportError::Invalid(format!(
            "{}: PG_VERSION is {:?}, only PostgreSQL 15 is supported",
            datadir.display(),
            version.trim()
        )));
    }
    let lsn = checkpoint_end(datadir, &control)?;
    let m = scan(datadir)?;

    let mut w = ImageLayers::new(
        layer_dir,
        tenant_id,
        timeline_id,
        lsn,
        IMAGE_LAYER_TARGET_BYTES,
        sync,
    );
    let mut stored = bytes::BytesMut::new();
    let mut put = |w: &mut ImageLayers, key: Key, v: Value| -> Result<(), ImportError> {
        stored.clear();
        let is_image = matches!(v, Value::Image(_));
        value::encode(&v, &mut stored);
        w.put(key, &stored, is_image)
    };
    let mut pages = 0u64;
    let mut sizes = Vec::new();
    // Relation blocks (kind 0), in key order.
    for (tag, segs) in &m.rels {
        let mut blk: u64 = 0;
        let mut page = vec![0u8; BLCKSZ];
        for (i, seg) in segs.iter().enumerate() {
            let f = File::open(seg).map_err(io(seg))?;
            let len = f.metadata().map_err(io(seg))?.len();
            if len % BLCKSZ as u64 != 0 {
                return Err(ImportError::Invalid(format!(
                    "{}: {len} bytes is not a whole number of pages",
                    seg.display()
                )));
            }
            if i + 1 < segs.len() && len != RELSEG_BLOCKS * BLCKSZ as u64 {
                return Err(ImportError::Invalid(format!(
                    "{}: a segment before the last is not full",
                    seg.display()
                )));
            }
            for b in 0..len / BLCKSZ as u64 {
                f.read_exact_at(&mut page, b * BLCKSZ as u64)
                    .map_err(io(seg))?;
                put(
                    &mut w,
                    keyspace::rel_block_key(*tag, blk as u32),
                    Value::Image(bytes::Bytes::copy_from_slice(&page)),
                )?;
                blk += 1;
                pages += 1;
            }
        }
        sizes.push((*tag, blk as u32));
    }
    // Relation sizes (kind 1).
    for (tag, n) in &sizes {
        put(
            &mut w,
            keyspace::rel_size_key(*tag),
            Value::Image(bytes::Bytes::copy_from_slice(
                &RelSizeEntry { nblocks: *n }.encode(),
            )),
        )?;
    }
    // Database directories (kind 2) and relation maps (kind 3).
    for (spc, db) in &m.dbs {
        put(
            &mut w,
            keyspace::db_dir_key(*spc, *db),
            Value::Image(bytes::Bytes::from_static(DIR_ENTRY_PRESENT)),
        )?;
    }
    for ((spc, db), path) in &m.relmaps {
        put(
            &mut w,
            keyspace::relmap_key(*spc, *db),
            Value::Image(read_file(path)?.into()),
        )?;
    }
    // SLRU pages (kind 4), then segments (kind 5).
    let mut seg_sizes = Vec::new();
    for ((kind, segno), path) in &m.slru {
        let data = read_file(path)?;
        if data.len() % BLCKSZ != 0 || data.len() > SLRU_PAGES_PER_SEGMENT as usize * BLCKSZ {
            return Err(ImportError::Invalid(format!(
                "{}: {} bytes is not a valid SLRU segment",
                path.display(),
                data.len()
            )));
        }
        let kind_enum = keyspace::slru_kind_from_number(*kind)
            .ok_or_else(|| ImportError::Invalid(format!("SLRU kind {kind}")))?;
        for (i, chunk) in data.chunks(BLCKSZ).enumerate() {
            put(
                &mut w,
                keyspace::slru_block_key(kind_enum, segno * SLRU_PAGES_PER_SEGMENT + i as u32),
                Value::Image(bytes::Bytes::copy_from_slice(chunk)),
            )?;
            pages += 1;
        }
        seg_sizes.push((kind_enum, *segno, (data.len() / BLCKSZ) as u32));
    }
    for (kind, segno, n) in seg_sizes {
        put(
            &mut w,
            keyspace::slru_segment_key(kind, segno),
            Value::Image(bytes::Bytes::copy_from_slice(&n.to_le_bytes())),
        )?;
    }
    // Two-phase files (kind 6), control and checkpoint (kind 7), other files (kind 8).
    for (xid, path) in &m.twophase {
        put(
            &mut w,
            keyspace::twophase_key(*xid),
            Value::Image(read_file(path)?.into()),
        )?;
    }
    put(
        &mut w,
        keyspace::CONTROLFILE_KEY,
        Value::Image(control_bytes.clone().into()),
    )?;
    put(
        &mut w,
        keyspace::CHECKPOINT_KEY,
        Value::Image(bytes::Bytes::copy_from_slice(
            &control.checkpoint_copy.encode(),
        )),
    )?;
    for (key, rel_path, path) in &m.files {
        let contents = read_file(path)?;
        put(
            &mut w,
            *key,
            Value::Image(keyspace::encode_file_value(rel_path, &contents).into()),
        )?;
    }
    let layers = w.finish()?;
    Ok(ImportResult {
        lsn,
        prev_record_lsn: control.checkpoint,
        layers,
        relations: m.rels.len(),
        pages,
        system_id: control.system_identifier,
    })
}

/// Bytes of values (as stored, after compression) after which the import starts a new image
/// layer: a read of an evicted layer downloads one such layer, not the whole database.
pub const IMAGE_LAYER_TARGET_BYTES: u64 = 16 << 20;

/// The import's image layers at one LSN, cut by key range at about `target` bytes each.
/// Invariant: their key ranges are adjacent and together `[Key::MIN, Key::MAX)`, so an
/// image layer still answers for every key of its range (a key absent from it does not
/// exist at the LSN).
struct ImageLayers {
    dir: PathBuf,
    tenant_id: TenantId,
    timeline_id: TimelineId,
    lsn: Lsn,
    target: u64,
    current: Option<LayerWriter>,
    current_start: Key,
    done: Vec<(LayerName, PathBuf)>,
    sync: Sync,
}

impl ImageLayers {
    fn new(
        dir: &Path,
        tenant_id: TenantId,
        timeline_id: TimelineId,
        lsn: Lsn,
        target: u64,
        sync: Sync,
    ) -> Self {
        ImageLayers {
            dir: dir.to_path_buf(),
            tenant_id,
            timeline_id,
            lsn,
            target,
            current: None,
            current_start: Key::MIN,
            done: Vec::new(),
            sync,
        }
    }

    fn writer(&mut self) -> Result<&mut LayerWriter, ImportError> {
        if self.current.is_none() {
            let name = LayerName::image(self.current_start..Key::MAX, self.lsn);
            self.current = Some(LayerWriter::create(
                &self.dir,
                self.tenant_id,
                self.timeline_id,
                &name,
                true,
            )?);
        }
        self.current
            .as_mut()
            .ok_or_else(|| ImportError::Invalid("no layer writer".into()))
    }

    /// Keys come in increasing order; a full layer is closed at the first key it cannot
    /// take, which starts the next.
    fn put(&mut self, key: Key, stored: &[u8], is_image: bool) -> Result<(), ImportError> {
        if self
            .current
            .as_ref()
            .is_some_and(|w| w.bytes_written() >= self.target)
        {
            self.close(key)?;
        }
        let lsn = self.lsn;
        self.writer()?.put(key, lsn, stored, true, is_image)?;
        Ok(())
    }

    fn close(&mut self, end: Key) -> Result<(), ImportError> {
        if let Some(mut w) = self.current.take() {
            w.set_key_end(end)?;
            let name = LayerName::image(self.current_start..end, self.lsn);
            let (path, _) = w.finish(self.sync)?;
            self.done.push((name, path));
            self.current_start = end;
        }
        Ok(())
    }

    /// Closes the last layer at `Key::MAX` (an empty one when nothing was put).
    fn finish(mut self) -> Result<Vec<(LayerName, PathBuf)>, ImportError> {
        self.writer()?;
        self.close(Key::MAX)?;
        Ok(self.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_layers_are_cut_by_size_and_cover_the_key_space_without_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let (t, tl) = (TenantId::generate(), TimelineId::generate());
        let mut w = ImageLayers::new(dir.path(), t, tl, Lsn(0x100), 64 << 10, Sync::No);
        let key = |n: u32| Key { f6: n, ..Key::MIN };
        let page = vec![7u8; BLCKSZ];
        for n in 0..100u32 {
            // Incompressible: xorshift noise, seeded per page.
            let mut p = page.clone();
            let mut x = 0x9E37_79B9_u32 ^ (n + 1);
            for b in p.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            w.put(key(n), &p, true).unwrap();
        }
        let layers = w.finish().unwrap();
        assert!(layers.len() > 5, "{} layers", layers.len());
        assert_eq!(layers[0].0.key_range.start, Key::MIN);
        assert_eq!(layers.last().unwrap().0.key_range.end, Key::MAX);
        for pair in layers.windows(2) {
            assert_eq!(pair[0].0.key_range.end, pair[1].0.key_range.start);
        }
        let cache = std::sync::Arc::new(crate::page_cache::PageCache::new(16));
        let mut found = 0;
        for (name, path) in &layers {
            let f = crate::layers::file_format::LayerFile::open(path, cache.clone()).unwrap();
            assert_eq!(f.summary().name(), *name);
            found += f.summary().value_count;
        }
        assert_eq!(found, 100);
    }

    #[test]
    fn relation_file_names() {
        assert_eq!(parse_rel_file("16384"), Some((16384, MAIN_FORKNUM, 0)));
        assert_eq!(
            parse_rel_file("16384_vm"),
            Some((16384, VISIBILITYMAP_FORKNUM, 0))
        );
        assert_eq!(parse_rel_file("16384_fsm.2"), Some((16384, FSM_FORKNUM, 2)));
        assert_eq!(parse_rel_file("1259_init"), Some((1259, INIT_FORKNUM, 0)));
        for bad in [
            "pg_filenode.map",
            "PG_VERSION",
            "pg_internal.init",
            "t3_16384",
            "16384_x",
        ] {
            assert_eq!(parse_rel_file(bad), None, "{bad}");
        }
    }
}
