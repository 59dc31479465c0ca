//! Pins the `/metrics` exposition: each family's `# HELP` and `# TYPE` lines in order, and every
//! series (sample name and label set, byte for byte), for two routes, one legacy HTTP service and
//! the Channels counters. Dashboards and the tests that read `/metrics` by line prefix depend on
//! these names; a change here must be deliberate. Series are compared sorted: within a family,
//! prometheus-client renders them in its hash map's order.

use refract::metrics::{CloseReason, Denial, HttpResult, Loss, Metrics, ReplyDrop};
use refract::prism::EventKind;

fn two_routes_one_service() -> Metrics {
    let m = Metrics::new();
    m.route("/quotes");
    m.route("/chat");
    m.http_service("/quotes", "quoteservice");
    m
}

/// Comment lines in order, and samples as (series, value) sorted by series. Asserts that every
/// value is a plain integer (or, for a `_seconds` gauge, a number) and that every sample sits
/// under its own family's `# TYPE` line.
fn parse(text: &str) -> (Vec<&str>, Vec<(&str, i64)>) {
    let (mut comments, mut samples) = (Vec::new(), Vec::new());
    let mut family = "";
    for line in text.lines() {
        if line.starts_with('#') {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                family = t.split(' ').next().unwrap();
            }
            comments.push(line);
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let name = series.split('{').next().unwrap();
        assert_eq!(name, family, "{line} is outside its family");
        let value = match name.ends_with("_seconds") {
            true => value.parse::<f64>().map(|v| v as i64).ok(),
            false => value.parse().ok(),
        };
        let value = value.unwrap_or_else(|| panic!("{line}: value is not a plain integer"));
        samples.push((series, value));
    }
    samples.sort_unstable();
    (comments, samples)
}

#[test]
fn every_family_and_series_keeps_its_name() {
    let text = two_routes_one_service().render();
    let (comments, samples) = parse(&text);
    assert_eq!(comments, HEADERS.lines().collect::<Vec<_>>());
    let series: Vec<_> = samples.iter().map(|(s, _)| *s).collect();
    assert_eq!(series, SERIES.lines().collect::<Vec<_>>());
    assert!(
        samples.iter().all(|(_, v)| *v == 0),
        "every series starts at 0"
    );
}

/// prometheus-client leaves out a family with no series, `# HELP` and `# TYPE` too (the renderer
/// before it printed them): without routes and HTTP services, theirs are gone.
#[test]
fn a_gateway_without_routes_leaves_out_their_families() {
    let text = Metrics::new().render();
    let (comments, _) = parse(&text);
    let per_route = [
        "refract_connections",
        "refract_connections_accepted_total",
        "refract_connections_closed_total",
        "refract_events_published_total",
        "refract_events_lost_total",
        "refract_replies_relayed_total",
        "refract_admission_rejections_total",
        "refract_messages_rate_limited_total",
        "refract_http_requests_total",
        "refract_http_polls_total",
        "refract_http_service_urls_backing_off",
    ];
    let expected: Vec<_> = HEADERS
        .lines()
        .filter(|l| !per_route.contains(&l.split(' ').nth(2).unwrap()))
        .collect();
    assert_eq!(comments, expected);
}

#[test]
fn values_land_on_their_series() {
    let m = two_routes_one_service();
    let (quotes, chat) = (m.route("/quotes"), m.route("/chat"));
    quotes.published(EventKind::Message, 3);
    chat.lost(Loss::NoSubscriber, 2);
    chat.closed(CloseReason::SlowClient);
    quotes.denied(Denial::BadToken);
    chat.connections.dec();
    m.reply_dropped(ReplyDrop::InvalidJson);
    m.http_service("/quotes", "quoteservice")
        .count(HttpResult::Timeout);
    m.channels.closed(CloseReason::Shutdown);
    m.ready.set(1);
    let text = m.render();
    let (_, samples) = parse(&text);
    let nonzero: Vec<_> = samples.into_iter().filter(|(_, v)| *v != 0).collect();
    assert_eq!(
        nonzero,
        [
            (
                r#"refract_admission_rejections_total{route="/quotes",reason="bad_token"}"#,
                1
            ),
            (r#"refract_channels_closed_total{reason="shutdown"}"#, 1),
            (
                r#"refract_connections_closed_total{route="/chat",reason="slow_client"}"#,
                1
            ),
            (r#"refract_connections{route="/chat"}"#, -1),
            (
                r#"refract_events_lost_total{route="/chat",reason="no_subscriber"}"#,
                2
            ),
            (
                r#"refract_events_published_total{route="/quotes",type="message"}"#,
                3
            ),
            (
                r#"refract_http_requests_total{route="/quotes",service="quoteservice",result="timeout"}"#,
                1
            ),
            ("refract_ready", 1),
            (r#"refract_replies_dropped_total{reason="invalid_json"}"#, 1),
        ]
    );
}

#[test]
fn route_names_are_escaped_in_label_values() {
    let m = Metrics::new();
    m.route("/a\"b\\\nc");
    let text = m.render();
    assert!(
        text.contains("refract_connections{route=\"/a\\\"b\\\\\\nc\"} 0\n"),
        "{text}"
    );
}

#[test]
fn gateways_do_not_share_counters() {
    let (a, b) = (two_routes_one_service(), two_routes_one_service());
    a.reply_dropped(ReplyDrop::SlowClient);
    assert!(
        a.render()
            .contains("refract_replies_dropped_total{reason=\"slow_client\"} 1\n")
    );
    assert!(
        b.render()
            .contains("refract_replies_dropped_total{reason=\"slow_client\"} 0\n")
    );
}

/// `# HELP` and `# TYPE` lines of the rendering, in order. (prometheus-client ends each help
/// text with a `.`.)
const HEADERS: &str = r#"# HELP refract_channels_sockets Open Channels sockets.
# TYPE refract_channels_sockets gauge
# HELP refract_channels_sockets_accepted_total Channels sockets accepted.
# TYPE refract_channels_sockets_accepted_total counter
# HELP refract_channels_joined Topic memberships of open sockets.
# TYPE refract_channels_joined gauge
# HELP refract_channels_joins_total phx_join requests, by result.
# TYPE refract_channels_joins_total counter
# HELP refract_channels_publishes_total Publishes to Redis from Channels.
# TYPE refract_channels_publishes_total counter
# HELP refract_channels_publishes_lost_total Channels publishes Redis did not take.
# TYPE refract_channels_publishes_lost_total counter
# HELP refract_channels_messages_in_total Messages received on to:<topic>:<event>.
# TYPE refract_channels_messages_in_total counter
# HELP refract_channels_frames_out_total Frames fanned out to sockets.
# TYPE refract_channels_frames_out_total counter
# HELP refract_channels_presence_swept_total Presence entries of dead nodes this node removed.
# TYPE refract_channels_presence_swept_total counter
# HELP refract_channels_dropped_total Channels frames dropped, by reason.
# TYPE refract_channels_dropped_total counter
# HELP refract_channels_closed_total Channels sockets closed, by reason.
# TYPE refract_channels_closed_total counter
# HELP refract_ready 1 while the node's data plane works.
# TYPE refract_ready gauge
# HELP refract_connections Open client connections.
# TYPE refract_connections gauge
# HELP refract_connections_accepted_total Client connections accepted.
# TYPE refract_connections_accepted_total counter
# HELP refract_connections_closed_total Client connections closed, by reason.
# TYPE refract_connections_closed_total counter
# HELP refract_events_published_total Events published to service channels (one per channel).
# TYPE refract_events_published_total counter
# HELP refract_events_lost_total Events that could not be published, by reason.
# TYPE refract_events_lost_total counter
# HELP refract_replies_relayed_total Service replies delivered to a client's queue.
# TYPE refract_replies_relayed_total counter
# HELP refract_replies_dropped_total Messages on the response channel that reached no client, by reason.
# TYPE refract_replies_dropped_total counter
# HELP refract_notconnected_sent_total notconnected answers published to services.
# TYPE refract_notconnected_sent_total counter
# HELP refract_notconnected_lost_total notconnected answers that could not be published.
# TYPE refract_notconnected_lost_total counter
# HELP refract_http_rejections_total HTTP requests refused, by reason.
# TYPE refract_http_rejections_total counter
# HELP refract_admission_rejections_total Clients refused by a route's admission rules, by reason.
# TYPE refract_admission_rejections_total counter
# HELP refract_messages_rate_limited_total Client messages over the route's rate limit, by what was done.
# TYPE refract_messages_rate_limited_total counter
# HELP refract_http_requests_total Requests to legacy HTTP services, by result.
# TYPE refract_http_requests_total counter
# HELP refract_http_polls_total Polls sent to legacy HTTP services.
# TYPE refract_http_polls_total counter
# HELP refract_http_service_urls_backing_off URLs of a legacy HTTP service backed off after repeated failures.
# TYPE refract_http_service_urls_backing_off gauge
# HELP refract_redis_subscriber_connects_total Times the response-channel subscription was (re)established.
# TYPE refract_redis_subscriber_connects_total counter
# HELP refract_canary_failures_total Canaries that did not come back in time.
# TYPE refract_canary_failures_total counter
# HELP refract_publish_batches_total Pipelined publish batches sent to Redis.
# TYPE refract_publish_batches_total counter
# HELP refract_publish_queue_depth Events waiting in the publish queues (all shards).
# TYPE refract_publish_queue_depth gauge
# HELP refract_canary_round_trip_seconds The last canary's round trip through the response channel.
# TYPE refract_canary_round_trip_seconds gauge
# HELP refract_handshakes_refused_total Connections closed before their upgrade, by reason.
# TYPE refract_handshakes_refused_total counter
# HELP refract_tls_handshake_failures_total TLS handshakes on the listener that failed or timed out.
# TYPE refract_tls_handshake_failures_total counter
# HELP refract_tls_reloads_total Reloads of the listener's TLS certificate, by result.
# TYPE refract_tls_reloads_total counter
# HELP refract_redis_resubscriptions_total Subscriptions to Redis made again, by reason.
# TYPE refract_redis_resubscriptions_total counter
# HELP refract_redis_master_changes_total Times the sentinels named a new master and the node followed.
# TYPE refract_redis_master_changes_total counter
# HELP refract_config_reloads_total Config reloads on SIGHUP, by result (a refused config leaves the old in force).
# TYPE refract_config_reloads_total counter
"#;

/// Every series of the rendering, sorted.
const SERIES: &str = r#"refract_admission_rejections_total{route="/chat",reason="bad_token"}
refract_admission_rejections_total{route="/chat",reason="expired"}
refract_admission_rejections_total{route="/chat",reason="hook_denied"}
refract_admission_rejections_total{route="/chat",reason="hook_error"}
refract_admission_rejections_total{route="/chat",reason="ip_denied"}
refract_admission_rejections_total{route="/chat",reason="origin"}
refract_admission_rejections_total{route="/chat",reason="rate_limited"}
refract_admission_rejections_total{route="/chat",reason="too_many_connections"}
refract_admission_rejections_total{route="/quotes",reason="bad_token"}
refract_admission_rejections_total{route="/quotes",reason="expired"}
refract_admission_rejections_total{route="/quotes",reason="hook_denied"}
refract_admission_rejections_total{route="/quotes",reason="hook_error"}
refract_admission_rejections_total{route="/quotes",reason="ip_denied"}
refract_admission_rejections_total{route="/quotes",reason="origin"}
refract_admission_rejections_total{route="/quotes",reason="rate_limited"}
refract_admission_rejections_total{route="/quotes",reason="too_many_connections"}
refract_canary_failures_total
refract_canary_round_trip_seconds
refract_channels_closed_total{reason="client_closed"}
refract_channels_closed_total{reason="connection_lost"}
refract_channels_closed_total{reason="dropped_by_service"}
refract_channels_closed_total{reason="idle_timeout"}
refract_channels_closed_total{reason="invalid_utf8"}
refract_channels_closed_total{reason="message_too_large"}
refract_channels_closed_total{reason="protocol_error"}
refract_channels_closed_total{reason="rate_limited"}
refract_channels_closed_total{reason="route_removed"}
refract_channels_closed_total{reason="shutdown"}
refract_channels_closed_total{reason="slow_client"}
refract_channels_closed_total{reason="token_expired"}
refract_channels_closed_total{reason="write_timeout"}
refract_channels_dropped_total{reason="bad_frame"}
refract_channels_dropped_total{reason="empty_payload"}
refract_channels_dropped_total{reason="name_too_long"}
refract_channels_dropped_total{reason="reserved_event"}
refract_channels_dropped_total{reason="slow_client"}
refract_channels_dropped_total{reason="unmatched_topic"}
refract_channels_frames_out_total
refract_channels_joined
refract_channels_joins_total{result="forbidden"}
refract_channels_joins_total{result="invalid_topic"}
refract_channels_joins_total{result="ok"}
refract_channels_joins_total{result="too_many_channels"}
refract_channels_joins_total{result="unauthorized"}
refract_channels_joins_total{result="unavailable"}
refract_channels_messages_in_total
refract_channels_presence_swept_total
refract_channels_publishes_lost_total
refract_channels_publishes_total
refract_channels_sockets
refract_channels_sockets_accepted_total
refract_config_reloads_total{result="error"}
refract_config_reloads_total{result="ok"}
refract_connections_accepted_total{route="/chat"}
refract_connections_accepted_total{route="/quotes"}
refract_connections_closed_total{route="/chat",reason="client_closed"}
refract_connections_closed_total{route="/chat",reason="connection_lost"}
refract_connections_closed_total{route="/chat",reason="dropped_by_service"}
refract_connections_closed_total{route="/chat",reason="idle_timeout"}
refract_connections_closed_total{route="/chat",reason="invalid_utf8"}
refract_connections_closed_total{route="/chat",reason="message_too_large"}
refract_connections_closed_total{route="/chat",reason="protocol_error"}
refract_connections_closed_total{route="/chat",reason="rate_limited"}
refract_connections_closed_total{route="/chat",reason="route_removed"}
refract_connections_closed_total{route="/chat",reason="shutdown"}
refract_connections_closed_total{route="/chat",reason="slow_client"}
refract_connections_closed_total{route="/chat",reason="token_expired"}
refract_connections_closed_total{route="/chat",reason="write_timeout"}
refract_connections_closed_total{route="/quotes",reason="client_closed"}
refract_connections_closed_total{route="/quotes",reason="connection_lost"}
refract_connections_closed_total{route="/quotes",reason="dropped_by_service"}
refract_connections_closed_total{route="/quotes",reason="idle_timeout"}
refract_connections_closed_total{route="/quotes",reason="invalid_utf8"}
refract_connections_closed_total{route="/quotes",reason="message_too_large"}
refract_connections_closed_total{route="/quotes",reason="protocol_error"}
refract_connections_closed_total{route="/quotes",reason="rate_limited"}
refract_connections_closed_total{route="/quotes",reason="route_removed"}
refract_connections_closed_total{route="/quotes",reason="shutdown"}
refract_connections_closed_total{route="/quotes",reason="slow_client"}
refract_connections_closed_total{route="/quotes",reason="token_expired"}
refract_connections_closed_total{route="/quotes",reason="write_timeout"}
refract_connections{route="/chat"}
refract_connections{route="/quotes"}
refract_events_lost_total{route="/chat",reason="no_subscriber"}
refract_events_lost_total{route="/chat",reason="rate_limited"}
refract_events_lost_total{route="/chat",reason="redis_unavailable"}
refract_events_lost_total{route="/chat",reason="shutdown"}
refract_events_lost_total{route="/quotes",reason="no_subscriber"}
refract_events_lost_total{route="/quotes",reason="rate_limited"}
refract_events_lost_total{route="/quotes",reason="redis_unavailable"}
refract_events_lost_total{route="/quotes",reason="shutdown"}
refract_events_published_total{route="/chat",type="connect"}
refract_events_published_total{route="/chat",type="disconnect"}
refract_events_published_total{route="/chat",type="message"}
refract_events_published_total{route="/quotes",type="connect"}
refract_events_published_total{route="/quotes",type="disconnect"}
refract_events_published_total{route="/quotes",type="message"}
refract_handshakes_refused_total{reason="headers_too_large"}
refract_handshakes_refused_total{reason="rate_limited"}
refract_handshakes_refused_total{reason="timeout"}
refract_handshakes_refused_total{reason="too_many_pending"}
refract_http_polls_total{route="/quotes",service="quoteservice"}
refract_http_rejections_total{reason="bad_socket_token"}
refract_http_rejections_total{reason="bad_upgrade"}
refract_http_rejections_total{reason="not_found"}
refract_http_rejections_total{reason="not_ready"}
refract_http_rejections_total{reason="too_many_connections"}
refract_http_rejections_total{reason="unauthorized"}
refract_http_rejections_total{reason="unsupported_serializer"}
refract_http_rejections_total{reason="upgrade_required"}
refract_http_requests_total{route="/quotes",service="quoteservice",result="backing_off"}
refract_http_requests_total{route="/quotes",service="quoteservice",result="client_error"}
refract_http_requests_total{route="/quotes",service="quoteservice",result="connect_error"}
refract_http_requests_total{route="/quotes",service="quoteservice",result="invalid_body"}
refract_http_requests_total{route="/quotes",service="quoteservice",result="ok"}
refract_http_requests_total{route="/quotes",service="quoteservice",result="queue_full"}
refract_http_requests_total{route="/quotes",service="quoteservice",result="server_error"}
refract_http_requests_total{route="/quotes",service="quoteservice",result="timeout"}
refract_http_requests_total{route="/quotes",service="quoteservice",result="too_large"}
refract_http_service_urls_backing_off{route="/quotes",service="quoteservice"}
refract_messages_rate_limited_total{route="/chat",action="close"}
refract_messages_rate_limited_total{route="/chat",action="drop"}
refract_messages_rate_limited_total{route="/quotes",action="close"}
refract_messages_rate_limited_total{route="/quotes",action="drop"}
refract_notconnected_lost_total
refract_notconnected_sent_total
refract_publish_batches_total
refract_publish_queue_depth
refract_ready
refract_redis_master_changes_total
refract_redis_resubscriptions_total{reason="canary_missing"}
refract_redis_resubscriptions_total{reason="connection_lost"}
refract_redis_resubscriptions_total{reason="master_changed"}
refract_redis_resubscriptions_total{reason="slot_moved"}
refract_redis_subscriber_connects_total
refract_replies_dropped_total{reason="invalid_base64"}
refract_replies_dropped_total{reason="invalid_close_code"}
refract_replies_dropped_total{reason="invalid_json"}
refract_replies_dropped_total{reason="missing_field"}
refract_replies_dropped_total{reason="slow_client"}
refract_replies_dropped_total{reason="too_large"}
refract_replies_dropped_total{reason="unknown_connection"}
refract_replies_dropped_total{reason="unknown_service"}
refract_replies_dropped_total{reason="unknown_type"}
refract_replies_dropped_total{reason="wrong_type"}
refract_replies_relayed_total{route="/chat"}
refract_replies_relayed_total{route="/quotes"}
refract_tls_handshake_failures_total
refract_tls_reloads_total{result="error"}
refract_tls_reloads_total{result="ok"}
"#;
