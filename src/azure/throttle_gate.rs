//! ARM throttles per subscription and kind of request (reads, writes, deletes) with token
//! buckets. When one request is refused with 429 and `Retry-After`, every other request of the
//! same kind on the same subscription would be refused too until then: rather than each of
//! them paying a refused round trip (ten accounts writing at once sent a quarter of their PUTs
//! into an empty bucket), they wait at this gate until the time Azure named.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use azure_core::http::{Method, Url};
use tokio::time::Instant;

/// ARM's buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// GET.
    Reads,
    /// PUT, PATCH, POST.
    Writes,
    /// DELETE.
    Deletes,
}

impl Bucket {
    /// The bucket a request of `method` draws from.
    pub fn of(method: Method) -> Self {
        match method {
            Method::Get | Method::Head => Self::Reads,
            Method::Delete => Self::Deletes,
            _ => Self::Writes,
        }
    }
}

/// The subscription a URL's path names (`/subscriptions/{id}/...`), lower-cased; empty for
/// paths outside any subscription.
pub fn subscription_of(url: &Url) -> String {
    let mut segments = url.path_segments().into_iter().flatten();
    while let Some(segment) = segments.next() {
        if segment.eq_ignore_ascii_case("subscriptions") {
            return segments.next().unwrap_or_default().to_ascii_lowercase();
        }
    }
    String::new()
}

/// Until when each (subscription, bucket) is known to be empty.
#[derive(Debug, Default)]
pub struct ThrottleGate(Mutex<HashMap<(String, Bucket), Instant>>);

impl ThrottleGate {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Bucket), Instant>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long a request to `url` with `method` should wait before being sent.
    pub fn wait_for(&self, method: Method, url: &Url) -> Option<Duration> {
        let key = (subscription_of(url), Bucket::of(method));
        let now = Instant::now();
        let mut map = self.map();
        match map.get(&key) {
            Some(until) if *until > now => Some(*until - now),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Azure refused a request to `url` with `method` and asked to wait `retry_after`.
    pub fn refused(&self, method: Method, url: &Url, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let key = (subscription_of(url), Bucket::of(method));
        let mut map = self.map();
        let entry = map.entry(key).or_insert(until);
        *entry = (*entry).max(until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(path: &str) -> Url {
        Url::parse(&format!("https://management.azure.com{path}")).unwrap()
    }

    #[test]
    fn the_subscription_is_read_from_the_path() {
        assert_eq!(
            subscription_of(&url("/subscriptions/ABC/resourceGroups/rg/x?api-version=1")),
            "abc"
        );
        assert_eq!(
            subscription_of(&url("/providers/Microsoft.Sql/operations")),
            ""
        );
        assert_eq!(subscription_of(&url("/subscriptions")), "");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_holds_back_its_bucket_on_its_subscription_only() {
        let gate = ThrottleGate::default();
        let a = url("/subscriptions/a/resourceGroups/rg/providers/p/x/1");
        let b = url("/subscriptions/b/resourceGroups/rg/providers/p/x/1");
        assert_eq!(gate.wait_for(Method::Put, &a), None);
        gate.refused(Method::Put, &a, Duration::from_secs(2));
        assert_eq!(gate.wait_for(Method::Put, &a), Some(Duration::from_secs(2)));
        assert_eq!(
            gate.wait_for(Method::Post, &a),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            gate.wait_for(Method::Get, &a),
            None,
            "reads have their own bucket"
        );
        assert_eq!(gate.wait_for(Method::Delete, &a), None);
        assert_eq!(gate.wait_for(Method::Put, &b), None, "another subscription");
        // A shorter refusal does not shorten the wait.
        gate.refused(Method::Put, &a, Duration::from_secs(1));
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(
            gate.wait_for(Method::Put, &a),
            Some(Duration::from_millis(500))
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(gate.wait_for(Method::Put, &a), None);
    }
}
