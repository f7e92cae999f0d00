//! PostgreSQL's page masking for comparing a primary's page with its replay from WAL.
//!
//! PostgreSQL's `wal_consistency_checking` masks the parts of a page that legitimately differ
//! between the two before comparing (`bufmask.c` and each access method's `*_mask`). The
//! rules, per access method:
//! - every page: the LSN and checksum;
//! - hint bits: `pd_prune_xid` and the `PD_PAGE_FULL`, `PD_HAS_FREE_LINES`, `PD_ALL_VISIBLE`
//!   flags, all set without WAL;
//! - unused space between `pd_lower` and `pd_upper`;
//! - heap: the transaction hint bits of tuples whose xmin is not frozen (only the xmax hints
//!   of frozen ones), the command id (redo sets `FirstCommandId`), the ctid of speculative
//!   insertions, and padding after each tuple;
//! - btree: line pointer flags on leaf pages (LP_DEAD is set without WAL), and the
//!   `BTP_HAS_GARBAGE`, `BTP_SPLIT_END` flags and the cycle id;
//! - hash: line pointer flags on bucket and overflow pages, the whole content of unused
//!   pages, and `LH_PAGE_HAS_DEAD_TUPLES`;
//! - GIN: the whole content of deleted pages; unused space only where `pd_lower` is set;
//! - GiST: the NSN, `F_FOLLOW_RIGHT` (forced on), `F_HAS_GARBAGE`, leaf line pointer flags;
//! - SP-GiST: unused space only where `pd_lower` is set; beyond PostgreSQL's rules, the
//!   metapage's `lastUsedPages` cache, which PostgreSQL updates without WAL (its own
//!   consistency check never compares a metapage that changed only that way);
//! - BRIN: unused space on regular pages (and meta pages with `pd_lower` set), and the
//!   `BRIN_EVACUATE_PAGE` flag;
//! - sequences: LSN, checksum, unused space;
//! - visibility-map pages: PostgreSQL masks the whole map (it lies between `pd_lower` and
//!   `pd_upper`), and indeed its replay can lose bits (CREATE DATABASE … WAL_LOG logs VM
//!   pages as standard pages, so the map is the omitted hole). We check more than it does:
//!   [`compare_masked`] fails a VM page that has a bit the primary's lacks (claiming
//!   visibility that is not there breaks index-only scans), and accepts fewer bits, which is
//!   only conservative ([`vm_bits_missing`] counts those).
//!
//! New (all-zero) pages are compared as they are.

/// Bytes in a page. The oracle keeps its own copy rather than `postgres_ffi::BLCKSZ`: it
/// must not depend on the code it checks (postgres_ffi's tests use the oracle). Both are
/// checked against the running server's `block_size` (`page_sizes_are_postgres_own` in
/// postgres_ffi's oracle tests).
pub const BLCKSZ: usize = 8192;
const HEADER: usize = 24;
const MASK_MARKER: u8 = 0;

const PD_HAS_FREE_LINES: u16 = 0x1;
const PD_PAGE_FULL: u16 = 0x2;
const PD_ALL_VISIBLE: u16 = 0x4;
const LP_UNUSED: u32 = 0;
const LP_NORMAL: u32 = 1;
const SPGIST_METAPAGE_BLKNO: u32 = 0;

/// Which masking rules apply to a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccessMethod {
    /// Heap tables (and TOAST tables, materialized views).
    Heap,
    /// B-tree indexes.
    Btree,
    /// Hash indexes.
    Hash,
    /// GIN indexes.
    Gin,
    /// GiST indexes.
    Gist,
    /// SP-GiST indexes.
    SpGist,
    /// BRIN indexes.
    Brin,
    /// Sequences.
    Sequence,
    /// Visibility-map fork pages of any relation.
    VisibilityMap,
    /// Any other access method (contrib's `bloom`, an extension's): compared with the
    /// masking every standard page gets (LSN, checksum, header hint bits, unused space),
    /// rather than not at all.
    Other,
}

impl AccessMethod {
    /// From `pg_am.amname` (tables report `heap`), or `sequence` for `relkind = 'S'`; an
    /// access method the oracle has no rules for is [`AccessMethod::Other`], and only an
    /// empty name (a relation without one) is `None`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "heap" => AccessMethod::Heap,
            "btree" => AccessMethod::Btree,
            "hash" => AccessMethod::Hash,
            "gin" => AccessMethod::Gin,
            "gist" => AccessMethod::Gist,
            "spgist" => AccessMethod::SpGist,
            "brin" => AccessMethod::Brin,
            "sequence" => AccessMethod::Sequence,
            "" => return None,
            _ => AccessMethod::Other,
        })
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            AccessMethod::Heap => "heap",
            AccessMethod::Btree => "btree",
            AccessMethod::Hash => "hash",
            AccessMethod::Gin => "gin",
            AccessMethod::Gist => "gist",
            AccessMethod::SpGist => "spgist",
            AccessMethod::Brin => "brin",
            AccessMethod::Sequence => "sequence",
            AccessMethod::VisibilityMap => "vm",
            AccessMethod::Other => "other",
        }
    }
}

fn get_u16(p: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([p[at], p[at + 1]])
}

fn set_u16(p: &mut [u8], at: usize, v: u16) {
    p[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn pd_lower(p: &[u8]) -> usize {
    usize::from(get_u16(p, 12))
}

fn pd_upper(p: &[u8]) -> usize {
    usize::from(get_u16(p, 14))
}

fn pd_special(p: &[u8]) -> usize {
    usize::from(get_u16(p, 16))
}

/// `PageIsNew`: never initialized.
pub fn page_is_new(p: &[u8; BLCKSZ]) -> bool {
    pd_upper(p) == 0
}

fn max_offset(p: &[u8]) -> usize {
    pd_lower(p).saturating_sub(HEADER) / 4
}

fn line_pointer(p: &[u8], off: usize) -> (usize, u32, usize) {
    let at = HEADER + (off - 1) * 4;
    let v = u32::from_le_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
    ((v & 0x7FFF) as usize, (v >> 15) & 0x3, (v >> 17) as usize)
}

fn set_lp_flags(p: &mut [u8], off: usize, flags: u32) {
    let at = HEADER + (off - 1) * 4;
    let v = u32::from_le_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
    let v = (v & !(0x3 << 15)) | (flags << 15);
    p[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn mask_lsn_and_checksum(p: &mut [u8]) {
    p[0..8].fill(MASK_MARKER);
    p[8..10].fill(MASK_MARKER);
}

fn mask_hint_bits(p: &mut [u8]) {
    p[20..24].fill(MASK_MARKER); // pd_prune_xid
    let flags = get_u16(p, 10) & !(PD_PAGE_FULL | PD_HAS_FREE_LINES | PD_ALL_VISIBLE);
    set_u16(p, 10, flags);
}

fn mask_unused_space(p: &mut [u8]) -> Result<(), String> {
    let (lower, upper, special) = (pd_lower(p), pd_upper(p), pd_special(p));
    if lower > upper || special < upper || lower < HEADER || special > BLCKSZ {
        return Err(format!(
            "invalid page header: pd_lower {lower}, pd_upper {upper}, pd_special {special}"
        ));
    }
    p[lower..upper].fill(MASK_MARKER);
    Ok(())
}

fn mask_lp_flags(p: &mut [u8]) {
    for off in 1..=max_offset(p) {
        if line_pointer(p, off).1 != LP_UNUSED {
            set_lp_flags(p, off, LP_UNUSED);
        }
    }
}

fn mask_page_content(p: &mut [u8]) {
    p[HEADER..].fill(MASK_MARKER);
    p[12..16].fill(MASK_MARKER); // pd_lower, pd_upper
}

/// Applies PostgreSQL's masking for `am` to `page` (block `blkno`). Errors when the page
/// header is too broken to mask, as PostgreSQL's `mask_unused_space` does.
pub fn mask_page(page: &mut [u8; BLCKSZ], am: AccessMethod, blkno: u32) -> Result<(), String> {
    if page_is_new(page) {
        return Ok(());
    }
    mask_lsn_and_checksum(page);
    match am {
        AccessMethod::VisibilityMap => Ok(()),
        AccessMethod::Sequence => mask_unused_space(page),
        AccessMethod::Other => {
            mask_hint_bits(page);
            // A metapage may keep its data below pd_lower without line pointers; only a
            // header that describes a page layout has unused space to mask.
            if pd_lower(page) > HEADER && pd_lower(page) <= pd_upper(page) {
                mask_unused_space(page)
            } else {
                Ok(())
            }
        }
        AccessMethod::Heap => heap_mask(page, blkno),
        AccessMethod::Btree => {
            mask_hint_bits(page);
            mask_unused_space(page)?;
            let special = pd_special(page);
            // BTPageOpaqueData: prev u32, next u32, level u32, flags u16, cycleid u16.
            if special + 16 > BLCKSZ {
                return Err(format!("btree special space at {special} is truncated"));
            }
            const BTP_LEAF: u16 = 1 << 0;
            const BTP_SPLIT_END: u16 = 1 << 5;
            const BTP_HAS_GARBAGE: u16 = 1 << 6;
            let flags = get_u16(page, special + 12);
            if flags & BTP_LEAF != 0 {
                mask_lp_flags(page);
            }
            set_u16(
                page,
                special + 12,
                flags & !(BTP_HAS_GARBAGE | BTP_SPLIT_END),
            );
            set_u16(page, special + 14, 0);
            Ok(())
        }
        AccessMethod::Hash => {
            mask_hint_bits(page);
            mask_unused_space(page)?;
            let special = pd_special(page);
            // HashPageOpaqueData: prevblkno u32, nextblkno u32, bucket u32, flag u16, page_id u16.
            if special + 16 > BLCKSZ {
                return Err(format!("hash special space at {special} is truncated"));
            }
            const LH_OVERFLOW_PAGE: u16 = 1 << 0;
            const LH_BUCKET_PAGE: u16 = 1 << 1;
            const LH_PAGE_TYPE: u16 = 0xF;
            const LH_PAGE_HAS_DEAD_TUPLES: u16 = 1 << 7;
            let flag = get_u16(page, special + 12);
            match flag & LH_PAGE_TYPE {
                0 => mask_page_content(page),
                LH_BUCKET_PAGE | LH_OVERFLOW_PAGE => mask_lp_flags(page),
                _ => {}
            }
            // The flag word survives mask_page_content (special space is untouched only if
            // the page had one; re-read where it was).
            if special + 14 <= BLCKSZ {
                let f = get_u16(page, special + 12);
                set_u16(page, special + 12, f & !LH_PAGE_HAS_DEAD_TUPLES);
            }
            Ok(())
        }
        AccessMethod::Gin => {
            mask_hint_bits(page);
            let special = pd_special(page);
            // GinPageOpaqueData: rightlink u32, maxoff u16, flags u16.
            const GIN_DELETED: u16 = 1 << 2;
            let deleted = special + 8 <= BLCKSZ && get_u16(page, special + 6) & GIN_DELETED != 0;
            if deleted {
                mask_page_content(page);
                Ok(())
            } else if pd_lower(page) > HEADER {
                mask_unused_space(page)
            } else {
                Ok(())
            }
        }
        AccessMethod::Gist => {
            mask_hint_bits(page);
            mask_unused_space(page)?;
            let special = pd_special(page);
            // GISTPageOpaqueData: nsn u64, rightlink u32, flags u16, page_id u16.
            if special + 16 > BLCKSZ {
                return Err(format!("gist special space at {special} is truncated"));
            }
            const F_LEAF: u16 = 1 << 0;
            const F_FOLLOW_RIGHT: u16 = 1 << 3;
            const F_HAS_GARBAGE: u16 = 1 << 4;
            page[special..special + 8].fill(MASK_MARKER);
            let flags = get_u16(page, special + 12) | F_FOLLOW_RIGHT;
            if flags & F_LEAF != 0 {
                mask_lp_flags(page);
            }
            set_u16(page, special + 12, flags & !F_HAS_GARBAGE);
            Ok(())
        }
        AccessMethod::SpGist => {
            mask_hint_bits(page);
            if pd_lower(page) >= HEADER {
                mask_unused_space(page)?;
            }
            if blkno == SPGIST_METAPAGE_BLKNO {
                // lastUsedPages (8 × {blkno, freeSpace} after the magic number) is a cache
                // PostgreSQL updates without WAL (SpGistUpdateMetaPage): a hint.
                page[HEADER + 4..HEADER + 4 + 64].fill(MASK_MARKER);
            }
            Ok(())
        }
        AccessMethod::Brin => {
            mask_hint_bits(page);
            // BrinSpecialSpace: four u16 at the very end; [2] flags, [3] page type.
            const BRIN_PAGETYPE_META: u16 = 0xF091;
            const BRIN_PAGETYPE_REGULAR: u16 = 0xF093;
            const BRIN_EVACUATE_PAGE: u16 = 1 << 0;
            let page_type = get_u16(page, BLCKSZ - 2);
            if page_type == BRIN_PAGETYPE_REGULAR
                || (page_type == BRIN_PAGETYPE_META && pd_lower(page) > HEADER)
            {
                mask_unused_space(page)?;
            }
            let flags = get_u16(page, BLCKSZ - 4);
            set_u16(page, BLCKSZ - 4, flags & !BRIN_EVACUATE_PAGE);
            Ok(())
        }
    }
}

fn heap_mask(page: &mut [u8; BLCKSZ], blkno: u32) -> Result<(), String> {
    const HEAP_XACT_MASK: u16 = 0xFFF0;
    const HEAP_XMIN_FROZEN: u16 = 0x0300;
    const HEAP_XMAX_COMMITTED: u16 = 0x0400;
    const HEAP_XMAX_INVALID: u16 = 0x0800;
    const SPEC_TOKEN_OFFSET: u16 = 0xFFFE;
    mask_hint_bits(page);
    mask_unused_space(page)?;
    for off in 1..=max_offset(page) {
        let (lp_off, flags, len) = line_pointer(page, off);
        if flags == LP_NORMAL {
            if lp_off + 23 > BLCKSZ {
                return Err(format!("tuple {off} at {lp_off} runs off the page"));
            }
            let infomask_at = lp_off + 20;
            let infomask = get_u16(page, infomask_at);
            let infomask = if infomask & HEAP_XMIN_FROZEN != HEAP_XMIN_FROZEN {
                infomask & !HEAP_XACT_MASK
            } else {
                infomask & !(HEAP_XMAX_INVALID | HEAP_XMAX_COMMITTED)
            };
            set_u16(page, infomask_at, infomask);
            page[lp_off + 8..lp_off + 12].fill(MASK_MARKER); // t_cid
            // t_ctid = (blkhi u16, blklo u16, posid u16) at 12; speculative: posid is a token.
            if get_u16(page, lp_off + 16) == SPEC_TOKEN_OFFSET {
                set_u16(page, lp_off + 12, (blkno >> 16) as u16);
                set_u16(page, lp_off + 14, blkno as u16);
                set_u16(page, lp_off + 16, off as u16);
            }
        }
        // ItemIdHasStorage: lp_len != 0. Padding after an unaligned tuple is garbage.
        if len != 0 {
            let padded = len.div_ceil(8) * 8;
            let end = (lp_off + padded).min(BLCKSZ);
            if lp_off + len < end {
                page[lp_off + len..end].fill(MASK_MARKER);
            }
        }
    }
    Ok(())
}

/// Visibility-map bits the primary page has and the rebuilt one lacks (a conservative
/// difference; see the module docs).
pub fn vm_bits_missing(expected: &[u8; BLCKSZ], rebuilt: &[u8; BLCKSZ]) -> u32 {
    (HEADER..BLCKSZ)
        .map(|i| (expected[i] & !rebuilt[i]).count_ones())
        .sum()
}

/// Masks both pages and says where they still differ: `None` when equal (for VM pages:
/// when the rebuilt page claims no bit the expected one lacks).
pub fn compare_masked(
    expected: &[u8; BLCKSZ],
    actual: &[u8; BLCKSZ],
    am: AccessMethod,
    blkno: u32,
) -> Option<String> {
    let mut a = *expected;
    let mut b = *actual;
    if let Err(e) = mask_page(&mut a, am, blkno) {
        return Some(format!("expected page cannot be masked: {e}"));
    }
    if let Err(e) = mask_page(&mut b, am, blkno) {
        return Some(format!("rebuilt page cannot be masked: {e}"));
    }
    let differs = |i: usize| {
        if am == AccessMethod::VisibilityMap && i >= HEADER && !page_is_new(&a) {
            b[i] & !a[i] != 0
        } else {
            a[i] != b[i]
        }
    };
    let diffs: Vec<usize> = (0..BLCKSZ).filter(|&i| differs(i)).collect();
    if diffs.is_empty() {
        return None;
    }
    let first = diffs[0];
    let show = |p: &[u8; BLCKSZ]| {
        let from = first.saturating_sub(8);
        let to = (first + 24).min(BLCKSZ);
        format!("{:02x?}", &p[from..to])
    };
    Some(format!(
        "{} bytes differ, first at offset {first}: expected {} rebuilt {}",
        diffs.len(),
        show(&a),
        show(&b)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heap_page_with_tuple(infomask: u16, cid: u32) -> [u8; BLCKSZ] {
        let mut p = [0u8; BLCKSZ];
        set_u16(&mut p, 12, 28); // one line pointer
        set_u16(&mut p, 14, 8160);
        set_u16(&mut p, 16, 8192);
        set_u16(&mut p, 18, 8192 | 4);
        // lp 1: offset 8160, NORMAL, length 28.
        let lp: u32 = 8160 | (LP_NORMAL << 15) | (28 << 17);
        p[24..28].copy_from_slice(&lp.to_le_bytes());
        p[8160..8164].copy_from_slice(&100u32.to_le_bytes()); // xmin
        p[8168..8172].copy_from_slice(&cid.to_le_bytes());
        set_u16(&mut p, 8180, infomask);
        p[8184..8188].copy_from_slice(&7i32.to_le_bytes());
        p
    }

    #[test]
    fn heap_hint_bits_and_cid_are_masked() {
        let primary = heap_page_with_tuple(0x0100 | 0x0800, 5); // XMIN_COMMITTED | XMAX_INVALID
        let mut replay = heap_page_with_tuple(0x0800, 0);
        replay[0..8].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]); // another LSN
        assert_eq!(
            compare_masked(&primary, &replay, AccessMethod::Heap, 0),
            None
        );
        // Data differences are not hidden.
        let mut changed = replay;
        changed[8184] = 8;
        let diff = compare_masked(&primary, &changed, AccessMethod::Heap, 0).unwrap();
        assert!(diff.contains("offset 8184"), "{diff}");
    }

    #[test]
    fn unused_space_is_masked_but_headers_are_checked() {
        let mut a = heap_page_with_tuple(0, 0);
        let mut b = a;
        b[100] = 0xEE; // between pd_lower and pd_upper
        assert_eq!(compare_masked(&a, &b, AccessMethod::Sequence, 0), None);
        set_u16(&mut a, 12, 9000);
        assert!(mask_page(&mut a, AccessMethod::Sequence, 0).is_err());
    }

    #[test]
    fn other_access_methods_get_the_generic_masking() {
        assert_eq!(AccessMethod::from_name("bloom"), Some(AccessMethod::Other));
        assert_eq!(AccessMethod::from_name(""), None);
        let a = heap_page_with_tuple(0, 0);
        let mut b = a;
        b[0..8].copy_from_slice(&[9; 8]); // LSN
        b[100] = 0xEE; // unused space
        assert_eq!(compare_masked(&a, &b, AccessMethod::Other, 0), None);
        // Data is compared.
        b[8184] ^= 1;
        assert!(compare_masked(&a, &b, AccessMethod::Other, 0).is_some());
    }

    #[test]
    fn vm_pages_compare_exactly_but_for_lsn() {
        let mut a = [0u8; BLCKSZ];
        set_u16(&mut a, 12, 24);
        set_u16(&mut a, 14, 8192);
        set_u16(&mut a, 16, 8192);
        let mut b = a;
        b[0] = 9;
        assert_eq!(compare_masked(&a, &b, AccessMethod::VisibilityMap, 0), None);
        b[30] = 1;
        assert!(
            compare_masked(&a, &b, AccessMethod::VisibilityMap, 0).is_some(),
            "an extra bit is wrong"
        );
        let mut primary = a;
        primary[30] = 3;
        b[30] = 1;
        assert_eq!(
            compare_masked(&primary, &b, AccessMethod::VisibilityMap, 0),
            None,
            "fewer bits is conservative"
        );
        assert_eq!(vm_bits_missing(&primary, &b), 1);
    }

    #[test]
    fn new_pages_are_compared_raw() {
        let a = [0u8; BLCKSZ];
        assert_eq!(compare_masked(&a, &a, AccessMethod::Btree, 0), None);
        let mut b = a;
        b[5000] = 1;
        assert!(compare_masked(&a, &b, AccessMethod::Btree, 0).is_some());
    }
}
