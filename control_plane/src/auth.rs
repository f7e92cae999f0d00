//! JWT auth for a local cluster (`strata init --auth`).
//!
//! ```text
//! <repo>/auth/private_key.pem    Ed25519 signing key (0600): every token is minted from it
//! <repo>/auth/public_key.pem     what the services verify with (libpq and HTTP)
//! <repo>/auth/pageserver.token   the pageserver's token for the safekeepers (safekeeperdata)
//! <endpoint dir>/safekeeper.token  a sidecar's token: its tenant only
//! ```
//!
//! The CLI signs its own calls: `pageserverapi` for the pageserver, `safekeeperdata` for
//! the safekeepers, a tenant token for an endpoint's basebackup and sidecar, so a compute
//! never holds more than its own tenant. `strata token` prints one for people and scripts.
//! Token files are written crash-safely with mode 0600.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use utils::TenantId;
use utils::auth::{Claims, Scope};
use utils::crashsafe::{self, Sync};

use crate::repo::Repo;

/// `<repo>/auth`.
pub fn auth_dir(repo_dir: &Path) -> PathBuf {
    repo_dir.join("auth")
}

/// The public key the services verify tokens with.
pub fn public_key_path(repo_dir: &Path) -> PathBuf {
    auth_dir(repo_dir).join("public_key.pem")
}

fn private_key_path(repo_dir: &Path) -> PathBuf {
    auth_dir(repo_dir).join("private_key.pem")
}

/// The pageserver's token for the safekeepers.
pub fn pageserver_token_path(repo_dir: &Path) -> PathBuf {
    auth_dir(repo_dir).join("pageserver.token")
}

/// The pageserver's token for the storage controller's upcalls (`generations_api`).
pub fn generations_token_path(repo_dir: &Path) -> PathBuf {
    auth_dir(repo_dir).join("generations_api.token")
}

/// Creates the key pair and the pageserver's tokens (`strata init --auth`).
pub fn init_keys(repo_dir: &Path) -> anyhow::Result<()> {
    let dir = auth_dir(repo_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", dir.display()))?;
    let pair = utils::auth::generate_keypair().context("generating the JWT key pair")?;
    write_secret(&private_key_path(repo_dir), pair.private_pem.as_bytes())?;
    crashsafe::overwrite(
        &public_key_path(repo_dir),
        pair.public_pem.as_bytes(),
        Sync::Yes,
    )
    .context("writing the public key")?;
    let token = mint(repo_dir, &Claims::new(Scope::SafekeeperData))?;
    write_secret(&pageserver_token_path(repo_dir), token.as_bytes())?;
    let token = mint(repo_dir, &Claims::new(Scope::GenerationsApi))?;
    write_secret(&generations_token_path(repo_dir), token.as_bytes())
}

/// Signs `claims` with the repository's private key.
fn mint(repo_dir: &Path, claims: &Claims) -> anyhow::Result<String> {
    let path = private_key_path(repo_dir);
    let pem = std::fs::read(&path).with_context(|| {
        format!(
            "reading {} (the cluster was initialized with --auth)",
            path.display()
        )
    })?;
    utils::auth::encode(&pem, claims).with_context(|| format!("signing with {}", path.display()))
}

/// A token for `claims` when the cluster has auth on, else `None`.
pub fn token(repo: &Repo, claims: &Claims) -> anyhow::Result<Option<String>> {
    if !repo.config.auth {
        return Ok(None);
    }
    mint(&repo.dir, claims).map(Some)
}

/// Writes `bytes` to `path` crash-safely, readable by its owner only.
pub fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crashsafe::overwrite(path, bytes, Sync::Yes)
        .with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))
}

/// Options of `strata token`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  strata token --tenant-id 3f5a…\n  strata token --scope pageserverapi\n  curl -H \"Authorization: Bearer $(strata token --scope pageserverapi)\" http://127.0.0.1:PORT/v1/tenant"
)]
pub struct TokenArgs {
    /// What the token may do: tenant (needs --tenant-id), pageserverapi, safekeeperdata, admin.
    #[arg(long, default_value = "tenant", value_parser = parse_scope)]
    scope: Scope,
    /// The tenant a `tenant` token is for.
    #[arg(long)]
    tenant_id: Option<TenantId>,
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        format!(
            "unknown scope {s:?} (tenant, pageserverapi, safekeeperdata, generations_api, admin)"
        )
    })
}

/// `strata token`: prints a token signed with the cluster's key.
pub fn print_token(repo: &Repo, args: &TokenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        repo.config.auth,
        "the cluster in {} has auth off (`strata init --auth` turns it on)",
        repo.dir.display()
    );
    let claims = match (args.scope, args.tenant_id) {
        (Scope::Tenant, Some(t)) => Claims::tenant(t),
        (Scope::Tenant, None) => anyhow::bail!("a tenant token needs --tenant-id"),
        (_, Some(_)) => anyhow::bail!("--tenant-id goes with --scope tenant only"),
        (scope, None) => Claims::new(scope),
    };
    println!("{}", mint(&repo.dir, &claims)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use utils::auth::JwtAuth;

    #[test]
    fn keys_sign_tokens_the_public_key_verifies_and_secrets_are_private() {
        let dir = tempfile::tempdir().unwrap();
        init_keys(dir.path()).unwrap();
        let auth = JwtAuth::from_path(&public_key_path(dir.path())).unwrap();
        let t = TenantId::generate();
        let token = mint(dir.path(), &Claims::tenant(t)).unwrap();
        assert_eq!(auth.decode(&token).unwrap().tenant_id, Some(t));
        let ps = std::fs::read_to_string(pageserver_token_path(dir.path())).unwrap();
        assert_eq!(auth.decode(&ps).unwrap().scope, Scope::SafekeeperData);
        for p in [
            private_key_path(dir.path()),
            pageserver_token_path(dir.path()),
        ] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }

    #[test]
    fn scopes_parse_by_their_wire_names() {
        assert_eq!(parse_scope("pageserverapi").unwrap(), Scope::PageServerApi);
        assert_eq!(parse_scope("tenant").unwrap(), Scope::Tenant);
        assert!(parse_scope("root").unwrap_err().contains("unknown scope"));
    }
}
