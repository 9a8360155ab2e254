//! Per-user rate limit of the REST API (GCRA via `governor`): a budget of
//! requests per minute, refilled continuously, with bursts up to the whole
//! budget. Streams and long-polls are not counted; their own limit is the
//! per-user stream limit.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

use crate::error::ApiError;

pub struct RateLimit {
    limiter: Option<DefaultKeyedRateLimiter<Uuid>>,
}

impl RateLimit {
    /// `0` turns the limit off.
    pub fn per_minute(budget: u32) -> Self {
        RateLimit {
            limiter: NonZeroU32::new(budget).map(|n| RateLimiter::keyed(Quota::per_minute(n))),
        }
    }

    pub fn check(&self, user: Uuid) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&user).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs() + 1,
            }
        })
    }

    /// Drop the state of users whose budget is full again, so the map does
    /// not grow with every user who ever made a request.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// The publisher keys' own budget: requests per second, all keys together
/// (services publish at rates no user budget allows).
pub struct PublisherRate {
    limiter: Option<governor::DefaultDirectRateLimiter>,
}

impl PublisherRate {
    /// `0` turns the limit off.
    pub fn per_second(budget: u32) -> Self {
        PublisherRate {
            limiter: NonZeroU32::new(budget).map(|n| RateLimiter::direct(Quota::per_second(n))),
        }
    }

    pub fn check(&self) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs() + 1,
            }
        })
    }
}
