//! OAuth2 client credentials against the Entra token endpoint
//! (`POST {login}/{tenant}/oauth2/v2.0/token`), with the token cached and renewed before it
//! expires. A service that still refuses a token (401) asks for [`TokenCache::renew`]: one
//! fresh token per rejected one, however many requests saw it rejected at once.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{BadField, decode, first_line};
use crate::config::Secret;

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token endpoint {endpoint}: {source}")]
    Transport {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    /// Entra answered with an error (`invalid_client`, `unauthorized_client`, …).
    #[error("token endpoint {endpoint} refused (HTTP {status}): {error}: {description}")]
    Refused {
        endpoint: String,
        status: u16,
        error: String,
        description: String,
    },
    #[error("token endpoint {endpoint}: bad response: {field}: {problem}")]
    BadResponse {
        endpoint: String,
        field: String,
        problem: String,
    },
}

/// A bearer token and which fetch it came from.
#[derive(Debug, Clone)]
pub struct Token {
    pub value: Secret,
    generation: u64,
}

#[derive(Debug)]
struct Cached {
    token: Token,
    renew_at: Instant,
}

/// The token of one app registration for one scope.
#[derive(Debug)]
pub struct TokenCache {
    http: reqwest::Client,
    endpoint: String,
    client_id: String,
    secret: Secret,
    scope: String,
    state: Mutex<Option<Cached>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(deserialize_with = "seconds")]
    expires_in: u64,
    #[serde(default)]
    token_type: Option<String>,
}

/// `expires_in` is a number from Entra and a numeric string from some older endpoints.
fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Number(u64),
        Text(String),
    }
    match N::deserialize(d)? {
        N::Number(n) => Ok(n),
        N::Text(t) => t
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("`{t}` is not a number of seconds"))),
    }
}

#[derive(Deserialize)]
struct TokenFailure {
    error: String,
    #[serde(default)]
    error_description: String,
}

/// Renews this long before expiry: a fifth of the lifetime, at most five minutes, so that a
/// request sent just before renewal still arrives with a live token.
fn margin(lifetime: Duration) -> Duration {
    (lifetime / 5).min(Duration::from_secs(300))
}

impl TokenCache {
    /// `login_url` is the endpoint's base (`https://login.microsoftonline.com`).
    pub fn new(
        http: reqwest::Client,
        login_url: &str,
        tenant: &str,
        client_id: &str,
        secret: Secret,
        scope: &str,
    ) -> Self {
        TokenCache {
            http,
            endpoint: format!(
                "{}/{tenant}/oauth2/v2.0/token",
                login_url.trim_end_matches('/')
            ),
            client_id: client_id.to_owned(),
            secret,
            scope: scope.to_owned(),
            state: Mutex::new(None),
        }
    }

    /// A live token: the cached one, or a new one when it is due for renewal.
    pub async fn token(&self) -> Result<Token, TokenError> {
        let mut state = self.state.lock().await;
        if let Some(c) = state.as_ref()
            && Instant::now() < c.renew_at
        {
            return Ok(c.token.clone());
        }
        let generation = state.as_ref().map_or(0, |c| c.token.generation + 1);
        let fresh = self.fetch(generation).await?;
        let token = fresh.token.clone();
        *state = Some(fresh);
        Ok(token)
    }

    /// `rejected` was refused by a service: fetch a new token unless another request already
    /// did since.
    pub async fn renew(&self, rejected: &Token) -> Result<Token, TokenError> {
        let mut state = self.state.lock().await;
        if let Some(c) = state.as_ref()
            && c.token.generation != rejected.generation
        {
            return Ok(c.token.clone());
        }
        let fresh = self.fetch(rejected.generation + 1).await?;
        let token = fresh.token.clone();
        *state = Some(fresh);
        Ok(token)
    }

    async fn fetch(&self, generation: u64) -> Result<Cached, TokenError> {
        let endpoint = self.endpoint.clone();
        let sent = Instant::now();
        let response = self
            .http
            .post(&self.endpoint)
            .form(&[
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.secret.expose()),
                ("scope", self.scope.as_str()),
                ("grant_type", "client_credentials"),
            ])
            .send()
            .await
            .map_err(|e| TokenError::Transport {
                endpoint: endpoint.clone(),
                source: e.without_url(),
            })?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| TokenError::Transport {
            endpoint: endpoint.clone(),
            source: e.without_url(),
        })?;
        let bad = |b: BadField| TokenError::BadResponse {
            endpoint: endpoint.clone(),
            field: b.field,
            problem: b.problem,
        };
        if !status.is_success() {
            return Err(match decode::<TokenFailure>(&body) {
                Ok(f) => TokenError::Refused {
                    endpoint: endpoint.clone(),
                    status: status.as_u16(),
                    error: f.error,
                    description: first_line(&f.error_description),
                },
                Err(_) => TokenError::Refused {
                    endpoint: endpoint.clone(),
                    status: status.as_u16(),
                    error: "unreadable".into(),
                    description: format!(
                        "an error answer that is not Entra's JSON ({} bytes)",
                        body.len()
                    ),
                },
            });
        }
        super::expect_json(&headers).map_err(bad)?;
        let answer: TokenAnswer = decode(&body).map_err(bad)?;
        if answer
            .token_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(bad(BadField {
                field: "token_type".into(),
                problem: "not a Bearer token".into(),
            }));
        }
        if answer.access_token.is_empty() {
            return Err(bad(BadField {
                field: "access_token".into(),
                problem: "empty".into(),
            }));
        }
        let lifetime = Duration::from_secs(answer.expires_in);
        tracing::debug!(endpoint = %self.endpoint, scope = %self.scope, ?lifetime, "new access token");
        Ok(Cached {
            token: Token {
                value: Secret::new(answer.access_token),
                generation,
            },
            // From when the request was sent: the lifetime started no earlier than that.
            renew_at: sent + lifetime - margin(lifetime),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_a_fifth_before_expiry_at_most_five_minutes() {
        assert_eq!(margin(Duration::from_secs(3599)), Duration::from_secs(300));
        assert_eq!(margin(Duration::from_secs(10)), Duration::from_secs(2));
        assert_eq!(margin(Duration::ZERO), Duration::ZERO);
    }
}
