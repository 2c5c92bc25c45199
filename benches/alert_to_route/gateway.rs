//! What users feel: which backend answers a cohort's requests at the gateway (Traefik,
//! through `switchyard_testenv::DataPlane`), and when that becomes legacy for good.

use std::time::{Duration, Instant};

use switchyard_testenv::{DataPlane, Request};

pub const LEGACY: &str = "legacy-crm";
pub const TARGET: &str = "orchestration";
pub const COHORT_HEADER: &str = "x-team";
/// Consecutive legacy answers that confirm the flip. The waves sit at weight 100, so
/// before the rollback no answer is legacy, and the first legacy answer marks the
/// moment; the rest show that it stays that way.
const CONFIRM: usize = 20;

pub struct Gateway<'a> {
    pub data: &'a DataPlane,
}

impl Gateway<'_> {
    pub fn request(team: &str) -> Request {
        Request::get("/accounts/42").header(COHORT_HEADER, team)
    }

    /// Whether the gateway sends `team`'s requests to the target now (Traefik applies
    /// new routes some time after they are written).
    pub async fn serves_target(&self, team: &str) -> bool {
        matches!(self.data.send(&Self::request(team)).await,
                 Ok(answer) if answer.backend.as_deref() == Some(TARGET))
    }

    /// Waits up to `timeout` until the gateway sends `team`'s requests to the target.
    pub async fn wait_target(&self, team: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.serves_target(team).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Sends `team`'s requests one after another until `CONFIRM` in a row are answered
    /// by legacy, and returns the time from `since` to the first of them, or None if
    /// that did not happen by `deadline`.
    pub async fn until_legacy(
        &self,
        team: &str,
        since: Instant,
        deadline: Instant,
    ) -> Option<Duration> {
        let request = Self::request(team);
        let mut run: Option<(Instant, usize)> = None;
        while Instant::now() < deadline {
            let answer = self.data.send(&request).await;
            let at = Instant::now();
            let legacy = matches!(&answer, Ok(a) if a.backend.as_deref() == Some(LEGACY));
            run = match (legacy, run) {
                (false, _) => None,
                (true, None) => Some((at, 1)),
                (true, Some((first, n))) => Some((first, n + 1)),
            };
            if let Some((first, n)) = run
                && n >= CONFIRM
            {
                return Some(first.saturating_duration_since(since));
            }
        }
        None
    }
}
