//! JWT authentication shared by every Strata API (HTTP and libpq ports).
//!
//! Tokens are EdDSA (Ed25519) JWTs whose claims carry a [`Scope`] and, for the `tenant`
//! scope, the one tenant the token is good for. Services hold only public keys; the
//! control plane (and tests) hold the private key and mint tokens with [`encode`].
//! `exp` is optional: when present it is enforced.
//!
//! Authorization rule ([`authorize`]): a token is accepted when its scope is one of the
//! scopes the operation allows, and a `tenant`-scoped token additionally only for an
//! operation on its own tenant. Operations that concern no single tenant never accept a
//! `tenant` token.

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::id::TenantId;

/// What a token is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// The pageserver's management API.
    #[serde(rename = "pageserverapi")]
    PageServerApi,
    /// Everything on a safekeeper: WAL push and pull, management API.
    #[serde(rename = "safekeeperdata")]
    SafekeeperData,
    /// The control plane's generation-issuing API.
    #[serde(rename = "generations_api")]
    GenerationsApi,
    /// One tenant's data (compute and per-tenant API calls); needs `tenant_id`.
    #[serde(rename = "tenant")]
    Tenant,
    /// Cluster-wide administration.
    #[serde(rename = "admin")]
    Admin,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::PageServerApi => "pageserverapi",
            Scope::SafekeeperData => "safekeeperdata",
            Scope::GenerationsApi => "generations_api",
            Scope::Tenant => "tenant",
            Scope::Admin => "admin",
        })
    }
}

/// The claims of a Strata token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// What the token may do.
    pub scope: Scope,
    /// For [`Scope::Tenant`]: the only tenant it may touch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<TenantId>,
    /// Optional expiry (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

impl Claims {
    /// Claims for `scope` without a tenant or expiry.
    pub fn new(scope: Scope) -> Self {
        Claims {
            scope,
            tenant_id: None,
            exp: None,
        }
    }

    /// Claims for one tenant's data.
    pub fn tenant(tenant_id: TenantId) -> Self {
        Claims {
            scope: Scope::Tenant,
            tenant_id: Some(tenant_id),
            exp: None,
        }
    }
}

/// Authentication and authorization failures. Messages never include the token itself.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token where one is required.
    #[error("missing authorization token")]
    MissingToken,
    /// The token is malformed or its signature does not verify with any known key.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The token's `exp` has passed.
    #[error("token expired")]
    Expired,
    /// Valid token, but its scope does not allow this operation.
    #[error("scope {scope} is not allowed here (allowed: {allowed})")]
    WrongScope {
        /// The token's scope.
        scope: Scope,
        /// What the operation accepts.
        allowed: String,
    },
    /// A tenant token used on another tenant (or on a non-tenant operation).
    #[error("token is for tenant {token_tenant}, not for {requested}")]
    TenantMismatch {
        /// The tenant the token names.
        token_tenant: String,
        /// What the request touches.
        requested: String,
    },
    /// A key file could not be read or parsed.
    #[error("cannot load key {path}: {reason}")]
    KeyLoad {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Validates tokens against one or more public keys (several keys allow rotation).
pub struct JwtAuth {
    keys: Vec<DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl JwtAuth {
    /// A validator trusting these PEM-encoded Ed25519 public keys.
    pub fn from_pems(pems: &[&[u8]]) -> Result<Self, AuthError> {
        let keys = pems
            .iter()
            .map(|pem| DecodingKey::from_ed_pem(pem))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AuthError::KeyLoad {
                path: PathBuf::from("<memory>"),
                reason: e.to_string(),
            })?;
        Ok(Self::from_keys(keys))
    }

    fn from_keys(keys: Vec<DecodingKey>) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Strata tokens need not expire; `exp` is checked only when present.
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        validation.leeway = 0;
        JwtAuth { keys, validation }
    }

    /// Loads a PEM public key file, or every `*.pem` file of a directory.
    pub fn from_path(path: &Path) -> Result<Self, AuthError> {
        let load_err = |p: &Path, reason: String| AuthError::KeyLoad {
            path: p.to_path_buf(),
            reason,
        };
        let files = if path.is_dir() {
            let mut files = std::fs::read_dir(path)
                .map_err(|e| load_err(path, e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pem"))
                .collect::<Vec<_>>();
            files.sort();
            files
        } else {
            vec![path.to_path_buf()]
        };
        if files.is_empty() {
            return Err(load_err(path, "no *.pem files in directory".into()));
        }
        let mut keys = Vec::with_capacity(files.len());
        for file in files {
            let pem = std::fs::read(&file).map_err(|e| load_err(&file, e.to_string()))?;
            let key = DecodingKey::from_ed_pem(&pem)
                .map_err(|e| load_err(&file, format!("not an Ed25519 public key PEM: {e}")))?;
            keys.push(key);
        }
        Ok(Self::from_keys(keys))
    }

    /// Verifies the signature (with any key) and expiry, and returns the claims.
    pub fn decode(&self, token: &str) -> Result<Claims, AuthError> {
        let mut last = AuthError::InvalidToken("no keys configured".into());
        for key in &self.keys {
            match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    last = match e.kind() {
                        jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                        _ => AuthError::InvalidToken(e.to_string()),
                    };
                    if matches!(last, AuthError::Expired) {
                        // The signature verified with this key: no other key will do better.
                        break;
                    }
                }
            }
        }
        Err(last)
    }
}

/// Checks `claims` against the scopes an operation allows and the tenant it touches.
pub fn authorize(
    claims: &Claims,
    allowed: &[Scope],
    tenant: Option<TenantId>,
) -> Result<(), AuthError> {
    if !allowed.contains(&claims.scope) {
        return Err(AuthError::WrongScope {
            scope: claims.scope,
            allowed: allowed
                .iter()
                .map(Scope::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    if claims.scope == Scope::Tenant {
        let token_tenant = claims
            .tenant_id
            .ok_or_else(|| AuthError::InvalidToken("tenant scope without tenant_id".into()))?;
        match tenant {
            Some(t) if t == token_tenant => {}
            other => {
                return Err(AuthError::TenantMismatch {
                    token_tenant: token_tenant.to_string(),
                    requested: other.map_or("a cluster-wide operation".into(), |t| t.to_string()),
                });
            }
        }
    }
    Ok(())
}

/// An Ed25519 key pair in PEM form, for `strata init` and tests.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// PKCS#8 private key PEM: mints tokens.
    pub private_pem: String,
    /// SPKI public key PEM: what services load.
    pub public_pem: String,
}

/// Generates a fresh Ed25519 key pair.
pub fn generate_keypair() -> Result<KeyPair, AuthError> {
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding};
    let signing = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let gen_err = |e: String| AuthError::KeyLoad {
        path: PathBuf::from("<generated>"),
        reason: e,
    };
    let private_pem = signing
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| gen_err(e.to_string()))?
        .to_string();
    let public_pem = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| gen_err(e.to_string()))?;
    Ok(KeyPair {
        private_pem,
        public_pem,
    })
}

/// Mints a token signed with a PKCS#8 Ed25519 private key PEM.
pub fn encode(private_pem: &[u8], claims: &Claims) -> Result<String, AuthError> {
    let key = EncodingKey::from_ed_pem(private_pem).map_err(|e| AuthError::KeyLoad {
        path: PathBuf::from("<private key>"),
        reason: e.to_string(),
    })?;
    jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &key)
        .map_err(|e| AuthError::InvalidToken(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (KeyPair, JwtAuth) {
        let pair = generate_keypair().unwrap();
        let auth = JwtAuth::from_pems(&[pair.public_pem.as_bytes()]).unwrap();
        (pair, auth)
    }

    #[test]
    fn good_token_round_trips() {
        let (pair, auth) = setup();
        let claims = Claims::new(Scope::PageServerApi);
        let token = encode(pair.private_pem.as_bytes(), &claims).unwrap();
        assert_eq!(auth.decode(&token).unwrap(), claims);
        authorize(&claims, &[Scope::PageServerApi], None).unwrap();
    }

    #[test]
    fn wrong_key_is_rejected() {
        let (_, auth) = setup();
        let other = generate_keypair().unwrap();
        let token = encode(other.private_pem.as_bytes(), &Claims::new(Scope::Admin)).unwrap();
        assert!(matches!(
            auth.decode(&token),
            Err(AuthError::InvalidToken(_))
        ));
        assert!(matches!(
            auth.decode("garbage"),
            Err(AuthError::InvalidToken(_))
        ));
    }

    #[test]
    fn key_rotation_accepts_any_configured_key() {
        let a = generate_keypair().unwrap();
        let b = generate_keypair().unwrap();
        let auth = JwtAuth::from_pems(&[a.public_pem.as_bytes(), b.public_pem.as_bytes()]).unwrap();
        for pair in [&a, &b] {
            let token = encode(pair.private_pem.as_bytes(), &Claims::new(Scope::Admin)).unwrap();
            auth.decode(&token).unwrap();
        }
    }

    #[test]
    fn wrong_scope_is_rejected() {
        let claims = Claims::new(Scope::SafekeeperData);
        let e = authorize(&claims, &[Scope::PageServerApi, Scope::Admin], None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "scope safekeeperdata is not allowed here (allowed: pageserverapi, admin)"
        );
    }

    #[test]
    fn expired_token_is_rejected() {
        let (pair, auth) = setup();
        let mut claims = Claims::new(Scope::SafekeeperData);
        claims.exp = Some(1_000_000); // 1970
        let token = encode(pair.private_pem.as_bytes(), &claims).unwrap();
        assert!(matches!(auth.decode(&token), Err(AuthError::Expired)));
        claims.exp = Some(u64::from(u32::MAX) * 2); // far future
        let token = encode(pair.private_pem.as_bytes(), &claims).unwrap();
        auth.decode(&token).unwrap();
    }

    #[test]
    fn tenant_scope_is_bound_to_its_tenant() {
        let (pair, auth) = setup();
        let mine = TenantId::generate();
        let token = encode(pair.private_pem.as_bytes(), &Claims::tenant(mine)).unwrap();
        let claims = auth.decode(&token).unwrap();
        authorize(&claims, &[Scope::Tenant], Some(mine)).unwrap();
        let other = TenantId::generate();
        let e = authorize(&claims, &[Scope::Tenant], Some(other)).unwrap_err();
        assert!(matches!(e, AuthError::TenantMismatch { .. }));
        assert!(e.to_string().contains(&other.to_string()));
        let e = authorize(&claims, &[Scope::Tenant], None).unwrap_err();
        assert!(matches!(e, AuthError::TenantMismatch { .. }));
        let e = authorize(&claims, &[Scope::SafekeeperData], Some(mine)).unwrap_err();
        assert!(matches!(e, AuthError::WrongScope { .. }));
        let broken = Claims {
            scope: Scope::Tenant,
            tenant_id: None,
            exp: None,
        };
        assert!(authorize(&broken, &[Scope::Tenant], Some(mine)).is_err());
    }

    #[test]
    fn claims_json_shape() {
        let t = TenantId::generate();
        let v = serde_json::to_value(Claims::tenant(t)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"scope": "tenant", "tenant_id": t.to_string()})
        );
        let v = serde_json::to_value(Claims::new(Scope::GenerationsApi)).unwrap();
        assert_eq!(v, serde_json::json!({"scope": "generations_api"}));
    }

    #[test]
    fn key_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let a = generate_keypair().unwrap();
        std::fs::write(dir.path().join("a.pem"), &a.public_pem).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        JwtAuth::from_path(&dir.path().join("a.pem")).unwrap();
        JwtAuth::from_path(dir.path()).unwrap();
        std::fs::write(dir.path().join("bad.pem"), "not a key").unwrap();
        let e = JwtAuth::from_path(dir.path()).unwrap_err();
        assert!(e.to_string().contains("bad.pem"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(JwtAuth::from_path(empty.path()).is_err());
        assert!(JwtAuth::from_path(Path::new("/nonexistent.pem")).is_err());
    }
}
