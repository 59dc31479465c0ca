//! `/admin/api/state`: one JSON document of what the page shows. This node's figures come from
//! memory; the node list and presence counts from Redis, as presence keeps them, each read
//! bounded by `redis.command_timeout` (a part that cannot be read is `null`, and `errors` says
//! why). Nothing here is per connection, so its cost does not grow with connections.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::Gateway;
use crate::config::{AdminSettings, RedisMode, Service};
use crate::redis::store;

pub async fn collect(gw: &Arc<Gateway>, admin: &AdminSettings) -> Value {
    let mut errors = Vec::new();
    let nodes = match store::live_nodes(&gw.redis).await {
        Ok(stats) => {
            let mut nodes: Vec<Value> = stats
                .iter()
                .filter_map(|s| serde_json::from_str(s).ok())
                .collect();
            nodes.sort_by(|a, b| a["node"].as_str().cmp(&b["node"].as_str()));
            Value::Array(nodes)
        }
        Err(e) => {
            errors.push(format!("nodes: {e}"));
            Value::Null
        }
    };
    let channels = channels(gw, admin, &mut errors).await;
    json!({
        "node": node(gw),
        "routes": routes(gw),
        "nodes": nodes,
        "channels": channels,
        "drops": drops(&gw.metrics.render()),
        "errors": errors,
    })
}

fn node(gw: &Gateway) -> Value {
    let m = &gw.metrics;
    let routes = gw.registry.len() as i64;
    let mode = match gw.settings.redis.mode {
        RedisMode::Standalone => "standalone",
        RedisMode::Sentinel => "sentinel",
        RedisMode::Cluster => "cluster",
    };
    let rtt = m.canary_round_trip.get();
    json!({
        "id": gw.node.as_str(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": gw.started.elapsed().as_secs(),
        "ready": gw.is_ready(),
        "connections": routes + m.channels.sockets.get(),
        "max_connections": gw.settings.server.max_connections,
        "redis": {"mode": mode,
                  "master": (mode == "sentinel").then(|| gw.redis.master()).flatten(),
                  "response_channel": &*gw.response_channel},
        "canary_round_trip_ms": (rtt > 0.0).then_some(rtt * 1000.0),
        "publish_queue_depth": gw.publisher.queued(),
    })
}

fn routes(gw: &Gateway) -> Value {
    let table = gw.routes();
    let routes = table.iter().map(|route| {
        let settings = &route.settings;
        let services = settings
            .services
            .iter()
            .map(|(name, service)| match service {
                Service::Redis { request_channel } => {
                    json!({"name": name, "type": "redis", "request_channel": request_channel})
                }
                Service::Http(http) => {
                    let live = route.http.iter().find(|s| &s.name == name);
                    let urls: Vec<Value> = live
                        .map(|s| s.url_states())
                        .unwrap_or_default()
                        .into_iter()
                        .map(|u| {
                            let backing_off = u.backing_off_for.map(|d| d.as_millis() as u64);
                            json!({"url": u.url, "failures": u.failures,
                               "backing_off_ms": backing_off})
                        })
                        .collect();
                    let polling = http.polling_interval.map(|d| d.as_millis() as u64);
                    json!({"name": name, "type": "http", "urls": urls,
                       "polling_interval_ms": polling})
                }
            });
        json!({
            "path": &*route.path,
            "connections": route.metrics.connections.get(),
            "max_connections": settings.max_connections,
            "services": services.collect::<Vec<_>>(),
        })
    });
    Value::Array(routes.collect())
}

/// Channels: sockets, and the topics with the most members on this node (at most
/// `admin.max_topics`), each with its presence count across nodes.
async fn channels(gw: &Gateway, admin: &AdminSettings, errors: &mut Vec<String>) -> Value {
    let Some(ch) = &gw.channels else {
        return Value::Null;
    };
    let mut sizes = ch.hub.topic_sizes();
    let topics_here = sizes.len();
    sizes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    sizes.truncate(admin.max_topics);
    let mut topics = Vec::with_capacity(sizes.len());
    for (topic, members) in sizes {
        let presence = match ch.settings.presence.enabled {
            true => match store::count(&gw.redis, &topic).await {
                Ok(n) => Some(n),
                Err(e) => {
                    errors.push(format!("presence of {topic}: {e}"));
                    None
                }
            },
            false => None,
        };
        topics.push(json!({"topic": topic, "members_here": members, "presence": presence}));
    }
    json!({
        "endpoint": ch.settings.endpoint,
        "sockets": ch.metrics().sockets.get(),
        "presence": ch.settings.presence.enabled,
        "topics_here": topics_here,
        "topics": topics,
    })
}

/// Every drop counter that is not 0: the samples of `*_lost_total`, `*_dropped_total` and
/// `*_rejections_total` in the Prometheus text, with their labels.
pub fn drops(exposition: &str) -> Value {
    let drop = |name: &str| {
        ["_lost_total", "_dropped_total", "_rejections_total"]
            .iter()
            .any(|s| name.ends_with(s))
    };
    let listed = samples(exposition)
        .filter(|s| drop(s.name) && s.value > 0.0)
        .map(|s| {
            let labels: Map<String, Value> = s
                .labels
                .into_iter()
                .map(|(k, v)| (k.to_string(), Value::String(v)))
                .collect();
            json!({"metric": s.name, "labels": labels, "value": s.value})
        });
    Value::Array(listed.collect())
}

/// One sample line of the Prometheus text format.
#[derive(Debug, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: Vec<(&'a str, String)>,
    pub value: f64,
}

/// The samples of a Prometheus text exposition (comments and lines that do not parse skipped).
pub fn samples(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(sample)
}

fn sample(line: &str) -> Option<Sample<'_>> {
    let end = line.find(['{', ' '])?;
    let name = &line[..end];
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start_matches(',');
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find("=\"")?;
            let key = &rest[..eq];
            rest = &rest[eq + 2..];
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let close = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((key, value));
            rest = &rest[close + 1..];
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_with_escaped_labels() {
        let text = "# HELP x y\n# TYPE x counter\nrefract_x_total 3\n\
                    refract_events_lost_total{route=\"/a\\\"b\",reason=\"no_subscriber\"} 2\n\
                    refract_ready 1\nnot a sample\n";
        let all: Vec<Sample> = samples(text).collect();
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(all[0].name, "refract_x_total");
        assert_eq!(all[0].value, 3.0);
        assert_eq!(
            all[1].labels,
            vec![
                ("route", "/a\"b".to_string()),
                ("reason", "no_subscriber".to_string())
            ]
        );
        assert_eq!(all[1].value, 2.0);
    }

    #[test]
    fn drops_list_only_counted_drops() {
        let text = "refract_events_lost_total{route=\"/a\",reason=\"shutdown\"} 0\n\
                    refract_events_lost_total{route=\"/a\",reason=\"no_subscriber\"} 4\n\
                    refract_replies_dropped_total{reason=\"invalid_json\"} 1\n\
                    refract_replies_relayed_total{route=\"/a\"} 9\n\
                    refract_http_rejections_total{reason=\"unauthorized\"} 2\n";
        let d = drops(text);
        let names: Vec<&str> = d
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["metric"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "refract_events_lost_total",
                "refract_replies_dropped_total",
                "refract_http_rejections_total"
            ]
        );
        assert_eq!(d[0]["labels"]["reason"], "no_subscriber");
        assert_eq!(d[0]["value"], 4.0);
    }
}
