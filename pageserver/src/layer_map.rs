//! The layer map: which on-disk layer to read next for a key, going back in LSN.
//!
//! Pure and I/O-free: it holds [`LayerName`]s with a payload `L` (the open layer file in
//! production, a plain id in tests). In-memory layers are not here: they sit above every
//! layer in the map and the timeline searches them first.
//!
//! [`LayerMap::search`]`(key, end)` answers "the newest values of `key` below `end` are in
//! this layer, at or above this floor". Among the layers whose key range holds the key and
//! whose LSN range starts below `end`, it takes the one whose range reaches highest (capped
//! at `end`; on a tie an image wins, since it makes everything below it irrelevant). The
//! floor is the highest end among the other candidates that stays below that: values under
//! the floor are looked up again from there, in whichever layer then comes first. So a read
//! visits layers newest first, never misses a value, and never reads one twice.
//!
//! Layers are kept sorted by LSN end, newest first, so a search stops after the first
//! candidate that ends below the chosen layer's reach.

use std::ops::Range;

use utils::Lsn;

use crate::keyspace::Key;
use crate::layers::{LayerKind, LayerName};

/// Where to read next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchResult<'a, L> {
    /// The layer.
    pub name: &'a LayerName,
    /// Its payload.
    pub layer: &'a L,
    /// Read its values with `lsn_floor <= lsn < end`.
    pub lsn_floor: Lsn,
}

/// The historic (on-disk) layers of one timeline.
#[derive(Debug, Clone)]
pub struct LayerMap<L> {
    /// Sorted by `lsn_range.end` descending, then image before delta.
    layers: Vec<(LayerName, L)>,
}

impl<L> Default for LayerMap<L> {
    fn default() -> Self {
        LayerMap { layers: Vec::new() }
    }
}

fn order(n: &LayerName) -> (std::cmp::Reverse<Lsn>, bool) {
    (
        std::cmp::Reverse(n.lsn_range.end),
        n.kind == LayerKind::Delta,
    )
}

impl<L> LayerMap<L> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a layer. A layer with the same name replaces the old one.
    pub fn insert(&mut self, name: LayerName, layer: L) {
        self.remove(&name);
        let at = self
            .layers
            .partition_point(|(n, _)| order(n) <= order(&name));
        self.layers.insert(at, (name, layer));
    }

    /// Removes a layer; returns its payload if it was there.
    pub fn remove(&mut self, name: &LayerName) -> Option<L> {
        let at = self.layers.iter().position(|(n, _)| n == name)?;
        Some(self.layers.remove(at).1)
    }

    /// Every layer, newest first.
    pub fn iter(&self) -> impl Iterator<Item = (&LayerName, &L)> {
        self.layers.iter().map(|(n, l)| (n, l))
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The newest LSN end of any layer.
    pub fn max_lsn_end(&self) -> Option<Lsn> {
        self.layers.first().map(|(n, _)| n.lsn_range.end)
    }

    /// The layer to read for `key`'s values below `end` (see the module docs).
    pub fn search(&self, key: Key, end: Lsn) -> Option<SearchResult<'_, L>> {
        let mut best: Option<(usize, Lsn)> = None;
        let mut floor = Lsn(0);
        for (i, (n, _)) in self.layers.iter().enumerate() {
            if !n.key_range.contains(&key) || n.lsn_range.start >= end {
                continue;
            }
            let reach = n.lsn_range.end.min(end);
            match best {
                None => best = Some((i, reach)),
                Some((bi, breach)) => {
                    if reach == breach {
                        // Same reach: an image wins over a delta (it makes the delta's
                        // values at and below its LSN irrelevant).
                        if n.kind == LayerKind::Image && self.layers[bi].0.kind != LayerKind::Image
                        {
                            best = Some((i, reach));
                        }
                        continue;
                    }
                    // reach < breach: the highest such end is the floor.
                    floor = floor.max(n.lsn_range.end);
                    break;
                }
            }
        }
        let (bi, _) = best?;
        let (name, layer) = &self.layers[bi];
        Some(SearchResult {
            name,
            layer,
            lsn_floor: floor.max(name.lsn_range.start),
        })
    }

    /// Every layer whose ranges overlap `keys` × `lsns`, newest first.
    pub fn overlapping(
        &self,
        keys: Range<Key>,
        lsns: Range<Lsn>,
    ) -> impl Iterator<Item = (&LayerName, &L)> {
        self.layers.iter().filter_map(move |(n, l)| {
            (n.key_range.start < keys.end
                && keys.start < n.key_range.end
                && n.lsn_range.start < lsns.end
                && lsns.start < n.lsn_range.end)
                .then_some((n, l))
        })
    }
}

#[cfg(test)]
mod tests;
