//! [`RemotePath`]: the one way to name an object or a listing prefix.
//!
//! Invariants of every `RemotePath` value, checked once when it is made so that no backend
//! ever sees a bad name and no request is ever sent for one:
//! - it is relative (never starts with `/`) and not empty;
//! - components are separated by `/`, none is empty (`a//b`), `.` or `..`;
//! - it contains no NUL byte.
//!
//! A single trailing `/` is allowed: it marks a "directory-like" prefix (`tenants/`), which is
//! what listings return as common prefixes and what callers pass to list one level. Such a
//! path names no object: uploads, downloads, heads, copies and deletes reject it
//! ([`RemotePath::ensure_object_key`]).
//!
//! The path is relative to the storage's root (LocalFs directory, `prefix_in_bucket`,
//! `prefix_in_container`); backends add and strip their own prefix.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid [`RemotePath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemotePathError {
    /// Empty string: would name the whole storage.
    #[error("remote path is empty")]
    Empty,
    /// Leading `/`: remote paths are relative to the storage root.
    #[error("remote path {0:?} is absolute; it must be relative to the storage root")]
    Absolute(String),
    /// A `..` component could escape the storage root on LocalFs.
    #[error("remote path {0:?} contains a `..` component")]
    ParentComponent(String),
    /// `.` or an empty component (`a//b`): two spellings of one key, which S3 would treat as
    /// different objects and a file system as the same file.
    #[error("remote path {0:?} contains an empty or `.` component")]
    EmptyComponent(String),
    /// NUL cannot be part of a file name and is refused by object stores.
    #[error("remote path {0:?} contains a NUL byte")]
    Nul(String),
    /// A trailing `/` names a prefix, not an object.
    #[error("remote path {0:?} ends with `/`: it names a prefix, not an object")]
    NotAnObject(String),
}

/// A validated, relative, `/`-separated object key or prefix. See the module docs.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RemotePath(String);

impl RemotePath {
    /// Validates `path` (see the module docs for the rules).
    pub fn new(path: &str) -> Result<RemotePath, RemotePathError> {
        if path.is_empty() {
            return Err(RemotePathError::Empty);
        }
        if path.contains('\0') {
            return Err(RemotePathError::Nul(path.to_owned()));
        }
        if path.starts_with('/') {
            return Err(RemotePathError::Absolute(path.to_owned()));
        }
        let body = path.strip_suffix('/').unwrap_or(path);
        for component in body.split('/') {
            match component {
                ".." => return Err(RemotePathError::ParentComponent(path.to_owned())),
                "" | "." => return Err(RemotePathError::EmptyComponent(path.to_owned())),
                _ => {}
            }
        }
        Ok(RemotePath(path.to_owned()))
    }

    /// Joins `segment` (itself a valid relative path) under this path, adding the `/`.
    pub fn join(&self, segment: &str) -> Result<RemotePath, RemotePathError> {
        let base = self.0.strip_suffix('/').unwrap_or(&self.0);
        RemotePath::new(&format!("{base}/{segment}"))
    }

    /// The path as a string, exactly as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the path ends with `/` and so names a prefix rather than an object.
    pub fn is_prefix_only(&self) -> bool {
        self.0.ends_with('/')
    }

    /// The last component (`c` for `a/b/c` and for `a/b/c/`).
    pub fn object_name(&self) -> &str {
        let body = self.0.strip_suffix('/').unwrap_or(&self.0);
        body.rsplit('/').next().unwrap_or(body)
    }

    /// Checks that this path can name an object; every object operation calls it before
    /// sending anything.
    pub fn ensure_object_key(&self) -> Result<(), RemotePathError> {
        if self.is_prefix_only() {
            Err(RemotePathError::NotAnObject(self.0.clone()))
        } else {
            Ok(())
        }
    }
}

impl fmt::Display for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemotePath({:?})", self.0)
    }
}

impl std::str::FromStr for RemotePath {
    type Err = RemotePathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RemotePath::new(s)
    }
}

impl TryFrom<String> for RemotePath {
    type Error = RemotePathError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        RemotePath::new(&s)
    }
}

impl TryFrom<&str> for RemotePath {
    type Error = RemotePathError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        RemotePath::new(s)
    }
}

impl From<RemotePath> for String {
    fn from(p: RemotePath) -> String {
        p.0
    }
}

/// Where a cloud backend's objects live in its bucket or container: an optional key prefix
/// (`prefix_in_bucket`, `prefix_in_container`). Maps a [`RemotePath`] to the raw key and
/// back, so every backend agrees on the layout: `<prefix>/<path>`, or `<path>` without one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPrefix(Option<String>);

impl KeyPrefix {
    /// Keys under `prefix` (no trailing `/`; validated by the config).
    pub(crate) fn new(prefix: Option<String>) -> Self {
        KeyPrefix(prefix)
    }

    /// The raw key of `path`.
    pub(crate) fn key(&self, path: &RemotePath) -> String {
        match &self.0 {
            Some(p) => format!("{p}/{}", path.as_str()),
            None => path.as_str().to_owned(),
        }
    }

    /// The raw prefix to list for `prefix` (`None` lists the whole bucket or container).
    pub(crate) fn list_prefix(&self, prefix: Option<&RemotePath>) -> Option<String> {
        match (&self.0, prefix) {
            (Some(p), Some(path)) => Some(format!("{p}/{}", path.as_str())),
            (Some(p), None) => Some(format!("{p}/")),
            (None, Some(path)) => Some(path.as_str().to_owned()),
            (None, None) => None,
        }
    }

    /// The remote path for a key the server returned, or `None` for keys outside the prefix
    /// or not valid as paths (written by other tools).
    pub(crate) fn relative(&self, key: &str) -> Option<RemotePath> {
        let rel = match &self.0 {
            Some(p) => key.strip_prefix(p.as_str())?.strip_prefix('/')?,
            None => key,
        };
        RemotePath::new(rel).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_relative_paths() {
        for ok in [
            "a",
            "a/b",
            "tenants/x/timelines/y/index_part.json-00000001",
            "a/",
            "a.b/c..d",
        ] {
            assert_eq!(RemotePath::new(ok).unwrap().as_str(), ok);
        }
        assert!(RemotePath::new("a/").unwrap().is_prefix_only());
        assert_eq!(RemotePath::new("a/b/").unwrap().object_name(), "b");
        assert_eq!(RemotePath::new("a/b").unwrap().object_name(), "b");
    }

    #[test]
    fn rejects_bad_paths() {
        assert_eq!(RemotePath::new(""), Err(RemotePathError::Empty));
        assert!(matches!(
            RemotePath::new("/a"),
            Err(RemotePathError::Absolute(_))
        ));
        assert!(matches!(
            RemotePath::new("a/../b"),
            Err(RemotePathError::ParentComponent(_))
        ));
        assert!(matches!(
            RemotePath::new(".."),
            Err(RemotePathError::ParentComponent(_))
        ));
        assert!(matches!(
            RemotePath::new("a//b"),
            Err(RemotePathError::EmptyComponent(_))
        ));
        assert!(matches!(
            RemotePath::new("./a"),
            Err(RemotePathError::EmptyComponent(_))
        ));
        assert!(matches!(
            RemotePath::new("a//"),
            Err(RemotePathError::EmptyComponent(_))
        ));
        assert!(matches!(
            RemotePath::new("/"),
            Err(RemotePathError::Absolute(_))
        ));
        assert!(matches!(
            RemotePath::new("a\0b"),
            Err(RemotePathError::Nul(_))
        ));
        let e = RemotePath::new("x/")
            .unwrap()
            .ensure_object_key()
            .unwrap_err();
        assert!(e.to_string().contains("prefix"), "{e}");
    }

    #[test]
    fn join_and_serde() {
        let base = RemotePath::new("tenants/").unwrap();
        assert_eq!(base.join("t1/x").unwrap().as_str(), "tenants/t1/x");
        assert!(base.join("../x").is_err());
        let json = serde_json::to_string(&base).unwrap();
        assert_eq!(json, "\"tenants/\"");
        assert!(serde_json::from_str::<RemotePath>("\"/abs\"").is_err());
    }

    #[test]
    fn key_prefix_maps_both_ways() {
        let path = RemotePath::new("tenants/a/index").unwrap();
        let dir = RemotePath::new("tenants/").unwrap();
        let with = KeyPrefix::new(Some("pfx".into()));
        assert_eq!(with.key(&path), "pfx/tenants/a/index");
        assert_eq!(
            with.list_prefix(Some(&dir)).as_deref(),
            Some("pfx/tenants/")
        );
        assert_eq!(with.list_prefix(None).as_deref(), Some("pfx/"));
        assert_eq!(with.relative("pfx/tenants/a/index"), Some(path.clone()));
        assert_eq!(
            with.relative("pfxother/x"),
            None,
            "a sibling prefix is not ours"
        );
        assert_eq!(with.relative("elsewhere/x"), None);
        let without = KeyPrefix::default();
        assert_eq!(without.key(&path), "tenants/a/index");
        assert_eq!(without.list_prefix(None), None);
        assert_eq!(without.relative("tenants/a/index"), Some(path));
    }
}
