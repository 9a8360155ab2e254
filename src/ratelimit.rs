//! Per-user rate limit of the REST API (GCRA via `governor`): a budget of
//! requests per minute, refilled continuously, with bursts up to the whole
//! budget. Stream opens and long-polls count too (a client polling in a
//! loop costs what one calling the API does). Also here: the publisher
//! keys' budget and the register/login throttles.

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

/// Throttles of `POST /api/auth/register` and `/api/auth/login`, per source
/// address and per email, each a budget per minute: password guessing and
/// bogus logins (each an argon2 hash) are slowed wherever they come from.
pub struct AuthThrottle {
    by_addr: Option<DefaultKeyedRateLimiter<std::net::IpAddr>>,
    by_email: Option<DefaultKeyedRateLimiter<String>>,
}

impl AuthThrottle {
    /// `0` turns that throttle off.
    pub fn per_minute(per_addr: u32, per_email: u32) -> Self {
        AuthThrottle {
            by_addr: NonZeroU32::new(per_addr).map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            by_email: NonZeroU32::new(per_email).map(|n| RateLimiter::keyed(Quota::per_minute(n))),
        }
    }

    pub fn check(&self, addr: Option<std::net::IpAddr>, email: &str) -> Result<(), ApiError> {
        let wait = |not_until: governor::NotUntil<_>| ApiError::RateLimited {
            retry_after_secs: not_until
                .wait_time_from(DefaultClock::default().now())
                .as_secs()
                + 1,
        };
        if let (Some(limiter), Some(addr)) = (&self.by_addr, addr) {
            limiter.check_key(&addr).map_err(wait)?;
        }
        if let Some(limiter) = &self.by_email {
            limiter.check_key(&email.to_owned()).map_err(wait)?;
        }
        Ok(())
    }

    /// Forget full buckets (see `RateLimit::forget_idle`).
    pub fn forget_idle(&self) {
        if let Some(l) = &self.by_addr {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.by_email {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}
