//! Sticky sessions: requests with the same `x-session-id` keep to the target that
//! last served them on that route, while it is healthy. Bounded: the oldest sessions
//! are forgotten past `capacity`, and any session after `ttl` without a request.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct StickySessions {
    capacity: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<(String, String), (String, String, Instant)>,
    order: VecDeque<(String, String)>,
}

impl StickySessions {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        StickySessions {
            capacity,
            ttl,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The (provider, model) this session used last on this route.
    pub fn get(&self, session: &str, route: &str) -> Option<(String, String)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (p, m, at) = inner.map.get(&(session.to_string(), route.to_string()))?;
        (at.elapsed() < self.ttl).then(|| (p.clone(), m.clone()))
    }

    pub fn remember(&self, session: &str, route: &str, provider: &str, model: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let key = (session.to_string(), route.to_string());
        let fresh = inner
            .map
            .insert(
                key.clone(),
                (provider.to_string(), model.to_string(), Instant::now()),
            )
            .is_none();
        if fresh {
            inner.order.push_back(key);
            while inner.order.len() > self.capacity {
                if let Some(old) = inner.order.pop_front() {
                    inner.map.remove(&old);
                }
            }
        }
    }
}
