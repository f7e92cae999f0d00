//! Safekeeper membership configurations and their generations.
//!
//! A timeline's safekeepers form a *configuration*: a numbered (generation) set of members,
//! optionally together with a second set while the timeline migrates between sets (a
//! *joint* configuration, in which elections and commits need a majority of **both**
//! sets). Every proposer message carries the generation the sender believes in, and an
//! acceptor refuses votes, elections and appends from any other generation, so a proposer
//! that missed a membership change cannot get WAL committed by the old set.
//!
//! Invariants:
//! - [`Generation::NONE`] (0) means "no membership configuration": the timeline predates
//!   (or opted out of) membership management, and generation checks are disabled.
//! - Generations only grow; an acceptor switches to a configuration only if its generation
//!   is higher than the one it has.
//! - A configuration with a real generation lists at least one member (not checked by the
//!   wire decoder, which carries whatever the peer sends).

use std::fmt;

use serde::{Deserialize, Serialize};
use utils::NodeId;

/// The number of a membership configuration. Higher is newer.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Generation(pub u32);

impl Generation {
    /// "No membership configuration": disables generation checks (see module docs).
    pub const NONE: Generation = Generation(0);
    /// The first real generation, given to a timeline created with a configuration.
    pub const FIRST: Generation = Generation(1);

    /// Whether this names a real configuration (is not [`Generation::NONE`]).
    pub fn is_configured(self) -> bool {
        self != Generation::NONE
    }

    /// Whether a message carrying `msg` may be accepted by a node at generation `self`:
    /// always when the node has no configuration, otherwise only on an exact match.
    ///
    /// The reference system checks for an exact match even at 0; a node at generation 0
    /// accepting any generation is Strata's reading of "0 disables generation checks".
    pub fn accepts(self, msg: Generation) -> bool {
        !self.is_configured() || self == msg
    }

    /// The next generation, or `None` at `u32::MAX`.
    pub fn next(self) -> Option<Generation> {
        self.0.checked_add(1).map(Generation)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl utoipa::PartialSchema for Generation {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utils::schema::unsigned(u64::from(u32::MAX))
            .description(Some(
                "membership generation; 0 = no membership configuration",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Generation {}

/// One safekeeper of a configuration: who it is and where proposers reach it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    /// The safekeeper's node id.
    pub node_id: NodeId,
    /// Host name or address of its libpq (WAL service) port.
    pub host: String,
    /// Its libpq port.
    #[schema(schema_with = utils::schema::u16_schema)]
    pub pg_port: u16,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sk{}@{}:{}", self.node_id, self.host, self.pg_port)
    }
}

/// A timeline's membership configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Configuration {
    /// Its number; [`Generation::NONE`] for "no configuration".
    pub generation: Generation,
    /// The (current, or old during a migration) member set.
    pub members: Vec<Member>,
    /// The set being migrated to; `Some` makes this a joint configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_members: Option<Vec<Member>>,
}

impl Configuration {
    /// The configuration of a timeline without membership management: generation 0, no
    /// members. This is what a protocol message carries when there is no configuration.
    pub fn empty() -> Self {
        Configuration::default()
    }

    /// A non-joint configuration.
    pub fn new(generation: Generation, members: Vec<Member>) -> Self {
        Configuration {
            generation,
            members,
            new_members: None,
        }
    }

    /// Whether a migration is in progress (two member sets).
    pub fn is_joint(&self) -> bool {
        self.new_members.is_some()
    }

    /// Whether `node_id` is in either member set.
    pub fn contains(&self, node_id: NodeId) -> bool {
        self.members.iter().any(|m| m.node_id == node_id)
            || self
                .new_members
                .iter()
                .flatten()
                .any(|m| m.node_id == node_id)
    }
}

impl fmt::Display for Configuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |ms: &[Member]| {
            ms.iter()
                .map(|m| m.node_id.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(
            f,
            "gen={} members=[{}]",
            self.generation,
            list(&self.members)
        )?;
        if let Some(new) = &self.new_members {
            write!(f, " new_members=[{}]", list(new))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64) -> Member {
        Member {
            node_id: NodeId(id),
            host: format!("sk{id}.local"),
            pg_port: 5454,
        }
    }

    #[test]
    fn generation_checks() {
        assert!(!Generation::NONE.is_configured());
        assert!(Generation::FIRST.is_configured());
        assert!(Generation::NONE.accepts(Generation(7)));
        assert!(Generation(3).accepts(Generation(3)));
        assert!(!Generation(3).accepts(Generation(2)));
        assert!(!Generation(3).accepts(Generation::NONE));
        assert_eq!(Generation(u32::MAX).next(), None);
    }

    #[test]
    fn joint_configuration() {
        let mut c = Configuration::new(Generation(2), vec![member(1), member(2)]);
        assert!(!c.is_joint());
        assert!(c.contains(NodeId(2)) && !c.contains(NodeId(3)));
        c.new_members = Some(vec![member(2), member(3)]);
        assert!(c.is_joint() && c.contains(NodeId(3)));
        assert_eq!(c.to_string(), "gen=2 members=[1,2] new_members=[2,3]");
    }

    #[test]
    fn json_shape() {
        let c = Configuration::new(Generation(1), vec![member(1)]);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"generation": 1, "members": [
                {"node_id": 1, "host": "sk1.local", "pg_port": 5454}]})
        );
        let back: Configuration = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
    }
}
