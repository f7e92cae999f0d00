//! OpenAPI schemas for Rust's unsigned integers, exact to the type.
//!
//! utoipa describes `u16`/`u32` as `int32` and `u64` as `int64` with a minimum of 0: a
//! client generating requests from that (schemathesis does) believes a port may be 70000
//! and a node id may not exceed 2^63 - 1, and either way the document disagrees with what
//! the handler accepts. These state the type's real bounds and no signed format.

use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};

/// An integer from 0 to `max`.
pub fn unsigned(max: u64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0u64))
        .maximum(Some(max))
}

/// A `u16` (ports).
pub fn u16_schema() -> Object {
    unsigned(u64::from(u16::MAX)).build()
}

/// A `u32`.
pub fn u32_schema() -> Object {
    unsigned(u64::from(u32::MAX)).build()
}

/// A `u64`.
pub fn u64_schema() -> Object {
    unsigned(u64::MAX).build()
}

/// An `Option<u64>`: the same, or `null`.
pub fn optional_u64_schema() -> Object {
    unsigned(u64::MAX)
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_the_types() {
        let v = serde_json::to_value(u64_schema()).unwrap();
        assert_eq!(v["minimum"], 0);
        assert_eq!(v["maximum"], serde_json::json!(u64::MAX));
        assert!(v.get("format").is_none(), "{v}");
        let v = serde_json::to_value(u16_schema()).unwrap();
        assert_eq!(v["maximum"], 65535);
        let v = serde_json::to_value(optional_u64_schema()).unwrap();
        assert_eq!(v["type"], serde_json::json!(["integer", "null"]));
    }
}
