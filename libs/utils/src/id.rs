//! Identifiers of tenants, timelines and nodes.
//!
//! Tenant and timeline ids are 16 random bytes written as 32 lower-case hex characters,
//! the form every API, path and log line uses. Parsing accepts either case, so an id
//! copied from anywhere works, and always prints lower case, so one id has one spelling
//! on disk and in object storage.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Text that is not a 32-hex-character id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {input:?}: expected 32 hex characters")]
pub struct IdParseError {
    /// Which kind of id was expected ("tenant id", "timeline id", …).
    pub kind: &'static str,
    /// The rejected text.
    pub input: String,
}

/// The OpenAPI pattern of a [`TenantId`] or [`TimelineId`]: what `FromStr` accepts, so a
/// client generating requests from the schema never sends an id the server must refuse.
pub const HEX_ID_PATTERN: &str = "^[0-9a-fA-F]{32}$";

macro_rules! hex_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; 16]);

        impl $name {
            /// A fresh random id.
            pub fn generate() -> Self {
                Self(rand::random())
            }

            /// The id made of these bytes.
            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(s: &str) -> Result<Self, IdParseError> {
                let mut bytes = [0u8; 16];
                hex::decode_to_slice(s, &mut bytes).map_err(|_| IdParseError {
                    kind: $kind,
                    input: s.to_string(),
                })?;
                Ok(Self(bytes))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut buf = [0u8; 32];
                // Cannot fail: the buffer is exactly twice the input.
                hex::encode_to_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
                f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some(concat!(
                        $kind,
                        ": 32 hex characters (written lower-case, read in either case)"
                    )))
                    .pattern(Some(HEX_ID_PATTERN))
                    .examples([serde_json::json!("3aa8fcc61f6d357410b7de754b1d9001")])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

hex_id!(
    /// One PostgreSQL cluster in Strata: a tree of timelines sharing one system id.
    TenantId,
    "tenant id"
);
hex_id!(
    /// One branch of a tenant's history.
    TimelineId,
    "timeline id"
);

/// A safekeeper's or pageserver's id, unique in one deployment.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for NodeId {
    type Err = IdParseError;

    fn from_str(s: &str) -> Result<Self, IdParseError> {
        s.parse().map(NodeId).map_err(|_| IdParseError {
            kind: "node id",
            input: s.to_string(),
        })
    }
}

impl utoipa::PartialSchema for NodeId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::schema::unsigned(u64::MAX)
            .description(Some("node id"))
            .into()
    }
}

impl utoipa::ToSchema for NodeId {}

/// A timeline together with its tenant: the unit most storage work is keyed by.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TenantTimelineId {
    /// The tenant the timeline belongs to.
    pub tenant_id: TenantId,
    /// The timeline.
    pub timeline_id: TimelineId,
}

impl TenantTimelineId {
    /// Pairs a tenant with one of its timelines.
    pub fn new(tenant_id: TenantId, timeline_id: TimelineId) -> Self {
        Self {
            tenant_id,
            timeline_id,
        }
    }

    /// A random pair, for tests and for `strata` creating a first tenant.
    pub fn generate() -> Self {
        Self::new(TenantId::generate(), TimelineId::generate())
    }
}

impl fmt::Display for TenantTimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant_id, self.timeline_id)
    }
}

impl fmt::Debug for TenantTimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for TenantTimelineId {
    type Err = IdParseError;

    /// Parses the `tenant/timeline` form that [`fmt::Display`] prints.
    fn from_str(s: &str) -> Result<Self, IdParseError> {
        let (tenant, timeline) = s.split_once('/').ok_or_else(|| IdParseError {
            kind: "tenant/timeline id",
            input: s.to_string(),
        })?;
        Ok(Self::new(tenant.parse()?, timeline.parse()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_lower_case() {
        let text = "3AA8FCC61F6D357410B7DE754B1D9001";
        let id: TenantId = text.parse().unwrap();
        assert_eq!(id.to_string(), text.to_lowercase());
        assert_eq!(id.to_string().parse::<TenantId>().unwrap(), id);
        let generated = TimelineId::generate();
        assert_eq!(generated.to_string().len(), 32);
        assert_ne!(generated, TimelineId::generate());
        assert_eq!(
            TimelineId::from_bytes(*generated.as_bytes()),
            generated,
            "bytes round-trip"
        );
    }

    #[test]
    fn parse_errors_name_the_input_and_kind() {
        for bad in [
            "",
            "abc",
            "3aa8fcc61f6d357410b7de754b1d900",
            "3aa8fcc61f6d357410b7de754b1d90011",
            "zz a8fcc61f6d357410b7de754b1d9001",
        ] {
            let e = bad.parse::<TimelineId>().unwrap_err();
            assert_eq!(e.kind, "timeline id");
            assert_eq!(e.input, bad);
            assert!(e.to_string().contains("timeline id"), "{e}");
        }
        let e = "x".parse::<NodeId>().unwrap_err();
        assert_eq!(e.kind, "node id");
    }

    #[test]
    fn serde_forms() {
        let ttid = TenantTimelineId::generate();
        let json = serde_json::to_value(ttid).unwrap();
        assert_eq!(json["tenant_id"], ttid.tenant_id.to_string());
        let back: TenantTimelineId = serde_json::from_value(json).unwrap();
        assert_eq!(back, ttid);
        assert_eq!(serde_json::to_string(&NodeId(7)).unwrap(), "7");
        let e = serde_json::from_str::<TenantId>("\"xyz\"").unwrap_err();
        assert!(e.to_string().contains("tenant id"), "{e}");
    }

    #[test]
    fn tenant_timeline_text_form() {
        let ttid = TenantTimelineId::generate();
        assert_eq!(ttid.to_string().parse::<TenantTimelineId>().unwrap(), ttid);
        assert!("nope".parse::<TenantTimelineId>().is_err());
        let e = format!("{}/bad", ttid.tenant_id)
            .parse::<TenantTimelineId>()
            .unwrap_err();
        assert_eq!(e.kind, "timeline id");
    }
}
