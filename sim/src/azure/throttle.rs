//! ARM's request throttling: a token bucket per subscription, security principal and kind of
//! request (reads, writes, deletes). Each request takes a token; tokens refill continuously;
//! an empty bucket answers 429 with `Retry-After` and every answer reports what is left in
//! `x-ms-ratelimit-remaining-subscription-{reads,writes,deletes}`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// One bucket's size and refill rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Tokens when full (the burst allowed).
    pub size: u32,
    /// Tokens added per second.
    pub refill_per_second: f64,
}

/// The buckets of each subscription and principal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Throttling {
    /// GETs.
    pub reads: Bucket,
    /// PUT, PATCH and POST.
    pub writes: Bucket,
    /// DELETEs.
    pub deletes: Bucket,
}

impl Default for Throttling {
    /// ARM's published token-bucket limits per subscription, principal and region.
    fn default() -> Self {
        Self {
            reads: Bucket {
                size: 250,
                refill_per_second: 25.0,
            },
            writes: Bucket {
                size: 200,
                refill_per_second: 10.0,
            },
            deletes: Bucket {
                size: 200,
                refill_per_second: 10.0,
            },
        }
    }
}

/// The kind of an ARM request, as the buckets and headers name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// GET.
    Reads,
    /// PUT, PATCH, POST.
    Writes,
    /// DELETE.
    Deletes,
}

impl Kind {
    /// From the HTTP method.
    pub fn of(method: &axum::http::Method) -> Self {
        match *method {
            axum::http::Method::GET | axum::http::Method::HEAD => Self::Reads,
            axum::http::Method::DELETE => Self::Deletes,
            _ => Self::Writes,
        }
    }

    /// The header that reports the tokens left in this kind's bucket.
    pub fn header(self) -> &'static str {
        match self {
            Self::Reads => "x-ms-ratelimit-remaining-subscription-reads",
            Self::Writes => "x-ms-ratelimit-remaining-subscription-writes",
            Self::Deletes => "x-ms-ratelimit-remaining-subscription-deletes",
        }
    }

    /// The singular ARM uses in its throttling message.
    fn request(self) -> &'static str {
        match self {
            Self::Reads => "read",
            Self::Writes => "write",
            Self::Deletes => "delete",
        }
    }
}

/// Refused: how long until a token is back, and ARM's message.
#[derive(Debug)]
pub struct Throttled {
    /// Whole seconds to wait (at least 1).
    pub retry_after: u64,
    /// ARM's message.
    pub message: String,
}

struct Level {
    tokens: f64,
    at: Instant,
}

/// Every bucket of the simulator.
pub struct Throttle {
    config: Throttling,
    buckets: Mutex<HashMap<(String, String, Kind), Level>>,
}

impl Throttle {
    /// Full buckets with these limits.
    pub fn new(config: Throttling) -> Self {
        Self {
            config,
            buckets: Mutex::default(),
        }
    }

    /// Take a token for one request; the tokens left, or how long to wait.
    ///
    /// # Errors
    /// [`Throttled`] when the bucket is empty.
    pub fn take(&self, subscription: &str, principal: &str, kind: Kind) -> Result<u32, Throttled> {
        let bucket = match kind {
            Kind::Reads => self.config.reads,
            Kind::Writes => self.config.writes,
            Kind::Deletes => self.config.deletes,
        };
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let level = buckets
            .entry((
                subscription.to_ascii_lowercase(),
                principal.to_string(),
                kind,
            ))
            .or_insert(Level {
                tokens: f64::from(bucket.size),
                at: now,
            });
        let refilled = now.duration_since(level.at).as_secs_f64() * bucket.refill_per_second;
        level.tokens = (level.tokens + refilled).min(f64::from(bucket.size));
        level.at = now;
        if level.tokens >= 1.0 {
            level.tokens -= 1.0;
            // Whole tokens only, as the header reports them.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            return Ok(level.tokens.floor() as u32);
        }
        let wait = if bucket.refill_per_second > 0.0 {
            (1.0 - level.tokens) / bucket.refill_per_second
        } else {
            3600.0
        };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let retry_after = (wait.ceil() as u64).max(1);
        Err(Throttled {
            retry_after,
            message: format!(
                "Number of '{}' requests for subscription '{subscription}' actor '{principal}' exceeded. Please try again after '{retry_after}' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling",
                kind.request()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_refills_and_is_kept_per_principal_and_kind() {
        let throttle = Throttle::new(Throttling {
            writes: Bucket {
                size: 2,
                refill_per_second: 1.0,
            },
            ..Throttling::default()
        });
        assert_eq!(throttle.take("sub", "me", Kind::Writes).unwrap(), 1);
        assert_eq!(throttle.take("sub", "me", Kind::Writes).unwrap(), 0);
        let refused = throttle.take("sub", "me", Kind::Writes).unwrap_err();
        assert_eq!(refused.retry_after, 1);
        assert!(refused.message.starts_with("Number of 'write' requests"));
        // Others and other kinds have their own buckets.
        assert!(throttle.take("sub", "someone-else", Kind::Writes).is_ok());
        assert!(throttle.take("sub", "me", Kind::Reads).is_ok());
        assert!(throttle.take("other-sub", "me", Kind::Writes).is_ok());
    }
}
