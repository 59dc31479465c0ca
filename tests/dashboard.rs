//! The monitoring files hold together: every metric `docs/grafana/refract.json` queries is in a
//! real gateway's `/metrics`, counters only under `rate()`/`increase()` and gauges never; a real
//! Prometheus (Debian's `prometheus` package), run with `docs/prometheus/prometheus.yml`, scrapes
//! two real gateways and answers every query of the dashboard with data; `promtool` accepts the
//! config and lints the exposition clean. Docker cannot run here, so Grafana itself is not started.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::http_server::{Answer, HttpServer};
use common::*;
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn dashboard() -> Value {
    let path = repo("docs/grafana/refract.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

fn is_row(panel: &Value) -> bool {
    panel["type"] == "row"
}

/// (panel title, expression) for every target of every panel.
fn expressions(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default().to_string();
            out.push((p["title"].as_str().unwrap_or_default().to_string(), expr));
        }
    }
    out
}

/// The queries of the template variables (Grafana's `label_values(metric, label)`).
fn variable_queries(dash: &Value) -> Vec<String> {
    let vars = dash["templating"]["list"].as_array().unwrap();
    vars.iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let q = &v["query"];
            q.as_str()
                .or(q["query"].as_str())
                .expect("a query variable has a query")
                .to_string()
        })
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The metric names in a PromQL expression, with their byte offsets: identifiers starting with
/// `refract_`, outside string literals (label values).
fn metric_names(expr: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut quote = None;
    let mut escaped = false;
    let mut prev = ' ';
    let mut skip_to = 0;
    for (i, c) in expr.char_indices() {
        if i < skip_to {
            prev = c;
            continue;
        }
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
            None if !is_ident(prev) && expr[i..].starts_with("refract_") => {
                let len = expr[i..].find(|c| !is_ident(c)).unwrap_or(expr.len() - i);
                out.push((i, &expr[i..i + len]));
                skip_to = i + len;
            }
            None => {}
        }
        prev = c;
    }
    out
}

/// The function whose argument the name at `at` is, looking out through plain grouping
/// parentheses: `rate` in `sum(rate(x[1m]))`, None in `sum(x)` (`sum` is an aggregation).
fn applied_function(expr: &str, at: usize) -> Option<&str> {
    let head = &expr[..at];
    let mut depth = 0;
    for (i, c) in head.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' if depth > 0 => depth -= 1,
            '(' => {
                let before = head[..i].trim_end();
                let start = before.rfind(|c| !is_ident(c)).map_or(0, |j| j + 1);
                let name = &before[start..];
                if !name.is_empty() {
                    return Some(name);
                }
            }
            _ => {}
        }
    }
    None
}

/// A `/metrics` rendering: each family's type, and every sample's name.
struct Exposition {
    types: BTreeMap<String, String>,
    samples: BTreeSet<String>,
}

impl Exposition {
    fn parse(text: &str) -> Self {
        let mut types = BTreeMap::new();
        let mut samples = BTreeSet::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let (name, kind) = t.split_once(' ').expect("# TYPE name kind");
                types.insert(name.to_string(), kind.to_string());
            } else if !line.starts_with('#') && !line.is_empty() {
                let name = line.split(['{', ' ']).next().unwrap();
                samples.insert(name.to_string());
            }
        }
        Self { types, samples }
    }

    /// The type of the family `name` belongs to, as a query sees it: a histogram's `_bucket`,
    /// `_sum` and `_count` (a summary's `_sum` and `_count`) are counters. None when `name` is
    /// neither a family nor a sample.
    fn kind(&self, name: &str) -> Option<&str> {
        if let Some(kind) = self.types.get(name) {
            return Some(kind);
        }
        for (suffix, of) in [
            ("_bucket", &["histogram"][..]),
            ("_sum", &["histogram", "summary"][..]),
            ("_count", &["histogram", "summary"][..]),
        ] {
            let family = name.strip_suffix(suffix).and_then(|b| self.types.get(b));
            if family.is_some_and(|k| of.contains(&k.as_str())) {
                return Some("counter");
            }
        }
        self.samples.contains(name).then_some("untyped")
    }
}

const COUNTER_FUNCTIONS: &[&str] = &["rate", "irate", "increase"];

/// Redis-service and HTTP-service routes and the Channels endpoint: every family that a
/// standalone gateway has. (`refract_redis_master` is sentinel mode's only, and not queried.)
fn all_families_config(http: &HttpServer) -> String {
    format!(
        "{QUOTES}\n[routes.\"/news\".services.legacynews]\ntype = \"http\"\nurl = \"{}\"\n\
         polling_interval = \"1s\"\n\n[channels]\nendpoint = \"/socket\"\n\
         jwt_secret = \"dashboard-test-secret-0123456789abcdef\"\n",
        http.url("/news")
    )
}

#[test]
fn the_dashboard_is_panels_with_queries_on_one_datasource() {
    let dash = dashboard();
    let schema = dash["schemaVersion"].as_u64().expect("schemaVersion");
    assert!(
        schema >= 36,
        "schemaVersion {schema}: datasource refs need 36+"
    );
    assert_eq!(dash["uid"], "refract");
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter()
            .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
        "a `datasource` variable, so that an imported copy finds its Prometheus"
    );

    let all = panels(&dash);
    assert!(all.iter().filter(|p| !is_row(p)).count() >= 10, "panels");
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for p in &all {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(ids.insert(p["id"].as_u64().unwrap()), "{title}: id taken");
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().unwrap());
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: {g}");
        for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
            assert!(cells.insert(cell), "{title} overlaps another panel");
        }
        let targets = p["targets"].as_array().map_or(&[][..], |t| t);
        if is_row(p) {
            assert!(targets.is_empty(), "{title}: a row holds no queries");
            continue;
        }
        assert!(!targets.is_empty(), "{title}: no target");
        let mut ref_ids = BTreeSet::new();
        for t in targets {
            assert!(ref_ids.insert(t["refId"].as_str().unwrap()), "{title}");
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                !metric_names(expr).is_empty(),
                "{title}: {expr:?} queries no refract metric"
            );
            for ds in [&p["datasource"], &t["datasource"]] {
                assert_eq!(ds["uid"], "${datasource}", "{title}");
                assert_eq!(ds["type"], "prometheus", "{title}");
            }
        }
    }

    // What issue 17 asks the dashboard to show, by the metric that shows it.
    let queried: BTreeSet<_> = expressions(&dash)
        .iter()
        .flat_map(|(_, e)| metric_names(e).into_iter().map(|(_, n)| n.to_string()))
        .collect();
    for (what, metric) in [
        ("connections", "refract_connections"),
        (
            "events per second by route",
            "refract_events_published_total",
        ),
        (
            "replies per second by route",
            "refract_replies_relayed_total",
        ),
        ("drops by reason", "refract_replies_dropped_total"),
        ("events lost by reason", "refract_events_lost_total"),
        ("publish queue depth", "refract_publish_queue_depth"),
        ("canary round trip", "refract_canary_round_trip_seconds"),
        (
            "Redis reconnects",
            "refract_redis_subscriber_connects_total",
        ),
        ("HTTP service results", "refract_http_requests_total"),
        ("Channels joins", "refract_channels_joins_total"),
        ("Channels fan-out", "refract_channels_frames_out_total"),
    ] {
        assert!(queried.contains(metric), "{what}: {metric} is not queried");
    }
}

#[test]
fn metric_names_are_found_outside_strings_and_under_their_function() {
    let expr = r#"sum by (route) (rate(refract_a_total{route="refract_b"}[5m])) / (refract_c)"#;
    let names = metric_names(expr);
    let found: Vec<_> = names.iter().map(|(_, n)| *n).collect();
    assert_eq!(found, ["refract_a_total", "refract_c"]);
    assert_eq!(applied_function(expr, names[0].0), Some("rate"));
    assert_eq!(applied_function(expr, names[1].0), None);
    assert_eq!(applied_function("sum(refract_x)", 4), Some("sum"));
    assert!(metric_names("up{job=\"refract_x\"} or not_refract_y").is_empty());
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported() {
    let dash = dashboard();
    let redis = Redis::start().await;
    let http = HttpServer::start(|_| Answer::NoContent).await;
    let gw = Gateway::start(&redis, &all_families_config(&http)).await;
    let (status, body) = gw.get("/metrics").await;
    assert_eq!(status, 200);
    let exposition = Exposition::parse(&body);
    assert!(exposition.types.len() > 20, "{body}");

    let mut queries = expressions(&dash);
    queries.extend(
        variable_queries(&dash)
            .into_iter()
            .map(|q| ("template variable".to_string(), q)),
    );
    let mut problems = Vec::new();
    for (title, expr) in &queries {
        for (at, name) in metric_names(expr) {
            let Some(kind) = exposition.kind(name) else {
                problems.push(format!("{title}: {name} is not in /metrics"));
                continue;
            };
            if title == "template variable" {
                continue;
            }
            let under = applied_function(expr, at);
            let rated = under.is_some_and(|f| COUNTER_FUNCTIONS.contains(&f));
            match kind {
                "counter" if !rated => {
                    problems.push(format!("{title}: counter {name} is not under rate()"))
                }
                "gauge" if rated => problems.push(format!(
                    "{title}: gauge {name} is under {}()",
                    under.unwrap()
                )),
                _ => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    gw.stop().await;
}

/// `name` from PATH, or a failure that says where it comes from: it must not pass unchecked.
fn prometheus_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not on PATH: install Debian's `prometheus` package \
                 (apt-get install --no-install-recommends prometheus)"
            )
        })
}

#[test]
fn promtool_accepts_the_prometheus_config() {
    let out = Command::new(prometheus_tool("promtool"))
        .args(["check", "config"])
        .arg(repo("docs/prometheus/prometheus.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn promtool_lints_the_exposition_clean() {
    let redis = Redis::start().await;
    let http = HttpServer::start(|_| Answer::NoContent).await;
    let gw = Gateway::start(&redis, &all_families_config(&http)).await;
    let (_, body) = gw.get("/metrics").await;
    gw.stop().await;
    let mut child = Command::new(prometheus_tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real Prometheus on a free port, killed on drop.
struct Prometheus {
    base: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        let port = free_port();
        let child = Command::new(prometheus_tool("prometheus"))
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let p = Self {
            base: format!("http://127.0.0.1:{port}"),
            child,
            _dir: dir,
        };
        let ready = format!("{}/-/ready", p.base);
        eventually("prometheus /-/ready to be 200", || async {
            let r = reqwest::get(&ready).await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        p
    }

    /// An instant query's result vector; panics on anything but a successful vector answer,
    /// with Prometheus' error (a PromQL syntax error, say).
    async fn query(&self, query: &str) -> Vec<Value> {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/query", self.base)).unwrap();
        url.query_pairs_mut().append_pair("query", query);
        let text = reqwest::get(url).await.unwrap().text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["status"], "success", "{query}: {text}");
        assert_eq!(v["data"]["resultType"], "vector", "{query}: {text}");
        v["data"]["result"].as_array().unwrap().clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` with `from` replaced by `to`, which must be there: the committed config changed
/// under this test otherwise.
fn replace_in(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "prometheus.yml no longer has {from}");
    text.replace(from, to)
}

/// The dashboard's expression as Grafana sends it: all gateways, and a rate window of several
/// of this test's 1 s scrapes.
fn as_grafana_sends(expr: &str) -> String {
    expr.replace("$instance", ".*")
        .replace("$__rate_interval", "10s")
}

#[tokio::test]
async fn prometheus_with_the_compose_config_answers_every_dashboard_query() {
    let dash = dashboard();
    let redis = Redis::start().await;
    let http = HttpServer::start(|_| Answer::NoContent).await;
    let routes = all_families_config(&http);
    let (a, b) = (
        Gateway::start(&redis, &routes).await,
        Gateway::start(&redis, &routes).await,
    );
    // The compose config, with this test's gateways for compose's and a faster scrape.
    let config = std::fs::read_to_string(repo("docs/prometheus/prometheus.yml")).unwrap();
    let config = replace_in(&config, "\"refract:8080\"", &format!("\"{}\"", a.addr));
    let config = replace_in(
        &config,
        "\"refract-cluster:8080\"",
        &format!("\"{}\"", b.addr),
    );
    let config = replace_in(&config, "scrape_interval: 5s", "scrape_interval: 1s");
    let prom = Prometheus::start(&config).await;

    // The gateway variable lists both (Grafana's label_values, as a query).
    for q in variable_queries(&dash) {
        let (metric, label) = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|r| r.split_once(','))
            .unwrap_or_else(|| panic!("{q}: not label_values(metric, label)"));
        let q = format!("count by ({}) ({metric})", label.trim());
        let instances = eventually_within(Duration::from_secs(30), &q, || async {
            let r = prom.query(&q).await;
            (r.len() == 2).then_some(r)
        })
        .await;
        let mut got: Vec<_> = instances
            .iter()
            .map(|s| s["metric"]["instance"].as_str().unwrap().to_string())
            .collect();
        got.sort();
        let mut want = vec![a.addr.to_string(), b.addr.to_string()];
        want.sort();
        assert_eq!(got, want);
    }

    // One client on /quotes: the connections panel shows it under its route.
    let client = a.ws("/quotes").await;
    let open = expressions(&dash)
        .into_iter()
        .map(|(_, e)| e)
        .find(|e| e.contains("refract_connections{"))
        .expect("a query of refract_connections");
    let open = as_grafana_sends(&open);
    eventually_within(
        Duration::from_secs(30),
        "/quotes to show 1 open",
        || async {
            let r = prom.query(&open).await;
            r.iter()
                .any(|s| s["metric"]["route"] == "/quotes" && s["value"][1] == "1")
                .then_some(())
        },
    )
    .await;
    drop(client);

    // Every query parses and has data (rates need two scrapes in their window).
    for (title, expr) in expressions(&dash) {
        let q = as_grafana_sends(&expr);
        let what = format!("{title}: {q} to return data");
        eventually_within(Duration::from_secs(30), &what, || async {
            (!prom.query(&q).await.is_empty()).then_some(())
        })
        .await;
    }
    a.stop().await;
    b.stop().await;
}
