//! The optional user service (`USER_SERVICE_URL`): `GET {url}/users/{id}` per participant on
//! create / add participants (http-api.md §5.1). 200 = exists, 404 = unknown (a validation
//! error), anything else or a transport error = 500. Checks run concurrently, 5 s timeout each.

use std::time::Duration;

use futures_util::future::join_all;
use uuid::Uuid;

use crate::error::{ApiError, Details};

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
    pub async fn check_exist(&self, users: &[Uuid], token: Option<&str>) -> Result<(), ApiError> {
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
                Ok(status) => {
                    return Err(ApiError::Internal(anyhow::anyhow!(
                        "user service answered {status}"
                    )));
                }
                Err(e) => {
                    return Err(ApiError::Internal(
                        anyhow::Error::new(e).context("user service"),
                    ));
                }
            }
        }
        if unknown {
            return Err(Details::one(
                "participant_ids",
                "one or more user IDs do not exist",
            ));
        }
        Ok(())
    }
}
