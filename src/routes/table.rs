//! The route table: which services hear about a connection on which path.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::config::{RateLimit, Service, Settings};
use crate::http::admission::Gate;
use crate::http::limits::Limit;
use crate::routes::http_service::HttpService;
use crate::ws::driver::Timing;

/// A configured route, ready for the hot path.
#[derive(Debug)]
pub struct Route {
    /// Index into the route list and into per-route metrics.
    pub index: usize,
    pub path: Arc<str>,
    /// Service names; a reply must name one of them.
    pub services: BTreeSet<String>,
    /// Distinct Redis request channels: services sharing a channel get one publish per event.
    pub request_channels: Vec<Arc<str>>,
    /// Legacy HTTP services, each POSTed every event.
    pub http: Vec<Arc<HttpService>>,
    /// `max_connections` (live connections on this route, on this node), within the node's.
    pub limit: Arc<Limit>,
    pub max_message_size: usize,
    pub rate_limit: Option<RateLimit>,
    /// Who may connect.
    pub gate: Gate,
}

impl Route {
    pub fn has_service(&self, name: &str) -> bool {
        self.services.contains(name)
    }
}

#[derive(Debug)]
pub struct RouteTable {
    by_path: HashMap<String, Arc<Route>>,
    list: Vec<Arc<Route>>,
    http_count: usize,
    /// Every route connection's timers, from `[server]`.
    pub timing: Timing,
}

impl RouteTable {
    /// Builds the table from validated settings; each route's limit sits under `node_limit`.
    pub fn new(settings: &Settings, node_limit: &Arc<Limit>) -> Result<Self, reqwest::Error> {
        let server = &settings.server;
        let mut table = Self {
            by_path: HashMap::new(),
            list: Vec::new(),
            http_count: 0,
            timing: Timing {
                write_timeout: server.write_timeout,
                idle_timeout: server.idle_timeout,
                ping_interval: Some(server.ping_interval),
            },
        };
        for (index, (path, route)) in settings.routes.iter().enumerate() {
            let mut channels = BTreeSet::new();
            let mut http = Vec::new();
            for (name, service) in &route.services {
                match service.clone() {
                    Service::Redis { request_channel } => {
                        channels.insert(request_channel);
                    }
                    Service::Http(config) => {
                        let index = table.http_count;
                        table.http_count += 1;
                        http.push(Arc::new(HttpService::new(name.clone(), index, config)?));
                    }
                }
            }
            let route = Arc::new(Route {
                index,
                path: path.as_str().into(),
                services: route.services.keys().cloned().collect(),
                request_channels: channels.into_iter().map(Arc::from).collect(),
                http,
                limit: Limit::under(
                    Some(node_limit.clone()),
                    route.max_connections.unwrap_or(usize::MAX),
                ),
                max_message_size: route
                    .max_message_size
                    .unwrap_or(settings.server.max_message_size),
                rate_limit: route.rate_limit,
                gate: Gate::new(
                    &settings.server.admission,
                    &route.admission,
                    route.auth.clone(),
                ),
            });
            table.by_path.insert(path.clone(), route.clone());
            table.list.push(route);
        }
        Ok(table)
    }

    /// Exact match on the path; the query string is not part of it.
    pub fn get(&self, path: &str) -> Option<&Arc<Route>> {
        self.by_path.get(path)
    }

    pub fn by_index(&self, index: usize) -> &Arc<Route> {
        &self.list[index]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.list.iter()
    }

    /// Every legacy HTTP service with its route, in metrics-index order.
    pub fn http_services(&self) -> impl Iterator<Item = (&Arc<Route>, &Arc<HttpService>)> {
        self.list
            .iter()
            .flat_map(|r| r.http.iter().map(move |s| (r, s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_sharing_a_channel_share_one_publish() {
        let s = Settings::from_toml(
            r#"
            [routes."/quotes".services.quoteservice]
            type = "redis"
            request_channel = "input"
            [routes."/quotes".services.chartservice]
            type = "redis"
            request_channel = "input"
            [routes."/quotes".services.audit]
            type = "redis"
            request_channel = "audit"
            "#,
        )
        .unwrap();
        let t = RouteTable::new(&s, &Limit::new(10)).unwrap();
        let r = t.get("/quotes").unwrap();
        assert_eq!(r.request_channels.len(), 2);
        assert!(r.has_service("chartservice") && !r.has_service("nope"));
        assert!(t.get("/quotes/").is_none());
    }
}
