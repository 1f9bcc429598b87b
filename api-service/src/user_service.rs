//! The optional user service (`USER_SERVICE_URL`): `GET {url}/users/{id}` per participant on
//! create / add participants. 200 = exists, 404 = unknown (a validation
//! error), anything else or a transport error = 500. Checks run concurrently, 5 s timeout each.

use std::time::Duration;

use futures_util::future::join_all;
use uuid::Uuid;

/// Why [`UserService::check_exist`] did not confirm every user.
#[derive(Debug, thiserror::Error)]
pub enum UserCheckError {
    /// At least one user is unknown to the user service (it answered 404): a validation error
    /// of the request.
    #[error("one or more users do not exist")]
    Unknown,
    /// The user service answered something other than 200 or 404.
    #[error("user service answered {0}")]
    Status(u16),
    /// The user service could not be reached or did not answer in time.
    #[error("user service")]
    Transport(#[source] reqwest::Error),
}

/// A client for the user service, or nothing when it is not configured.
#[derive(Clone)]
pub struct UserService {
    base: Option<String>,
    http: reqwest::Client,
}

impl UserService {
    pub fn new(base: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client");
        Self {
            base: base.map(|b| b.trim_end_matches('/').to_owned()),
            http,
        }
    }

    /// Checks that every user exists; `token` (jwt mode) is forwarded as a bearer credential.
    pub async fn check_exist(
        &self,
        users: &[Uuid],
        token: Option<&str>,
    ) -> Result<(), UserCheckError> {
        let Some(base) = &self.base else {
            return Ok(());
        };
        let checks = users.iter().map(|u| {
            let mut req = self.http.get(format!("{base}/users/{u}"));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            req.send()
        });
        let mut unknown = false;
        for result in join_all(checks).await {
            match result.map(|r| r.status().as_u16()) {
                Ok(200) => {}
                Ok(404) => unknown = true,
                Ok(status) => return Err(UserCheckError::Status(status)),
                Err(e) => return Err(UserCheckError::Transport(e)),
            }
        }
        if unknown {
            return Err(UserCheckError::Unknown);
        }
        Ok(())
    }
}
