//! Authentication: JWT HS256 tokens, issued and verified with the server's
//! `Keys`. Where a request's token is found (header, query, cookie) is the
//! HTTP edge's business: see the `AuthUser` extractor in `http::extract`.
//!
//! A token's value is never logged: errors name the failure, not the token.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::domain::time::now_ms;
use crate::error::ApiError;

/// The cookie that carries the token (set by login, read by `AuthUser`).
pub const COOKIE: &str = "earntrack_token";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub email: String,
    pub role: String,
    pub iat: i64,
    pub exp: i64,
    /// The user's token version when issued: a token older than the stored
    /// version (after logout-everywhere or a password change) is refused.
    #[serde(default)]
    pub tv: i64,
}

pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub ttl_secs: i64,
}

impl Keys {
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        // Only HS256; `alg: none` and every other algorithm are refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Keys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_secs: ttl_secs.max(1) as i64,
        }
    }

    pub fn issue(&self, id: Uuid, email: &str, role: &str, tv: i64) -> String {
        let iat = now_ms() / 1000;
        let claims = Claims {
            sub: id.to_string(),
            email: email.to_owned(),
            role: role.to_owned(),
            iat,
            exp: iat + self.ttl_secs,
            tv,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => {
                // `exp` is checked with no leeway; jsonwebtoken accepts
                // exp == now, the contract does not.
                if data.claims.exp <= now_ms() / 1000 {
                    Err(ApiError::TokenExpired)
                } else {
                    Ok(data.claims)
                }
            }
            Err(err) if *err.kind() == ErrorKind::ExpiredSignature => Err(ApiError::TokenExpired),
            Err(_) => Err(ApiError::InvalidToken),
        }
    }
}

/// The keys other services publish with (`EARNTRACK_PUBLISHER_KEYS`), kept
/// only as SHA-256 digests and compared in constant time, so neither memory
/// nor timing gives a key away.
pub struct PublisherKeys(Vec<[u8; 32]>);

impl PublisherKeys {
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        PublisherKeys(
            keys.into_iter()
                .filter(|k| !k.is_empty())
                .map(|k| Sha256::digest(k.as_bytes()).into())
                .collect(),
        )
    }

    /// Whether `presented` is one of the keys (every key is compared).
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |found, key| {
                found | key.ct_eq(&digest)
            })
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_and_foreign_tokens_are_told_apart() {
        let keys = Keys::new(b"secret", 60);
        let token = keys.issue(Uuid::new_v4(), "a@b.c", "user", 0);
        assert!(keys.verify(&token).is_ok());
        assert!(matches!(
            Keys::new(b"other", 60).verify(&token),
            Err(ApiError::InvalidToken)
        ));
        assert!(matches!(
            keys.verify("not.a.token"),
            Err(ApiError::InvalidToken)
        ));
    }

    #[test]
    fn publisher_keys_match_only_themselves() {
        let keys = PublisherKeys::new(["k".repeat(32).as_str(), "", "z".repeat(40).as_str()]);
        assert!(keys.matches(&"k".repeat(32)));
        assert!(keys.matches(&"z".repeat(40)));
        assert!(!keys.matches(&"k".repeat(31)));
        assert!(!keys.matches(""));
        assert!(!PublisherKeys::new([]).matches(""));
    }
}
