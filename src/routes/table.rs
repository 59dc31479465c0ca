//! The route table: which services hear about a connection on which path.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::config::{RateLimit, RouteSettings, ServerSettings, Service};
use crate::http::admission::Gate;
use crate::http::limits::Limit;
use crate::metrics::{Metrics, RouteMetrics};
use crate::routes::http_service::HttpService;
use crate::ws::driver::Timing;

/// A configured route, ready for the hot path. A connection holds the route it came in on for
/// its whole life, so a config reload changes routes for new connections only.
#[derive(Debug)]
pub struct Route {
    pub path: Arc<str>,
    /// The route as configured (the admin page shows it).
    pub settings: RouteSettings,
    /// Service names; a reply must name one of them.
    pub services: BTreeSet<String>,
    /// Distinct Redis request channels: services sharing a channel get one publish per event.
    pub request_channels: Vec<Arc<str>>,
    /// Legacy HTTP services, each POSTed every event.
    pub http: Vec<Arc<HttpService>>,
    /// `max_connections` (live connections on this path, on this node), within the node's.
    pub limit: Arc<Limit>,
    pub max_message_size: usize,
    pub rate_limit: Option<RateLimit>,
    /// Who may connect.
    pub gate: Gate,
    /// The route's series, kept across reloads for as long as the path stays.
    pub metrics: Arc<RouteMetrics>,
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
    /// Every route connection's timers, from `[server]`.
    pub timing: Timing,
}

impl RouteTable {
    /// Builds the table from validated settings; each route's limit sits under `node_limit`.
    /// Built again on a reload, it takes over from `previous` what belongs to a path or a
    /// service rather than to one version of the config: a path's connection count (its limit,
    /// given the new maximum) and an unchanged HTTP service (its in-flight requests and the
    /// health of its URLs).
    pub fn new(
        server: &ServerSettings,
        routes: &BTreeMap<String, RouteSettings>,
        node_limit: &Arc<Limit>,
        metrics: &Metrics,
        previous: Option<&RouteTable>,
    ) -> Result<Self, reqwest::Error> {
        let mut table = Self {
            by_path: HashMap::new(),
            list: Vec::new(),
            timing: Timing {
                write_timeout: server.write_timeout,
                idle_timeout: server.idle_timeout,
                ping_interval: Some(server.ping_interval),
            },
        };
        // A kept path's new maximum, applied once nothing can fail: a table that is not built
        // leaves the one in force as it was.
        let mut new_maxima = Vec::new();
        for (path, route) in routes {
            let before = previous.and_then(|t| t.get(path));
            let mut channels = BTreeSet::new();
            let mut http = Vec::new();
            for (name, service) in &route.services {
                match service.clone() {
                    Service::Redis { request_channel } => {
                        channels.insert(request_channel);
                    }
                    Service::Http(config) => {
                        let same = before
                            .into_iter()
                            .flat_map(|r| &r.http)
                            .find(|s| &s.name == name && s.config == config);
                        let service = match same {
                            Some(s) => s.clone(),
                            None => {
                                let metrics = metrics.http_service(path, name);
                                Arc::new(HttpService::new(name.clone(), metrics, config)?)
                            }
                        };
                        http.push(service);
                    }
                }
            }
            let max = route.max_connections.unwrap_or(usize::MAX);
            let limit = match before {
                Some(r) => {
                    new_maxima.push((r.limit.clone(), max));
                    r.limit.clone()
                }
                None => Limit::under(Some(node_limit.clone()), max),
            };
            let route = Arc::new(Route {
                path: path.as_str().into(),
                settings: route.clone(),
                services: route.services.keys().cloned().collect(),
                request_channels: channels.into_iter().map(Arc::from).collect(),
                http,
                limit,
                max_message_size: route.max_message_size.unwrap_or(server.max_message_size),
                rate_limit: route.rate_limit,
                gate: Gate::new(&server.admission, &route.admission, route.auth.clone()),
                metrics: Arc::new(metrics.route(path)),
            });
            table.by_path.insert(path.clone(), route.clone());
            table.list.push(route);
        }
        for (limit, max) in new_maxima {
            limit.set_max(max);
        }
        Ok(table)
    }

    /// Exact match on the path; the query string is not part of it.
    pub fn get(&self, path: &str) -> Option<&Arc<Route>> {
        self.by_path.get(path)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.list.iter()
    }

    /// Every legacy HTTP service with its route.
    pub fn http_services(&self) -> impl Iterator<Item = (&Arc<Route>, &Arc<HttpService>)> {
        self.list
            .iter()
            .flat_map(|r| r.http.iter().map(move |s| (r, s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::http::limits::ConnectionSlot;

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
        let (limit, metrics) = (Limit::new(10), Metrics::new());
        let t = RouteTable::new(&s.server, &s.routes, &limit, &metrics, None).unwrap();
        let r = t.get("/quotes").unwrap();
        assert_eq!(r.request_channels.len(), 2);
        assert!(r.has_service("chartservice") && !r.has_service("nope"));
        assert!(t.get("/quotes/").is_none());
    }

    /// A rebuilt table (a reload) keeps a path's connection count under the new maximum, and
    /// an unchanged HTTP service with its state; a changed service is new.
    #[test]
    fn a_rebuilt_table_keeps_what_belongs_to_a_path() {
        let toml = |max: usize, timeout: &str| {
            format!(
                "[routes.\"/a\"]\nmax_connections = {max}\n\
                 [routes.\"/a\".services.same]\ntype = \"http\"\nurl = \"http://127.0.0.1:1/\"\n\
                 [routes.\"/a\".services.other]\ntype = \"http\"\nurl = \"http://127.0.0.1:2/\"\n\
                 timeout = \"{timeout}\"\n"
            )
        };
        let (node, metrics) = (Limit::new(100), Metrics::new());
        let first = Settings::from_toml(&toml(2, "1s")).unwrap();
        let old = RouteTable::new(&first.server, &first.routes, &node, &metrics, None).unwrap();
        let a = old.get("/a").unwrap();
        let _held = ConnectionSlot::reserve(&a.limit, None).unwrap();

        let second = Settings::from_toml(&toml(1, "2s")).unwrap();
        let new = RouteTable::new(&second.server, &second.routes, &node, &metrics, Some(&old));
        let b = new.as_ref().unwrap().get("/a").unwrap();
        assert!(Arc::ptr_eq(&a.limit, &b.limit), "one count per path");
        assert!(
            ConnectionSlot::reserve(&b.limit, None).is_err(),
            "the one connection held fills the new maximum of 1"
        );
        let service = |r: &Route, name: &str| r.http.iter().find(|s| s.name == name).cloned();
        let (same, other) = (service(a, "same").unwrap(), service(a, "other").unwrap());
        assert!(Arc::ptr_eq(&same, &service(b, "same").unwrap()));
        assert!(!Arc::ptr_eq(&other, &service(b, "other").unwrap()));
    }
}
