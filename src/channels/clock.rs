//! The `system` topic's clock: `datetime` on `to:system:datetime`, published by one node at a
//! time, whichever holds a short lease in Redis.

use std::sync::Arc;
use std::time::Duration;

use crate::Gateway;
use crate::phoenix;
use crate::redis::publisher::{Publish, Tag};
use crate::redis::store;

pub async fn run(gw: Arc<Gateway>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lease_ms = (every.as_millis() as u64 * 3).max(1000);
    loop {
        tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(n) = store::clock_tick(&gw.redis, gw.node.as_str(), lease_ms).await else {
            continue;
        };
        if n == 0 {
            continue;
        }
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let payload = serde_json::json!({"datetime": now.to_string(), "counter": n});
        let payload = payload.to_string();
        let (channel, message) =
            phoenix::names::to("system", "datetime", payload.as_bytes(), gw.redis.sharded());
        let p = Publish::new(channel, message, Tag::Channel);
        gw.publisher.publish(0, p).await;
    }
}
