//! Authentication to partners: credentials resolved per call from secret references, and
//! OAuth2 client-credentials tokens cached per partner until shortly before they expire,
//! fetched by one caller while the others wait (no stampede), and dropped when the partner
//! answers 401 so the next call fetches a fresh one exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder};
use serde_json::Value;
use tokio::time::Instant;
use tower::ServiceExt;
use url::Url;

use super::guard::{AddressGuard, redact};
use super::secrets::{Secret, SecretStore, resolve};
use super::signing::{AwsCredentials, Signer};
use super::stack::{Attempt, EndpointStack, Exchange, Prepared, Trace};
use crate::error::ConnectorError;
use crate::spec::{Auth, ClientAuth, KeyLocation, Owner};

/// A partner's cached OAuth2 token (one per token URL and client).
#[derive(Debug, Default)]
pub struct TokenSlot {
    current: tokio::sync::Mutex<Option<(Secret, Instant)>>,
    requests: AtomicU64,
}

impl TokenSlot {
    /// Token requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Forgets `stale` if it is still the cached token (a 401 proved it dead); a token
    /// another caller already replaced stays.
    pub async fn invalidate(&self, stale: &Secret) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|(t, _)| t == stale) {
            *current = None;
        }
    }
}

/// What the connector's auth needs, resolved for one call.
#[derive(Debug)]
pub struct Credentials<'a> {
    pub auth: &'a Auth,
    pub partner: &'a str,
    pub owner: &'a Owner,
    pub secrets: &'a dyn SecretStore,
}

impl Credentials<'_> {
    fn resolve(&self, text: &str) -> Result<Secret, ConnectorError> {
        resolve(text, self.partner, self.owner, self.secrets)
    }
}

/// How a request is authenticated, ready to apply (resolved secrets inside).
#[derive(Debug, Clone)]
pub enum Applied {
    None,
    Header {
        name: String,
        value: Secret,
    },
    Query {
        name: String,
        value: Secret,
    },
    Basic {
        username: Secret,
        password: Secret,
    },
    /// Signed per attempt, over the request as sent ([`Prepared::build`] signs it).
    ///
    /// [`Prepared::build`]: super::stack::Prepared::build
    Signed(Arc<Signer>),
}

impl Applied {
    pub fn apply(&self, request: RequestBuilder) -> RequestBuilder {
        match self {
            Self::None => request,
            Self::Header { name, value } => request.header(name.as_str(), value.expose()),
            Self::Query { name, value } => request.query(&[(name.as_str(), value.expose())]),
            Self::Basic { username, password } => {
                request.basic_auth(username.expose(), Some(password.expose()))
            }
            // Needs the final URL and body: signed where the request is built.
            Self::Signed(_) => request,
        }
    }

    /// For a query key: whether `url` already carries it (a next-page link often does).
    pub fn present_in(&self, url: &Url) -> bool {
        match self {
            Self::Query { name, .. } => url.query_pairs().any(|(k, _)| k == name.as_str()),
            _ => false,
        }
    }
}

fn with_scheme(scheme: &str, token: &Secret) -> Secret {
    if scheme.is_empty() {
        token.clone()
    } else {
        Secret::new(format!("{scheme} {}", token.expose()))
    }
}

/// Where OAuth2 token requests go: the token URL's endpoint stack (breaker, attempt
/// timeout) and the connector's client (its TLS identity).
#[derive(Debug, Clone)]
pub struct TokenRoute {
    pub stack: EndpointStack,
    pub client: Client,
    pub guard: Arc<dyn AddressGuard>,
}

/// The static part of the auth (everything but OAuth2).
pub fn static_auth(creds: &Credentials<'_>) -> Result<Option<Applied>, ConnectorError> {
    Ok(Some(match creds.auth {
        Auth::None => Applied::None,
        Auth::ApiKey {
            location,
            name,
            value,
        } => {
            let value = creds.resolve(&value.0)?;
            match location {
                KeyLocation::Header => Applied::Header {
                    name: name.clone(),
                    value,
                },
                KeyLocation::Query => Applied::Query {
                    name: name.clone(),
                    value,
                },
            }
        }
        Auth::Basic { username, password } => Applied::Basic {
            username: creds.resolve(username)?,
            password: creds.resolve(&password.0)?,
        },
        Auth::Bearer {
            token,
            header,
            scheme,
        } => Applied::Header {
            name: header.clone(),
            value: with_scheme(scheme, &creds.resolve(&token.0)?),
        },
        Auth::Hmac {
            key_id,
            secret,
            algorithm,
            encoding,
            signature_header,
            timestamp_header,
            key_id_header,
        } => Applied::Signed(Arc::new(Signer::Hmac {
            key_id: key_id.as_deref().map(|id| creds.resolve(id)).transpose()?,
            secret: creds.resolve(&secret.0)?,
            algorithm: *algorithm,
            encoding: *encoding,
            signature_header: signature_header.clone(),
            timestamp_header: timestamp_header.clone(),
            key_id_header: key_id_header.clone(),
        })),
        Auth::AwsSigv4 {
            access_key_id,
            secret_access_key,
            session_token,
            region,
            service,
        } => Applied::Signed(Arc::new(Signer::Aws(AwsCredentials {
            access_key_id: creds.resolve(access_key_id)?,
            secret_access_key: creds.resolve(&secret_access_key.0)?,
            session_token: session_token
                .as_ref()
                .map(|t| creds.resolve(&t.0))
                .transpose()?,
            region: region.clone(),
            service: service.clone(),
            path_style: super::signing::PathStyle::of_service(service),
        }))),
        Auth::Oauth2ClientCredentials { .. } => return Ok(None),
    }))
}

/// Parses `expires_in`, a number or (as some partners send it) a numeric string.
fn expires_in(body: &Value) -> Option<u64> {
    match body.get("expires_in")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The OAuth2 token header for a call: the cached token, or one fetched now through
/// `route` (by one caller; concurrent callers wait for it) before `deadline`. Returns the
/// header and the token (to invalidate it on a 401).
pub async fn oauth_header(
    slot: &TokenSlot,
    creds: &Credentials<'_>,
    route: Option<&TokenRoute>,
    deadline: Instant,
) -> Result<(Applied, Secret), ConnectorError> {
    let Auth::Oauth2ClientCredentials {
        token_url,
        client_id,
        client_secret,
        scope,
        client_auth,
        header,
        scheme,
        refresh_before_s,
    } = creds.auth
    else {
        return Err(ConnectorError::Request {
            reason: "the connector's auth is not OAuth2".into(),
        });
    };
    let applied = |token: &Secret| Applied::Header {
        name: header.clone(),
        value: with_scheme(scheme, token),
    };
    let mut current = slot.current.lock().await;
    if let Some((token, until)) = current.as_ref()
        && Instant::now() < *until
    {
        return Ok((applied(token), token.clone()));
    }
    let route = route.ok_or_else(|| ConnectorError::Request {
        reason: "the connector has no token route".into(),
    })?;
    let url = Url::parse(token_url).map_err(|e| ConnectorError::Request {
        reason: format!("token_url is not a URL: {e}"),
    })?;
    route
        .guard
        .check(&url)
        .map_err(|reason| ConnectorError::AddressDenied {
            url: redact(&url),
            reason,
        })?;
    let id = creds.resolve(client_id)?;
    let secret = creds.resolve(&client_secret.0)?;
    // The serializer is not Send: the form is finished before anything awaits.
    let (form, auth) = {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if let Some(scope) = scope {
            form.append_pair("scope", scope);
        }
        let auth = match client_auth {
            ClientAuth::Basic => Applied::Basic {
                username: id,
                password: secret,
            },
            ClientAuth::Body => {
                form.append_pair("client_id", id.expose());
                form.append_pair("client_secret", secret.expose());
                Applied::None
            }
        };
        (form.finish(), auth)
    };
    slot.requests.fetch_add(1, Ordering::Relaxed);
    let reply = token_exchange(route, &url, form, auth, deadline).await?;
    let failed = |reason: String, retryable: bool| ConnectorError::Token {
        url: redact(&url),
        reason,
        retryable,
    };
    if !reply.status.is_success() {
        let status = reply.status.as_u16();
        return Err(failed(
            format!("HTTP {status}"),
            status >= 500 || status == 429,
        ));
    }
    let body: Value = serde_json::from_slice(&reply.body)
        .map_err(|e| failed(format!("the answer is not JSON: {e}"), false))?;
    let token = body
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| failed("the answer has no access_token".into(), false))?;
    let token = Secret::new(token);
    let lifetime = expires_in(&body).unwrap_or(3600);
    // Refresh a little early, but keep a token at least a second.
    let keep = lifetime.saturating_sub(u64::from(*refresh_before_s)).max(1);
    *current = Some((token.clone(), Instant::now() + Duration::from_secs(keep)));
    Ok((applied(&token), token))
}

/// The token request, through the token URL's endpoint stack. The form carries the
/// client secret (with `client_auth: body`), so it lives in the request only.
async fn token_exchange(
    route: &TokenRoute,
    url: &Url,
    form: String,
    auth: Applied,
    deadline: Instant,
) -> Result<super::http::Reply, ConnectorError> {
    let prepared = Prepared {
        client: route.client.clone(),
        method: Method::POST,
        query: Vec::new(),
        headers: vec![("accept".to_owned(), "application/json".to_owned())],
        body: Some((form.into_bytes(), "application/x-www-form-urlencoded")),
        auth,
        templated: true,
    };
    let attempt = Attempt {
        exchange: Exchange {
            prepared: Arc::new(prepared),
            url: url.clone(),
            rest: None,
            idempotent: false,
            deadline,
            trace: Arc::new(Trace::default()),
            capability: None,
        },
        target: url.clone(),
        timeout: None,
        probe: false,
    };
    route
        .stack
        .clone()
        .oneshot(attempt)
        .await
        .map_err(|e| match e {
            // A certificate problem stays one, wherever it happened.
            ConnectorError::Tls { .. } => e,
            other => ConnectorError::Token {
                url: redact(url),
                retryable: other.is_retryable(),
                reason: other.to_string(),
            },
        })
}
