//! The controller's durable state: each tenant's current generation and the pageserver
//! it is attached to, in one JSON file (`<datadir>/controller_state.json`).
//!
//! Invariants:
//! - **a generation is persisted before anyone hears of it**: every change is written
//!   (temp file, fsync, rename, directory fsync) before the request that caused it is
//!   answered, so a crash can never hand out the same generation twice;
//! - **a tenant's generation only grows**, by one on every attach (`attach-hook` with a
//!   node) and on every re-attach of its node; validation is "the generation asked about
//!   is the current one".
//!
//! One mutex orders all changes (the state is small: one entry per tenant); the file is
//! rewritten whole on every change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pageserver_api::Generation;
use serde::{Deserialize, Serialize};
use utils::crashsafe::{self, Sync};
use utils::{NodeId, TenantId};

/// The state file under the data directory.
pub const STATE_FILE: &str = "controller_state.json";
/// The format written.
const STATE_VERSION: u32 = 1;

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing the file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The state file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a state this version understands: the controller refuses to start
    /// rather than hand out generations again from zero.
    #[error("{}: not a controller state file: {reason}", path.display())]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The tenant's generation cannot grow further.
    #[error("tenant {0}: generation space exhausted")]
    Exhausted(TenantId),
}

/// One tenant's placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPlacement {
    /// The latest generation issued.
    pub generation: Generation,
    /// The pageserver holding that generation; `None` once detached.
    pub node_id: Option<NodeId>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    tenants: BTreeMap<TenantId, TenantPlacement>,
}

/// See the module docs. Not internally locked: the HTTP layer holds it in a mutex.
#[derive(Debug)]
pub struct ControllerState {
    path: PathBuf,
    sync: Sync,
    tenants: BTreeMap<TenantId, TenantPlacement>,
}

impl ControllerState {
    /// Loads `<datadir>/controller_state.json`, or starts empty if there is none.
    pub fn load(datadir: &Path, sync: Sync) -> Result<ControllerState, StateError> {
        let path = datadir.join(STATE_FILE);
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        crashsafe::remove_temp_files(datadir, sync).map_err(io)?;
        let tenants = match std::fs::read(&path) {
            Ok(bytes) => {
                let f: StateFile =
                    serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if f.version != STATE_VERSION {
                    return Err(StateError::Corrupt {
                        path,
                        reason: format!(
                            "version {} (this controller reads {STATE_VERSION})",
                            f.version
                        ),
                    });
                }
                f.tenants
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(e)),
        };
        Ok(ControllerState {
            path,
            sync,
            tenants,
        })
    }

    fn persist(&self, tenants: &BTreeMap<TenantId, TenantPlacement>) -> Result<(), StateError> {
        let f = StateFile {
            version: STATE_VERSION,
            tenants: tenants.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&f).map_err(|e| StateError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        crashsafe::overwrite(&self.path, &bytes, self.sync).map_err(|source| StateError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Applies `change` to a copy, persists it, and only then makes it current: a failed
    /// write leaves memory and disk agreeing on the old state.
    fn commit(
        &mut self,
        change: impl FnOnce(&mut BTreeMap<TenantId, TenantPlacement>) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let mut next = self.tenants.clone();
        change(&mut next)?;
        if next != self.tenants {
            // Tests crash the process here (`exit`): before, nothing changed; after, the
            // change is durable although no caller heard of it.
            let _ = utils::failpoint::eval("controller-before-persist");
            self.persist(&next)?;
            let _ = utils::failpoint::eval("controller-after-persist");
            self.tenants = next;
        }
        Ok(())
    }

    /// Attaches `tenant` to `node` in a new generation (the first is 1), which makes every
    /// earlier generation stale. Returns it.
    pub fn attach(&mut self, tenant: TenantId, node: NodeId) -> Result<Generation, StateError> {
        let mut issued = Generation(0);
        self.commit(|t| {
            let g = t.get(&tenant).map_or(0, |p| p.generation.0);
            let g = g.checked_add(1).ok_or(StateError::Exhausted(tenant))?;
            issued = Generation(g);
            t.insert(
                tenant,
                TenantPlacement {
                    generation: issued,
                    node_id: Some(node),
                },
            );
            Ok(())
        })?;
        Ok(issued)
    }

    /// Detaches `tenant` from whatever node holds it; its generation stays current (so a
    /// node still holding it can finish deleting) until the next attach. False if unknown.
    pub fn detach(&mut self, tenant: TenantId) -> Result<bool, StateError> {
        let mut known = false;
        self.commit(|t| {
            if let Some(p) = t.get_mut(&tenant) {
                known = true;
                p.node_id = None;
            }
            Ok(())
        })?;
        Ok(known)
    }

    /// A restarted `node`: every tenant attached to it gets a new generation, so whatever
    /// the node did before the restart is stale. Returns them.
    pub fn re_attach(&mut self, node: NodeId) -> Result<Vec<(TenantId, Generation)>, StateError> {
        let mut out = Vec::new();
        self.commit(|t| {
            for (id, p) in t.iter_mut() {
                if p.node_id == Some(node) {
                    let g = p
                        .generation
                        .0
                        .checked_add(1)
                        .ok_or(StateError::Exhausted(*id))?;
                    p.generation = Generation(g);
                    out.push((*id, p.generation));
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Whether `generation` is `tenant`'s current one (false for an unknown tenant), and,
    /// when `node` is given, the tenant is placed on it or on no node (a detached tenant's
    /// last holder may finish).
    pub fn validate(&self, tenant: TenantId, generation: Generation, node: Option<NodeId>) -> bool {
        self.tenants.get(&tenant).is_some_and(|p| {
            p.generation == generation
                && match (node, p.node_id) {
                    (Some(asking), Some(placed)) => asking == placed,
                    _ => true,
                }
        })
    }

    /// The tenant's placement, if known.
    pub fn get(&self, tenant: TenantId) -> Option<&TenantPlacement> {
        self.tenants.get(&tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tid(n: u8) -> TenantId {
        TenantId::from_bytes([n; 16])
    }

    #[test]
    fn generations_grow_survive_restart_and_validate_only_the_current() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ControllerState::load(dir.path(), Sync::Yes).unwrap();
        assert_eq!(s.attach(tid(1), NodeId(1)).unwrap(), Generation(1));
        assert_eq!(s.attach(tid(1), NodeId(2)).unwrap(), Generation(2));
        assert!(!s.validate(tid(1), Generation(1), None));
        assert!(s.validate(tid(1), Generation(2), None));
        assert!(s.validate(tid(1), Generation(2), Some(NodeId(2))));
        assert!(!s.validate(tid(1), Generation(2), Some(NodeId(1))));
        assert!(!s.validate(tid(9), Generation(1), None));
        assert_eq!(s.attach(tid(2), NodeId(1)).unwrap(), Generation(1));
        drop(s);

        let mut s = ControllerState::load(dir.path(), Sync::Yes).unwrap();
        assert_eq!(
            s.re_attach(NodeId(2)).unwrap(),
            vec![(tid(1), Generation(3))]
        );
        assert!(s.validate(tid(1), Generation(3), None));
        assert!(s.detach(tid(1)).unwrap());
        assert!(!s.detach(tid(7)).unwrap());
        assert_eq!(s.re_attach(NodeId(2)).unwrap(), vec![]);
        // Detached keeps the generation current (for its last holder too); the next
        // attach supersedes it.
        assert!(s.validate(tid(1), Generation(3), None));
        assert!(s.validate(tid(1), Generation(3), Some(NodeId(2))));
        drop(s);
        let s = ControllerState::load(dir.path(), Sync::Yes).unwrap();
        assert_eq!(s.get(tid(1)).unwrap().node_id, None);
        assert_eq!(s.get(tid(2)).unwrap().generation, Generation(1));
    }

    #[test]
    fn a_corrupt_or_future_state_file_is_refused_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        std::fs::write(&path, b"{\"version\":1,\"tenants\":").unwrap();
        let e = ControllerState::load(dir.path(), Sync::Yes).unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
        std::fs::write(&path, b"{\"version\":7,\"tenants\":{}}").unwrap();
        let e = ControllerState::load(dir.path(), Sync::Yes).unwrap_err();
        assert!(e.to_string().contains("version 7"), "{e}");
        // Nothing was overwritten.
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"{\"version\":7,\"tenants\":{}}"
        );
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ControllerState::load(dir.path(), Sync::Yes).unwrap();
        s.attach(tid(1), NodeId(1)).unwrap();
        // Make the rename target a directory: the write fails.
        let sub = dir.path().join("gone");
        std::fs::create_dir(&sub).unwrap();
        s.path = sub.join("x").join(STATE_FILE);
        assert!(s.attach(tid(1), NodeId(2)).is_err());
        assert!(s.validate(tid(1), Generation(1), None));
        assert_eq!(s.get(tid(1)).unwrap().node_id, Some(NodeId(1)));
    }
}
