//! Failpoints: named places in the code where tests inject failures, delays and crashes.
//!
//! Built on the `fail` crate and compiled in only with the `testing` feature; without it
//! every check here is a no-op the optimizer removes, and configuring one is an error.
//! Actions are the `fail` crate's (`off`, `return`, `return(V)`, `sleep(MS)`, `pause`,
//! `panic`, `print`, with `N*` count and `P%` probability prefixes, chained with `->`),
//! plus Strata's `exit`: exit the process with code 1 at once, simulating a crash at that
//! exact point (also with `N*`/`P%` prefixes, e.g. `2*off->exit` to exit on the third hit).
//!
//! Set at run time with `PUT /v1/failpoints`, or at start from the environment:
//! `FAILPOINTS="a=return;b=exit"`.

use serde::{Deserialize, Serialize};

/// Exit code of the `exit` action.
pub const EXIT_CODE: i32 = 1;

/// One failpoint setting, as `PUT /v1/failpoints` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FailpointConfig {
    /// The failpoint's name.
    #[schema(min_length = 1)]
    pub name: String,
    /// The actions, in the `fail` crate's syntax plus `exit`.
    #[schema(min_length = 1)]
    pub actions: String,
}

/// A failpoint could not be configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailpointError {
    /// The binary was built without the `testing` feature.
    #[error("failpoints are not supported: this binary was built without the `testing` feature")]
    NotSupported,
    /// The action string does not parse.
    #[error("invalid actions {actions:?} for failpoint {name:?}: {reason}")]
    BadActions {
        /// The failpoint.
        name: String,
        /// What was given.
        actions: String,
        /// Why it was rejected.
        reason: String,
    },
    /// `FAILPOINTS` is not `name=actions;…`.
    #[error("invalid FAILPOINTS entry {0:?}: expected name=actions")]
    BadEnvEntry(String),
}

/// Whether failpoints are compiled in.
pub const fn supported() -> bool {
    cfg!(feature = "testing")
}

/// Applies one failpoint setting.
pub fn configure(name: &str, actions: &str) -> Result<(), FailpointError> {
    imp::configure(name, actions)
}

/// Applies the `FAILPOINTS` environment variable, if set. Services call this at start.
pub fn init_from_env() -> Result<(), FailpointError> {
    let Ok(spec) = std::env::var("FAILPOINTS") else {
        return Ok(());
    };
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, actions) = entry
            .split_once('=')
            .ok_or_else(|| FailpointError::BadEnvEntry(entry.to_string()))?;
        configure(name.trim(), actions.trim())?;
        tracing::info!("failpoint {name} set to {actions} from FAILPOINTS");
    }
    Ok(())
}

/// Evaluates a failpoint in synchronous code: `Some(value)` when it fires a `return`
/// action (`value` is the argument of `return(V)`, if any).
pub fn eval(name: &str) -> Option<Option<String>> {
    imp::eval(name)
}

/// Evaluates a failpoint from async code. A `pause` or `sleep` blocks a dedicated blocking
/// thread, not a runtime worker. Logs `at failpoint NAME` before blocking, which tests wait
/// for to know the code is parked there.
pub async fn eval_async(name: &str) -> Option<Option<String>> {
    imp::eval_async(name).await
}

#[cfg(feature = "testing")]
mod imp {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    pub(super) fn configure(name: &str, actions: &str) -> Result<(), FailpointError> {
        let bad = |reason: String| FailpointError::BadActions {
            name: name.to_string(),
            actions: actions.to_string(),
            reason,
        };
        if name.is_empty() {
            return Err(bad("empty failpoint name".into()));
        }
        if actions.trim_end().ends_with("exit") {
            return configure_exit(name, actions).map_err(bad);
        }
        fail::cfg(name, actions).map_err(bad)
    }

    /// `[P%][N*]off->...->[P%][N*]exit` is beyond the `fail` crate, so: the prefix before
    /// the final `exit` may only be `N*off` (skip N hits), and the exit itself may carry
    /// `P%` and `N*` prefixes.
    fn configure_exit(name: &str, actions: &str) -> Result<(), String> {
        let mut parts: Vec<&str> = actions.split("->").map(str::trim).collect();
        let last = parts.pop().unwrap_or_default();
        let mut skip = 0u64;
        for p in parts {
            let count = p
                .strip_suffix("*off")
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| format!("only N*off may precede exit, got {p:?}"))?;
            skip += count;
        }
        let (percent, rest) = match last.split_once('%') {
            Some((p, rest)) => (
                p.parse::<f64>()
                    .ok()
                    .filter(|p| (0.0..=100.0).contains(p))
                    .ok_or_else(|| format!("bad probability {p:?}"))?,
                rest,
            ),
            None => (100.0, last),
        };
        let (limit, rest) = match rest.split_once('*') {
            Some((n, rest)) => (
                Some(n.parse::<u64>().map_err(|_| format!("bad count {n:?}"))?),
                rest,
            ),
            None => (None, rest),
        };
        if rest != "exit" {
            return Err(format!("unknown action {rest:?}"));
        }
        let hits = Arc::new(AtomicU64::new(0));
        let name_owned = name.to_string();
        fail::cfg_callback(name, move || {
            let hit = hits.fetch_add(1, Ordering::SeqCst);
            if hit < skip || limit.is_some_and(|l| hit - skip >= l) {
                return;
            }
            if percent < 100.0 && rand::random::<f64>() * 100.0 >= percent {
                return;
            }
            tracing::info!("failpoint {name_owned}: exit");
            eprintln!("failpoint {name_owned}: exit");
            std::process::exit(EXIT_CODE);
        })
    }

    pub(super) fn eval(name: &str) -> Option<Option<String>> {
        fail::eval(name, |v| v)
    }

    pub(super) async fn eval_async(name: &str) -> Option<Option<String>> {
        if !fail::list().iter().any(|(n, _)| n == name) {
            return None;
        }
        tracing::info!("at failpoint {name}");
        let name = name.to_string();
        tokio::task::spawn_blocking(move || fail::eval(&name, |v| v))
            .await
            .ok()
            .flatten()
    }
}

#[cfg(not(feature = "testing"))]
mod imp {
    use super::*;

    pub(super) fn configure(_name: &str, _actions: &str) -> Result<(), FailpointError> {
        Err(FailpointError::NotSupported)
    }

    pub(super) fn eval(_name: &str) -> Option<Option<String>> {
        None
    }

    pub(super) async fn eval_async(_name: &str) -> Option<Option<String>> {
        None
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;

    #[test]
    fn return_and_off() {
        configure("utils-test-return", "return(42)").unwrap();
        assert_eq!(eval("utils-test-return"), Some(Some("42".to_string())));
        configure("utils-test-return", "off").unwrap();
        assert_eq!(eval("utils-test-return"), None);
        assert_eq!(eval("utils-test-never-set"), None);
    }

    #[test]
    fn counted_actions() {
        configure("utils-test-count", "2*return->off").unwrap();
        assert!(eval("utils-test-count").is_some());
        assert!(eval("utils-test-count").is_some());
        assert!(eval("utils-test-count").is_none());
    }

    #[test]
    fn bad_actions_are_rejected_with_name() {
        let e = configure("utils-test-bad", "explode").unwrap_err();
        assert!(e.to_string().contains("utils-test-bad"), "{e}");
        assert!(configure("utils-test-bad", "x*exit").is_err());
        assert!(configure("utils-test-bad", "return->exit").is_err());
        assert!(configure("", "off").is_err());
    }

    #[test]
    fn exit_is_accepted() {
        // Configured but not evaluated here: evaluating would end the test process.
        configure("utils-test-exit", "exit").unwrap();
        configure("utils-test-exit", "3*off->50%1*exit").unwrap();
        configure("utils-test-exit", "off").unwrap();
    }

    #[tokio::test]
    async fn async_eval_sleeps_off_the_runtime() {
        configure("utils-test-async", "1*sleep(10)->return(7)").unwrap();
        assert_eq!(
            eval_async("utils-test-async").await,
            None,
            "sleep returns nothing"
        );
        assert_eq!(
            eval_async("utils-test-async").await,
            Some(Some("7".to_string()))
        );
        configure("utils-test-async", "off").unwrap();
    }
}

#[cfg(all(test, not(feature = "testing")))]
mod tests {
    use super::*;

    #[test]
    fn unsupported_without_testing_feature() {
        assert_eq!(configure("x", "return"), Err(FailpointError::NotSupported));
        assert_eq!(eval("x"), None);
    }
}
