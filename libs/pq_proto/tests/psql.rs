//! The server framing against a real libpq client: `psql` (PostgreSQL 15) connects in
//! walsender mode, with `-c` options in both forms and a JWT as its password, and runs
//! replication commands. Skipped (with a message) where psql is not installed.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pq_proto::{Handshake, HandshakeConfig, ServerConnection};
use tokio::net::TcpListener;
use utils::auth::{Claims, JwtAuth, Scope, encode, generate_keypair};
use utils::{TenantId, TimelineId};

fn psql() -> Option<PathBuf> {
    ["/usr/lib/postgresql/15/bin/psql", "/usr/bin/psql"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Serves connections until the test ends; collects what each one saw.
async fn start_server(auth: Option<Arc<JwtAuth>>) -> (u16, Arc<Mutex<Vec<common::Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            let (r, w) = sock.into_split();
            let (auth, seen) = (auth.clone(), seen2.clone());
            tokio::spawn(async move {
                let config = HandshakeConfig {
                    auth: auth.as_deref(),
                    allowed_scopes: &[Scope::SafekeeperData, Scope::Tenant],
                    ..HandshakeConfig::default()
                };
                let (s, result) = common::serve(ServerConnection::new(r, w), config).await;
                if let Err(e) = result {
                    eprintln!("server: connection ended with {e}");
                }
                seen.lock().unwrap().push(s);
            });
        }
    });
    (port, seen)
}

/// Waits until `n` connections have finished on the server (a client may exit before the
/// server task has seen its connection close), then returns what they saw.
async fn wait_seen(
    seen: &Arc<Mutex<Vec<common::Seen>>>,
    n: usize,
) -> std::sync::MutexGuard<'_, Vec<common::Seen>> {
    for _ in 0..500 {
        if seen.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let guard = seen.lock().unwrap();
    assert_eq!(guard.len(), n, "connections seen by the server");
    guard
}

async fn run_psql(
    psql: &PathBuf,
    conninfo: &str,
    query: &str,
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let out = tokio::process::Command::new(psql)
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            query,
            conninfo,
        ])
        .env_remove("PGPASSWORD")
        .env_remove("PGOPTIONS")
        .env("PGCONNECT_TIMEOUT", "10")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn psql_identify_system_in_walsender_mode() {
    let Some(psql) = psql() else {
        eprintln!("psql not installed; skipping");
        return;
    };
    let (port, seen) = start_server(None).await;
    let (tenant, timeline) = (TenantId::generate(), TimelineId::generate());
    // The reference walproposer's form: one -c, then bare name=value.
    let conninfo = format!(
        "host=127.0.0.1 port={port} user=strata dbname=replication replication=true \
         sslmode=prefer options='-c tenant_id={tenant} timeline_id={timeline}'"
    );
    let (ok, out, err) = run_psql(&psql, &conninfo, "IDENTIFY_SYSTEM;", &[]).await;
    assert!(ok, "psql failed: {err}");
    assert_eq!(out.trim(), "7000000000000001|1|0/1000028|");

    // Both -c forms through PGOPTIONS, an escaped space, and an error reply.
    let conninfo =
        format!("host=127.0.0.1 port={port} user=strata dbname=replication replication=true");
    let opts =
        format!(r"-c tenant_id={tenant} -c timeline_id={timeline} -c application_name=my\ app");
    let (ok, _, err) = run_psql(&psql, &conninfo, "START_WAL_PUSH", &[("PGOPTIONS", &opts)]).await;
    assert!(!ok);
    assert!(err.contains("protocol version 2"), "{err}");

    let seen = wait_seen(&seen, 2).await;
    for s in seen.iter() {
        let Some(Handshake::Ready { params, .. }) = &s.handshake else {
            panic!("{s:?}")
        };
        assert!(params.is_replication(), "{params}");
        assert_eq!(
            params.setting("tenant_id").unwrap(),
            Some(tenant.to_string())
        );
        assert_eq!(
            params.setting("timeline_id").unwrap(),
            Some(timeline.to_string())
        );
    }
    let Some(Handshake::Ready { params, .. }) = &seen[1].handshake else {
        panic!()
    };
    assert_eq!(
        params.setting("application_name").unwrap().as_deref(),
        Some("my app")
    );
}

#[tokio::test]
async fn psql_with_jwt_password() {
    let Some(psql) = psql() else {
        eprintln!("psql not installed; skipping");
        return;
    };
    let keys = generate_keypair().unwrap();
    let auth = Arc::new(JwtAuth::from_pems(&[keys.public_pem.as_bytes()]).unwrap());
    let (port, seen) = start_server(Some(auth)).await;
    let tenant = TenantId::generate();
    let conninfo = format!(
        "host=127.0.0.1 port={port} user=strata dbname=replication replication=true \
         options='-c tenant_id={tenant}'"
    );
    let good = encode(keys.private_pem.as_bytes(), &Claims::tenant(tenant)).unwrap();
    let (ok, out, err) = run_psql(
        &psql,
        &conninfo,
        "IDENTIFY_SYSTEM",
        &[("PGPASSWORD", &good)],
    )
    .await;
    assert!(ok, "psql failed: {err}");
    assert!(out.starts_with("7000000000000001|"), "{out}");

    let other = encode(
        keys.private_pem.as_bytes(),
        &Claims::tenant(TenantId::generate()),
    )
    .unwrap();
    let (ok, _, err) = run_psql(
        &psql,
        &conninfo,
        "IDENTIFY_SYSTEM",
        &[("PGPASSWORD", &other)],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("token is for tenant"), "{err}");

    let (ok, _, err) = run_psql(
        &psql,
        &conninfo,
        "IDENTIFY_SYSTEM",
        &[("PGPASSWORD", "garbage")],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("invalid token"), "{err}");

    let seen = wait_seen(&seen, 3).await;
    let claims: Vec<_> = seen
        .iter()
        .filter_map(|s| match &s.handshake {
            Some(Handshake::Ready { claims, .. }) => claims.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(claims, vec![Claims::tenant(tenant)]);
}

/// PostgreSQL 15's `pg_receivewal` speaks the walreceiver dialect: IDENTIFY_SYSTEM,
/// `SHOW wal_segment_size`, then `START_REPLICATION X/X TIMELINE 1` from the start of the
/// segment holding xlogpos. Our parser must take that command as sent.
#[tokio::test]
async fn pg_receivewal_start_replication_parses() {
    let Some(bin) = [
        "/usr/lib/postgresql/15/bin/pg_receivewal",
        "/usr/bin/pg_receivewal",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists()) else {
        eprintln!("pg_receivewal not installed; skipping");
        return;
    };
    let (port, seen) = start_server(None).await;
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(bin)
        .arg("-D")
        .arg(dir.path())
        .args(["--no-loop", "-w", "-d"])
        .arg(format!("host=127.0.0.1 port={port} user=strata"))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("not in this test"), "{stderr}");
    let seen = wait_seen(&seen, 1).await;
    let queries: Vec<&str> = seen
        .iter()
        .flat_map(|s| s.queries.iter().map(String::as_str))
        .collect();
    let start = queries
        .iter()
        .find(|q| q.starts_with("START_REPLICATION"))
        .unwrap_or_else(|| panic!("{queries:?}"));
    assert_eq!(*start, "START_REPLICATION 0/1000000 TIMELINE 1");
    let cmd = safekeeper_api::ReplicationCommand::parse(start).unwrap();
    let safekeeper_api::ReplicationCommand::StartReplication(sr) = cmd else {
        panic!()
    };
    assert_eq!(
        (sr.start_lsn, sr.timeline, sr.slot),
        (utils::Lsn(0x0100_0000), Some(1), None)
    );
}
