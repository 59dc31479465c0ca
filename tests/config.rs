//! The config file as operators meet it: every error, exactly as `refract check` prints it after
//! `refract: config error: `, and the defaults and shapes that the rest of the gateway reads.

use std::process::Command;
use std::time::Duration;

use refract::Settings;
use refract::config::{RateLimitAction, Service};

/// A route `/q` with one service `s`, whose body follows.
macro_rules! svc {
    ($body:literal) => {
        concat!("[routes.\"/q\".services.s]\n", $body)
    };
}

/// A valid `/q` route, for cases about something else.
macro_rules! with_route {
    ($text:literal) => {
        concat!(
            $text,
            "\n[routes.\"/q\".services.s]\ntype = \"redis\"\nrequest_channel = \"x\"\n"
        )
    };
}

/// `[channels]` with a usable secret, then the rest.
macro_rules! channels {
    ($text:literal) => {
        concat!(
            "[channels]\njwt_secret = \"0123456789abcdef0123456789abcdef\"\n",
            $text
        )
    };
}

/// The exact text of every error `Settings::from_toml` can give: `{file}: {key}: {message}`,
/// with an empty file for inline text. Pinned against the original single-file loader, so that a
/// rewrite of the loader cannot change a byte of what operators see. Odd keys are pinned as they
/// are (`routes."/q.rate_limit"`, `(file)` for a missing field): fixing one is its own change, which
/// updates its pin.
const CASES: &[(&str, &str)] = &[
    // TOML syntax: the parser's multi-line report folded into one line.
    (
        "[routes.\"/a\".services.s]\ntype = \"redis\"\n[routes.\"/a\".services.s]\n",
        ": [routes.\"/a\".services.s]: duplicate key (line 3, column 23)",
    ),
    (
        "this is = not toml [",
        ": this is = not toml [: key with no value, expected `=` (line 1, column 6)",
    ),
    (
        "[server]\nlisten = \"0.0.0.0:1\n",
        ": listen = \"0.0.0.0:1: invalid basic string, expected `\"` (line 2, column 20)",
    ),
    // Unknown keys, at each level.
    (
        "nodeid = \"a\"\n",
        ": (file): unknown field `nodeid`, expected one of `node_id`, `server`, `redis`, `routes`, `channels`, `admin`",
    ),
    (
        "[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n",
        ": server: unknown field `lisen`, expected one of `listen`, `trusted_proxies`, `allowed_origins`, `allow_ips`, `deny_ips`, `max_connections_per_ip`, `max_connections`, `max_message_size`, `outbound_queue`, `outbound_queue_bytes`, `read_buffer`, `ping_interval`, `idle_timeout`, `write_timeout`, `shutdown_grace`, `handshake_timeout`, `max_header_size`, `max_pending_handshakes`, `listen_backlog`, `handshakes_per_ip_per_second`, `tls`",
    ),
    (
        "[server]\nallowed_origin = [\"x\"]\n",
        ": server: unknown field `allowed_origin`, expected one of `listen`, `trusted_proxies`, `allowed_origins`, `allow_ips`, `deny_ips`, `max_connections_per_ip`, `max_connections`, `max_message_size`, `outbound_queue`, `outbound_queue_bytes`, `read_buffer`, `ping_interval`, `idle_timeout`, `write_timeout`, `shutdown_grace`, `handshake_timeout`, `max_header_size`, `max_pending_handshakes`, `listen_backlog`, `handshakes_per_ip_per_second`, `tls`",
    ),
    (
        "[redis]\nurls = \"redis://x\"\n",
        ": redis: unknown field `urls`, expected one of `mode`, `url`, `nodes`, `sentinels`, `master_name`, `username`, `password`, `tls_ca_file`, `tls_cert_file`, `tls_key_file`, `response_channel`, `publishers`, `publish_queue`, `canary_interval`, `canary_timeout`, `command_timeout`, `max_reply_size`",
    ),
    (
        with_route!("[routes.\"/q\"]\nmax_conections = 3\n"),
        ": routes.\"/q\": unknown field `max_conections`, expected one of `services`, `max_connections`, `max_message_size`, `rate_limit`, `allowed_origins`, `allow_ips`, `deny_ips`, `max_connections_per_ip`, `auth`",
    ),
    (
        svc!("type = \"redis\"\nrequest_chanel = \"x\"\n"),
        ": routes.\"/q\".services.s: unknown field `request_chanel`, expected one of `type`, `request_channel`, `url`, `headers`, `timeout`, `max_in_flight`, `polling_interval`, `tls_ca_file`",
    ),
    (
        svc!("type = \"http\"\nurl = \"http://x/\"\nheader = {}\n"),
        ": routes.\"/q\".services.s: unknown field `header`, expected one of `type`, `request_channel`, `url`, `headers`, `timeout`, `max_in_flight`, `polling_interval`, `tls_ca_file`",
    ),
    (
        with_route!("[routes.\"/q\"]\nrate_limit = { per_second = 1, brust = 2 }\n"),
        ": routes.\"/q\".rate_limit: unknown field `brust`, expected one of `per_second`, `burst`, `action`",
    ),
    (
        with_route!(
            "[routes.\"/q\".auth]\njwt = { secret = \"0123456789abcdef\" }\ntoken_param = \"t\"\n"
        ),
        ": routes.\"/q\".auth: unknown field `token_param`, expected one of `jwt`, `token_query_param`, `connect_hook`",
    ),
    (
        with_route!(
            "[routes.\"/q\".auth]\njwt = { secret = \"0123456789abcdef\", issuers = \"i\" }\n"
        ),
        ": routes.\"/q\".auth.jwt: unknown field `issuers`, expected one of `secret`, `secret_env`, `public_key_file`, `algorithm`, `issuer`, `audience`, `leeway`",
    ),
    (
        with_route!(
            "[routes.\"/q\".auth]\nconnect_hook = { url = \"http://h/\", timeot = \"1s\" }\n"
        ),
        ": routes.\"/q\".auth.connect_hook: unknown field `timeot`, expected one of `url`, `timeout`, `max_in_flight`, `forward_headers`",
    ),
    (
        channels!("endpont = \"/s\"\n"),
        ": channels: unknown field `endpont`, expected one of `endpoint`, `jwt_secret`, `jwt_secret_env`, `jwt_public_key_file`, `jwt_algorithm`, `jwt_issuer`, `jwt_audience`, `token_ttl`, `max_topics_per_socket`, `idle_timeout`, `ack_pushes`, `outbound_queue`, `max_frame_size`, `lifecycle_channel`, `token_endpoint`, `system`, `presence`",
    ),
    (
        channels!("[channels.presence]\nttl_s = 3\n"),
        ": channels.presence: unknown field `ttl_s`, expected one of `enabled`, `ttl`, `refresh_interval`, `max_listed`, `max_meta_size`, `admin_interval`",
    ),
    (
        channels!("[channels.token_endpoint]\nopen = true\npth = \"/t\"\n"),
        ": channels.token_endpoint: unknown field `pth`, expected one of `path`, `api_key_env`, `open`, `cors_origins`",
    ),
    (
        channels!("[channels.system]\ndatetime_interval = \"1s\"\nzone = \"utc\"\n"),
        ": channels.system: unknown field `zone`, expected `datetime_interval`",
    ),
    // Wrong types and unparsable values.
    (
        "[server]\nmax_connections = \"many\"\n",
        ": server.max_connections: invalid type: string \"many\", expected an integer",
    ),
    (
        "[server]\nmax_connections = -1\n",
        ": server.max_connections: invalid type: 64-bit integer `-1`, expected an unsigned 64 bit or less integer",
    ),
    (
        "[server]\nlisten = \"nowhere\"\n",
        ": server.listen: invalid socket address syntax",
    ),
    (
        "[server]\ntrusted_proxies = [\"nope\"]\n",
        ": server.trusted_proxies[0]: invalid IP address syntax",
    ),
    (
        "[server]\ndeny_ips = \"10.0.0.0/8\"\n",
        ": server: invalid type: string \"10.0.0.0/8\", expected a sequence",
    ),
    (
        "[server]\nwrite_timeout = \"-1s\"\n",
        ": server.write_timeout: invalid value: string \"-1s\", expected a duration",
    ),
    (
        "[server]\nping_interval = \"soon\"\n",
        ": server.ping_interval: invalid value: string \"soon\", expected a duration",
    ),
    (
        "[server]\nping_interval = 5\n",
        ": server.ping_interval: invalid value: string \"5\", expected a duration",
    ),
    (
        "[server]\nshutdown_grace = \"-3s\"\n",
        ": server.shutdown_grace: invalid value: string \"-3s\", expected a duration",
    ),
    (
        "routes = 3\n",
        ": routes: invalid type: integer `3`, expected a map",
    ),
    (
        with_route!("[routes.\"/q\"]\nallowed_origins = \"x\"\n"),
        ": routes.\"/q\": invalid type: string \"x\", expected a sequence",
    ),
    (
        with_route!("[routes.\"/q\"]\nrate_limit = { per_second = 1, action = \"explode\" }\n"),
        ": routes.\"/q\".rate_limit.action: enum RateLimitAction does not have variant constructor explode",
    ),
    (
        with_route!("[routes.\"/q\"]\nrate_limit = { burst = 2 }\n"),
        ": (file): missing configuration field \"routes./q.rate_limit.per_second\"",
    ),
    (
        with_route!("[routes.\"/q\".auth]\nconnect_hook = { timeout = \"1s\" }\n"),
        ": (file): missing configuration field \"routes./q.auth.connect_hook.url\"",
    ),
    (
        channels!("ack_pushes = \"maybe\"\n"),
        ": channels.ack_pushes: invalid type: string \"maybe\", expected a boolean",
    ),
    (
        channels!("[channels.system]\n"),
        ": (file): missing configuration field \"channels.system.datetime_interval\"",
    ),
    (
        svc!("type = 5\nrequest_channel = \"x\"\n"),
        ": routes.\"/q\".services.s: type \"5\" is unknown (expected \"redis\" or \"http\")",
    ),
    (
        svc!("type = \"http\"\nurl = 5\n"),
        ": routes.\"/q\".services.s.url: data did not match any variant of untagged enum OneOrMany",
    ),
    (
        svc!("type = \"http\"\nurl = \"http://x/\"\ntimeout = \"soon\"\n"),
        ": routes.\"/q\".services.s.timeout: invalid value: string \"soon\", expected a duration",
    ),
    (
        svc!("type = \"http\"\nurl = \"http://x/\"\nmax_in_flight = \"many\"\n"),
        ": routes.\"/q\".services.s.max_in_flight: invalid type: string \"many\", expected an integer",
    ),
    (
        svc!("type = \"http\"\nurl = \"http://x/\"\nheaders = 5\n"),
        ": routes.\"/q\".services.s.headers: invalid type: integer `5`, expected a map",
    ),
    // [server]
    (
        "node_id = \"a b\"\n",
        ": node_id: must be 1 to 64 characters of A-Z a-z 0-9 - _ . :",
    ),
    (
        "[server]\nmax_connections = 0\n",
        ": server.max_connections: must be greater than 0",
    ),
    (
        "[server]\nmax_message_size = 0\n",
        ": server.max_message_size: must be greater than 0",
    ),
    (
        "[server]\noutbound_queue = 0\n",
        ": server.outbound_queue: must be greater than 0",
    ),
    (
        "[server]\noutbound_queue_bytes = 0\n",
        ": server.outbound_queue_bytes: must be greater than 0",
    ),
    (
        "[server]\nread_buffer = 16\n",
        ": server.read_buffer: must be between 64 and 1048576 bytes",
    ),
    (
        "[server]\nread_buffer = 2000000\n",
        ": server.read_buffer: must be between 64 and 1048576 bytes",
    ),
    (
        "[server]\nping_interval = \"0s\"\n",
        ": server.ping_interval: must be longer than 0s",
    ),
    (
        "[server]\nidle_timeout = \"0s\"\n",
        ": server.idle_timeout: must be longer than 0s",
    ),
    (
        "[server]\nping_interval = \"30s\"\nidle_timeout = \"10s\"\n",
        ": server.idle_timeout: must be longer than server.ping_interval, or live clients time out",
    ),
    (
        "[server]\nwrite_timeout = \"0s\"\n",
        ": server.write_timeout: must be longer than 0s",
    ),
    (
        "[server]\nmax_connections_per_ip = 0\n",
        ": server.max_connections_per_ip: must be greater than 0",
    ),
    // [redis]
    (
        "[redis]\nurl = \"http://x\"\n",
        ": redis.url: must start with redis://, rediss:// or unix://",
    ),
    (
        "[redis]\nurl = \"redis://x:port\"\n",
        ": redis.url: is not a valid Redis URL (Redis URL did not parse - InvalidClientConfig)",
    ),
    (
        "[redis]\nurl = \"rediss://x:1/#insecure\"\n",
        ": redis.url: #insecure (no certificate check) is not supported: name the server's CA in redis.tls_ca_file",
    ),
    (
        "[redis]\nmode = \"primary\"\n",
        ": redis.mode: enum RedisMode does not have variant constructor primary",
    ),
    (
        "[redis]\nmode = \"cluster\"\n",
        ": redis.nodes: is required when mode = \"cluster\"",
    ),
    (
        "[redis]\nmode = \"cluster\"\nnodes = [\"redis://a:1\", \"http://b\"]\n",
        ": redis.nodes[1]: must start with redis://, rediss:// or unix://",
    ),
    (
        "[redis]\nmode = \"sentinel\"\nmaster_name = \"m\"\n",
        ": redis.sentinels: is required when mode = \"sentinel\"",
    ),
    (
        "[redis]\nmode = \"sentinel\"\nsentinels = [\"redis://a:26379\"]\n",
        ": redis.master_name: is required when mode = \"sentinel\"",
    ),
    (
        "[redis]\nmode = \"sentinel\"\nsentinels = [\"redis://a:1\"]\nmaster_name = \"\"\n",
        ": redis.master_name: is required when mode = \"sentinel\"",
    ),
    (
        "[redis]\nnodes = [\"redis://a:1\"]\n",
        ": redis.nodes: applies to mode = \"cluster\" only",
    ),
    (
        "[redis]\nmode = \"cluster\"\nnodes = [\"redis://a:1\"]\nmaster_name = \"m\"\n",
        ": redis.master_name: applies to mode = \"sentinel\" only",
    ),
    (
        "[admin]\n",
        ": admin: needs token_env (or token), or username with password_env (or password): the admin page is never open",
    ),
    (
        "[admin]\ntoken = \"short\"\n",
        ": admin.token: must be at least 16 characters",
    ),
    (
        "[admin]\ntoken = \"0123456789abcdef\"\ntoken_env = \"X\"\n",
        ": admin.token: set admin.token or admin.token_env, not both",
    ),
    (
        "[admin]\ntoken_env = \"REFRACT_TEST_UNSET_ADMIN_TOKEN\"\n",
        ": admin.token_env: environment variable REFRACT_TEST_UNSET_ADMIN_TOKEN is not set",
    ),
    (
        "[admin]\ntoken = \"0123456789abcdef\"\nusername = \"ops\"\n",
        ": admin.username: use a token or a username and password, not both",
    ),
    (
        "[admin]\nusername = \"ops\"\n",
        ": admin.password_env: is required with admin.username (or admin.password)",
    ),
    (
        "[admin]\npassword = \"0123456789abcdef\"\n",
        ": admin.username: is required with a password",
    ),
    (
        "[admin]\nusername = \"o:ps\"\npassword = \"0123456789abcdef\"\n",
        ": admin.username: must be non-empty, without ':'",
    ),
    (
        "[admin]\ntoken = \"0123456789abcdef\"\nmax_topics = 0\n",
        ": admin.max_topics: must be greater than 0",
    ),
    (
        "[admin]\ntoken = \"0123456789abcdef\"\n[routes.\"/admin\".services.s]\ntype = \"redis\"\nrequest_channel = \"c\"\n",
        ": routes.\"/admin\": the admin page takes /admin when [admin] is configured",
    ),
    (
        "[admin]\ntoken = \"0123456789abcdef\"\n[channels]\nendpoint = \"/admin/socket\"\njwt_secret = \"0123456789abcdef0123456789abcdef\"\n",
        ": channels.endpoint: the admin page takes /admin when [admin] is configured",
    ),
    (
        "[redis]\ntls_ca_file = \"ca.pem\"\n",
        ": redis.tls_ca_file: applies to rediss:// URLs only",
    ),
    (
        "[redis]\nurl = \"rediss://a:1\"\ntls_cert_file = \"c.pem\"\n",
        ": redis.tls_key_file: tls_cert_file and tls_key_file go together",
    ),
    (
        "[redis]\nurl = \"rediss://a:1\"\ntls_key_file = \"k.pem\"\n",
        ": redis.tls_cert_file: tls_cert_file and tls_key_file go together",
    ),
    (
        "[redis]\nurl = \"rediss://a:1\"\ntls_ca_file = \"/nonexistent/ca.pem\"\n",
        ": redis.tls_ca_file: /nonexistent/ca.pem: No such file or directory (os error 2)",
    ),
    (
        "[redis]\nmode = \"cluster\"\nnodes = [\"rediss://a:1\"]\ntls_ca_file = \"tests/keys/rsa_public.pem\"\n",
        ": redis.tls_ca_file: tests/keys/rsa_public.pem: no PEM certificate",
    ),
    (
        "[redis]\nurl = \"rediss://a:1\"\ntls_cert_file = \"tests/keys/rsa_public.pem\"\ntls_key_file = \"tests/keys/rsa_private.pem\"\n",
        ": redis.tls_cert_file: tests/keys/rsa_public.pem: no PEM certificate",
    ),
    (
        "[redis]\npassword = \"p\"\n",
        ": redis.password: applies to mode = \"sentinel\" only",
    ),
    (
        "[redis]\nresponse_channel = \"a*\"\n",
        ": redis.response_channel: must be 1 to 200 characters of A-Z a-z 0-9 - _ . :",
    ),
    (
        "[redis]\npublishers = 0\n",
        ": redis.publishers: must be greater than 0",
    ),
    (
        "[redis]\npublish_queue = 0\n",
        ": redis.publish_queue: must be greater than 0",
    ),
    (
        "[redis]\nmax_reply_size = 0\n",
        ": redis.max_reply_size: must be greater than 0",
    ),
    (
        "[redis]\ncanary_interval = \"0s\"\n",
        ": redis.canary_interval: must be longer than 0s",
    ),
    (
        "[redis]\ncanary_timeout = \"0s\"\n",
        ": redis.canary_timeout: must be longer than 0s",
    ),
    (
        "[redis]\ncommand_timeout = \"0s\"\n",
        ": redis.command_timeout: must be longer than 0s",
    ),
    // Routes.
    (
        "[routes.\"quotes\".services.s]\ntype = \"redis\"\nrequest_channel = \"x\"\n",
        ": routes.\"quotes\": a route is a URL path: it starts with '/' and has no '?', '#' or spaces",
    ),
    (
        "[routes.\"/a b\".services.s]\ntype = \"redis\"\nrequest_channel = \"x\"\n",
        ": routes.\"/a b\": a route is a URL path: it starts with '/' and has no '?', '#' or spaces",
    ),
    (
        "[routes.\"/metrics\".services.s]\ntype = \"redis\"\nrequest_channel = \"x\"\n",
        ": routes.\"/metrics\": this path is reserved for the gateway itself",
    ),
    (
        "[routes.\"/q\"]\n",
        ": routes.\"/q\".services: a route needs at least one service",
    ),
    (
        "[routes.\"/q\"]\nmax_connections = 1\n",
        ": routes.\"/q\".services: a route needs at least one service",
    ),
    (
        with_route!("[routes.\"/q\"]\nmax_connections = 0\n"),
        ": routes.\"/q\".max_connections: must be greater than 0",
    ),
    (
        with_route!("[routes.\"/q\"]\nmax_message_size = 0\n"),
        ": routes.\"/q\".max_message_size: must be greater than 0",
    ),
    (
        with_route!("[routes.\"/q\"]\nmax_connections_per_ip = 0\n"),
        ": routes.\"/q\".max_connections_per_ip: must be greater than 0",
    ),
    (
        with_route!("[routes.\"/q\"]\nrate_limit = { per_second = 0 }\n"),
        ": routes.\"/q\".rate_limit: per_second must be > 0 and burst >= 1",
    ),
    (
        with_route!("[routes.\"/q\"]\nrate_limit = { per_second = 5, burst = 0.5 }\n"),
        ": routes.\"/q\".rate_limit: per_second must be > 0 and burst >= 1",
    ),
    (
        with_route!("[routes.\"/q\"]\nrate_limit = { per_second = nan }\n"),
        ": routes.\"/q\".rate_limit: per_second must be > 0 and burst >= 1",
    ),
    // Route auth.
    (
        with_route!("[routes.\"/q\".auth]\ntoken_query_param = \"t\"\n"),
        ": routes.\"/q\".auth: needs jwt, connect_hook, or both",
    ),
    (
        with_route!("[routes.\"/q\".auth]\njwt = {}\n"),
        ": routes.\"/q\".auth.jwt: exactly one of secret, secret_env or public_key_file is required",
    ),
    (
        with_route!("[routes.\"/q\".auth]\njwt = { secret = \"s\", secret_env = \"S\" }\n"),
        ": routes.\"/q\".auth.jwt: exactly one of secret, secret_env or public_key_file is required",
    ),
    (
        with_route!(
            "[routes.\"/q\".auth]\njwt = { secret = \"0123456789abcdef\", algorithm = \"XS1\" }\n"
        ),
        ": routes.\"/q\".auth.jwt: algorithm \"XS1\" is unknown",
    ),
    (
        with_route!(
            "[routes.\"/q\".auth]\njwt = { secret = \"0123456789abcdef\", algorithm = \"RS256\" }\n"
        ),
        ": routes.\"/q\".auth.jwt: algorithm RS256 needs public_key_file",
    ),
    (
        with_route!(
            "[routes.\"/q\".auth]\njwt = { public_key_file = \"tests/keys/rsa_public.pem\" }\n"
        ),
        ": routes.\"/q\".auth.jwt: algorithm is required with public_key_file",
    ),
    (
        with_route!(
            "[routes.\"/q\".auth]\njwt = { public_key_file = \"tests/keys/rsa_public.pem\", algorithm = \"HS256\" }\n"
        ),
        ": routes.\"/q\".auth.jwt: algorithm HS256 needs a secret, not a public key",
    ),
    (
        with_route!(
            "[routes.\"/q\".auth]\njwt = { public_key_file = \"tests/keys/missing.pem\", algorithm = \"RS256\" }\n"
        ),
        ": routes.\"/q\".auth.jwt: public_key_file tests/keys/missing.pem: No such file or directory (os error 2)",
    ),
    (
        with_route!(
            "[routes.\"/q\".auth]\njwt = { public_key_file = \"tests/keys/README\", algorithm = \"ES256\" }\n"
        ),
        ": routes.\"/q\".auth.jwt: public_key_file tests/keys/README: not a ES256 public key (InvalidKeyFormat)",
    ),
    (
        with_route!(
            "[routes.\"/q\".auth]\njwt = { secret = \"0123456789abcdef\", leeway = \"31s\" }\n"
        ),
        ": routes.\"/q\".auth.jwt: leeway must be at most 30s",
    ),
    (
        with_route!("[routes.\"/q\".auth]\njwt = { secret = \"short\" }\n"),
        ": routes.\"/q\".auth.jwt: the secret must be at least 16 bytes",
    ),
    (
        with_route!(
            "[routes.\"/q\".auth]\njwt = { secret_env = \"REFRACT_TEST_UNSET_VARIABLE\" }\n"
        ),
        ": routes.\"/q\".auth.jwt: secret_env: environment variable REFRACT_TEST_UNSET_VARIABLE is not set",
    ),
    (
        with_route!("[routes.\"/q\".auth]\nconnect_hook = { url = \"ftp://h/\" }\n"),
        ": routes.\"/q\".auth.connect_hook: url must be an http:// or https:// URL",
    ),
    (
        with_route!("[routes.\"/q\".auth]\nconnect_hook = { url = \"nope\" }\n"),
        ": routes.\"/q\".auth.connect_hook: url must be an http:// or https:// URL",
    ),
    (
        with_route!(
            "[routes.\"/q\".auth]\nconnect_hook = { url = \"http://h/\", timeout = \"0s\" }\n"
        ),
        ": routes.\"/q\".auth.connect_hook.timeout: must be longer than 0s",
    ),
    (
        with_route!(
            "[routes.\"/q\".auth]\nconnect_hook = { url = \"http://h/\", max_in_flight = 0 }\n"
        ),
        ": routes.\"/q\".auth.connect_hook.max_in_flight: must be greater than 0",
    ),
    // Services.
    (
        "[routes.\"/q\".services.\"a b\"]\ntype = \"redis\"\nrequest_channel = \"x\"\n",
        ": routes.\"/q\".services.a b: must be 1 to 100 characters of A-Z a-z 0-9 - _ . :",
    ),
    (
        "[routes.\"/Q\".services.quoteservice]\ntype = \"redis\"\n",
        ": routes.\"/Q\".services.quoteservice: request_channel is required",
    ),
    (
        svc!("request_channel = \"x\"\n"),
        ": routes.\"/q\".services.s: type is required (\"redis\" or \"http\")",
    ),
    (
        svc!("type = \"kafka\"\nrequest_channel = \"x\"\n"),
        ": routes.\"/q\".services.s: type \"kafka\" is unknown (expected \"redis\" or \"http\")",
    ),
    (
        svc!("type = \"redis\"\n"),
        ": routes.\"/q\".services.s: request_channel is required",
    ),
    (
        svc!("type = \"redis\"\nrequest_channel = \"\"\n"),
        ": routes.\"/q\".services.s: request_channel is required",
    ),
    (
        svc!("type = \"redis\"\nrequest_channel = \"c\"\nurl = \"http://x/\"\n"),
        ": routes.\"/q\".services.s: url applies to type = \"http\" only",
    ),
    (
        svc!("type = \"redis\"\nrequest_channel = \"c\"\nheaders = {}\n"),
        ": routes.\"/q\".services.s: headers applies to type = \"http\" only",
    ),
    (
        svc!("type = \"redis\"\nrequest_channel = \"c\"\ntimeout = \"1s\"\n"),
        ": routes.\"/q\".services.s: timeout applies to type = \"http\" only",
    ),
    (
        svc!("type = \"redis\"\nrequest_channel = \"c\"\nmax_in_flight = 1\n"),
        ": routes.\"/q\".services.s: max_in_flight applies to type = \"http\" only",
    ),
    (
        svc!("type = \"redis\"\nrequest_channel = \"c\"\npolling_interval = \"1s\"\n"),
        ": routes.\"/q\".services.s: polling_interval applies to type = \"http\" only",
    ),
    (
        svc!("type = \"redis\"\nmax_in_flight = 1\n"),
        ": routes.\"/q\".services.s: max_in_flight applies to type = \"http\" only",
    ),
    (
        svc!("type = \"http\"\n"),
        ": routes.\"/q\".services.s: url is required",
    ),
    (
        svc!("type = \"http\"\nurl = \"http://x/\"\nrequest_channel = \"c\"\n"),
        ": routes.\"/q\".services.s: request_channel applies to type = \"redis\" only",
    ),
    (
        svc!("type = \"http\"\nurl = []\n"),
        ": routes.\"/q\".services.s: url must list at least one URL",
    ),
    (
        svc!("type = \"http\"\nurl = \"nope\"\n"),
        ": routes.\"/q\".services.s: url \"nope\" is not a valid URL (relative URL without a base)",
    ),
    (
        svc!("type = \"http\"\nurl = \"http://x/\"\ntls_ca_file = \"ca.pem\"\n"),
        ": routes.\"/q\".services.s.tls_ca_file: applies to https:// URLs only",
    ),
    (
        svc!("type = \"http\"\nurl = \"https://x/\"\ntls_ca_file = \"/nonexistent/ca.pem\"\n"),
        ": routes.\"/q\".services.s.tls_ca_file: /nonexistent/ca.pem: No such file or directory (os error 2)",
    ),
    (
        svc!("type = \"redis\"\nrequest_channel = \"c\"\ntls_ca_file = \"ca.pem\"\n"),
        ": routes.\"/q\".services.s: tls_ca_file applies to type = \"http\" only",
    ),
    (
        svc!("type = \"http\"\nurl = [\"http://x/\", \"ftp://y/\"]\n"),
        ": routes.\"/q\".services.s: url \"ftp://y/\": scheme ftp is not http or https",
    ),
    (
        svc!("type = \"http\"\nurl = \"http://x/\"\nheaders = { \"a b\" = \"v\" }\n"),
        ": routes.\"/q\".services.s: headers: \"a b\" is not a valid header",
    ),
    (
        svc!("type = \"http\"\nurl = \"http://x/\"\nheaders = { \"x-k\" = \"\\u0001\" }\n"),
        ": routes.\"/q\".services.s: headers: \"x-k\" is not a valid header",
    ),
    (
        svc!("type = \"http\"\nurl = \"http://x/\"\ntimeout = \"0s\"\n"),
        ": routes.\"/q\".services.s.timeout: must be longer than 0s",
    ),
    (
        svc!("type = \"http\"\nurl = \"http://x/\"\nmax_in_flight = 0\n"),
        ": routes.\"/q\".services.s.max_in_flight: must be greater than 0",
    ),
    (
        svc!("type = \"http\"\nurl = \"http://x/\"\npolling_interval = \"0s\"\n"),
        ": routes.\"/q\".services.s.polling_interval: must be longer than 0s",
    ),
    // [channels]
    (
        "[channels]\n",
        ": channels.jwt_secret: exactly one of secret, secret_env or public_key_file is required",
    ),
    (
        channels!("endpoint = \"socket\"\n"),
        ": channels.endpoint: must be a URL path starting with '/'",
    ),
    (
        channels!(
            "[routes.\"/socket/websocket\".services.s]\ntype = \"redis\"\nrequest_channel = \"x\"\n"
        ),
        ": channels.endpoint: /socket/websocket is already a route",
    ),
    (
        "[channels]\njwt_secret = \"short\"\n",
        ": channels.jwt_secret: the secret must be at least 16 bytes",
    ),
    (
        channels!("max_topics_per_socket = 0\n"),
        ": channels.max_topics_per_socket: must be greater than 0",
    ),
    (
        channels!("outbound_queue = 0\n"),
        ": channels.outbound_queue: must be greater than 0",
    ),
    (
        channels!("max_frame_size = 0\n"),
        ": channels.max_frame_size: must be greater than 0",
    ),
    (
        channels!("idle_timeout = \"0s\"\n"),
        ": channels.idle_timeout: must be longer than 0s",
    ),
    (
        channels!("token_ttl = \"0s\"\n"),
        ": channels.token_ttl: must be longer than 0s",
    ),
    (
        channels!("[channels.token_endpoint]\nopen = true\npath = \"token\"\n"),
        ": channels.token_endpoint.path: must be a free URL path starting with '/'",
    ),
    (
        channels!("[channels.token_endpoint]\nopen = true\npath = \"/socket/websocket\"\n"),
        ": channels.token_endpoint.path: must be a free URL path starting with '/'",
    ),
    (
        "[channels]\njwt_public_key_file = \"tests/keys/rsa_public.pem\"\njwt_algorithm = \"RS256\"\n[channels.token_endpoint]\nopen = true\n",
        ": channels.token_endpoint: needs jwt_secret or jwt_secret_env: a public key cannot sign tokens",
    ),
    (
        channels!("[channels.token_endpoint]\n"),
        ": channels.token_endpoint.api_key_env: is required unless open = true",
    ),
    (
        channels!("[channels.token_endpoint]\napi_key_env = \"REFRACT_TEST_UNSET_VARIABLE\"\n"),
        ": channels.token_endpoint.api_key_env: environment variable REFRACT_TEST_UNSET_VARIABLE must hold a key of at least 16 bytes",
    ),
    (
        channels!(
            "[channels.token_endpoint]\nopen = true\ncors_origins = [\"https://a\", \"*\"]\n"
        ),
        ": channels.token_endpoint.cors_origins: \"*\" is not allowed: list the origins",
    ),
    (
        channels!("[channels.presence]\nrefresh_interval = \"0s\"\n"),
        ": channels.presence.refresh_interval: must be longer than 0s",
    ),
    (
        channels!("[channels.presence]\nadmin_interval = \"0s\"\n"),
        ": channels.presence.admin_interval: must be longer than 0s",
    ),
    (
        channels!("[channels.presence]\nmax_listed = 0\n"),
        ": channels.presence.max_listed: must be greater than 0",
    ),
    (
        channels!("[channels.presence]\nttl = \"5s\"\n"),
        ": channels.presence.ttl: must be longer than refresh_interval, or live nodes look dead",
    ),
    (
        channels!("[channels.system]\ndatetime_interval = \"0s\"\n"),
        ": channels.system.datetime_interval: must be longer than 0s",
    ),
];

#[test]
fn every_error_keeps_its_exact_text() {
    let mut wrong = Vec::new();
    for (text, want) in CASES {
        let got = match Settings::from_toml(text) {
            Ok(_) => "(accepted)".to_string(),
            Err(e) => e.to_string(),
        };
        if got != *want {
            wrong.push(format!("    ({text:?},\n     {got:?}),"));
        }
    }
    assert!(wrong.is_empty(), "wrong texts:\n{}", wrong.join("\n"));
}

/// `Settings::load` of a file holding `text` (no file for `None`), its path spelled `FILE`.
fn load(text: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refract.toml");
    if let Some(text) = text {
        std::fs::write(&path, text).unwrap();
    }
    let got = Settings::load(&path).unwrap_err().to_string();
    got.replace(&path.display().to_string(), "FILE")
}

#[test]
fn file_errors_name_the_file() {
    let cases = [
        (
            None,
            "FILE: (file): cannot read the file: No such file or directory (os error 2)",
        ),
        (
            Some("[server]\nmax_connections = 0\n"),
            "FILE: server.max_connections: must be greater than 0",
        ),
        (
            Some("[server]\nmax_connections = \"many\"\n"),
            "FILE: server.max_connections: invalid type: string \"many\", expected an integer",
        ),
        (
            Some("[server\n"),
            "FILE: [server: unclosed table, expected `]` (line 1, column 8)",
        ),
        (
            Some(svc!("type = \"redis\"\n")),
            "FILE: routes.\"/q\".services.s: request_channel is required",
        ),
    ];
    let mut wrong = Vec::new();
    for (text, want) in cases {
        let got = load(text);
        if got != want {
            wrong.push(format!("    ({text:?},\n     {got:?}),"));
        }
    }
    assert!(wrong.is_empty(), "wrong texts:\n{}", wrong.join("\n"));
}

/// An environment override at fault is named, not the file: a bad value, and an unknown key.
#[test]
fn environment_overrides_are_named_by_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refract.toml");
    std::fs::write(&path, "").unwrap();
    let check = |var: &str, value: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_refract"))
            .arg("check")
            .arg("--config")
            .arg(&path)
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64));
        String::from_utf8(out.stderr).unwrap()
    };
    assert_eq!(
        check("REFRACT__SERVER__MAX_CONNECTIONS", "many"),
        "refract: config error: environment REFRACT__SERVER__MAX_CONNECTIONS: server.max_connections: invalid type: string \"many\", expected an integer\n",
    );
    let stderr = check("REFRACT__SERVER__LISTNE", "127.0.0.1:1");
    assert!(
        stderr.starts_with(
            "refract: config error: environment REFRACT__SERVER__LISTNE: server: unknown field `listne`, expected one of `listen`,"
        ),
        "{stderr}"
    );
}

/// The keys listed for sections that flatten the admission keys are all real: each is taken
/// (a wrong value is a type error, not an unknown key).
#[test]
fn listed_server_and_route_keys_exist() {
    use refract::config::routes::{ADMISSION_FIELDS, ROUTE_FIELDS};
    let server = refract::config::ServerSettings::FIELDS;
    for key in server
        .iter()
        .chain(ADMISSION_FIELDS)
        .filter(|k| **k != "admission")
    {
        let e = err(&format!("[server]\n{key} = {{ x = 1 }}\n"));
        assert!(
            !e.contains(&format!("unknown field `{key}`")),
            "server.{key}: {e}"
        );
    }
    for key in ROUTE_FIELDS
        .iter()
        .chain(ADMISSION_FIELDS)
        .filter(|k| **k != "admission")
    {
        let e = err(&format!("[routes.\"/q\"]\n{key} = 7\n"));
        assert!(
            !e.contains(&format!("unknown field `{key}`")),
            "routes.\"/q\".{key}: {e}"
        );
    }
}

fn err(text: &str) -> String {
    Settings::from_toml(text).unwrap_err().to_string()
}

#[test]
fn minimal_file_gets_documented_defaults() {
    let s = Settings::from_toml(
        "[routes.\"/quotes\".services.q]\ntype = \"redis\"\nrequest_channel = \"input\"\n",
    )
    .unwrap();
    assert_eq!(s.server.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(s.redis.response_channel, "refract.responses");
    assert_eq!(
        s.routes["/quotes"].services["q"],
        Service::Redis {
            request_channel: "input".into()
        }
    );
}

#[test]
fn route_and_service_names_keep_their_case() {
    let s = Settings::from_toml(
        "[routes.\"/Quotes\".services.QuoteService]\ntype = \"redis\"\nrequest_channel = \"In\"\n",
    )
    .unwrap();
    assert!(s.routes["/Quotes"].services.contains_key("QuoteService"));
}

#[test]
fn missing_request_channel_names_the_service() {
    let e = err("[routes.\"/quotes\".services.quoteservice]\ntype = \"redis\"\n");
    assert!(
        e.ends_with("routes.\"/quotes\".services.quoteservice: request_channel is required"),
        "{e}"
    );
}

#[test]
fn unknown_service_type_is_named() {
    let e = err("[routes.\"/q\".services.s]\ntype = \"kafka\"\nrequest_channel = \"x\"\n");
    assert!(
        e.contains("routes.\"/q\".services.s: type \"kafka\" is unknown"),
        "{e}"
    );
}

#[test]
fn http_services_take_one_url_or_a_list() {
    let s = Settings::from_toml(
        r#"
        [routes."/news".services.legacy]
        type = "http"
        url = ["http://127.0.0.1:9000/a", "http://127.0.0.1:9001/b"]
        headers = { "x-api-key" = "k" }
        polling_interval = "2s"
        "#,
    )
    .unwrap();
    let Service::Http(h) = &s.routes["/news"].services["legacy"] else {
        panic!()
    };
    assert_eq!(h.urls.len(), 2);
    assert_eq!(h.timeout, refract::config::HTTP_DEFAULT_TIMEOUT);
    assert_eq!(h.max_in_flight, 64);
    assert_eq!(h.polling_interval, Some(Duration::from_secs(2)));
    assert_eq!(h.headers, vec![("x-api-key".to_string(), "k".to_string())]);
}

#[test]
fn http_service_errors_name_the_key() {
    let svc = "[routes.\"/n\".services.h]\ntype = \"http\"\n";
    assert!(err(svc).ends_with("routes.\"/n\".services.h: url is required"));
    assert!(err(&format!("{svc}url = \"nope\"\n")).contains("not a valid URL"));
    assert!(Settings::from_toml(&format!("{svc}url = \"https://x/\"\n")).is_ok());
    assert!(err(&format!("{svc}url = []\n")).contains("at least one URL"));
    assert!(
        err(&format!(
            "{svc}url = \"http://x/\"\npolling_interval = \"0s\"\n"
        ))
        .contains("routes.\"/n\".services.h.polling_interval")
    );
    assert!(
        err(&format!(
            "{svc}url = \"http://x/\"\nrequest_channel = \"c\"\n"
        ))
        .contains("request_channel applies to type = \"redis\" only")
    );
    let redis = "[routes.\"/n\".services.r]\ntype = \"redis\"\nrequest_channel = \"c\"\n";
    assert!(
        err(&format!("{redis}url = \"http://x/\"\n"))
            .contains("url applies to type = \"http\" only")
    );
}

#[test]
fn route_limits_are_validated() {
    let svc = "[routes.\"/q\".services.s]\ntype = \"redis\"\nrequest_channel = \"x\"\n";
    let s = Settings::from_toml(&format!(
        "[routes.\"/q\"]\nmax_connections = 5\nrate_limit = {{ per_second = 2.5, action = \"drop\" }}\n{svc}"
    ))
    .unwrap();
    let r = s.routes["/q"].rate_limit.unwrap();
    assert_eq!(
        (r.per_second, r.burst(), r.action),
        (2.5, 2.5, RateLimitAction::Drop)
    );
    assert!(
        err(&format!(
            "[routes.\"/q\"]\nrate_limit = {{ per_second = 0 }}\n{svc}"
        ))
        .contains("routes.\"/q\".rate_limit")
    );
    assert!(
        err(&format!(
            "[routes.\"/q\"]\nrate_limit = {{ per_second = 1, action = \"explode\" }}\n{svc}"
        ))
        .contains("explode")
    );
    assert!(
        err("[server]\nping_interval = \"30s\"\nidle_timeout = \"10s\"\n")
            .contains("server.idle_timeout")
    );
}

#[test]
fn unknown_keys_are_rejected() {
    let e = err("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n");
    assert!(e.contains("lisen"), "{e}");
    let e = err("[routes.\"/q\".services.s]\ntype = \"redis\"\nrequest_chanel = \"x\"\n");
    assert!(e.contains("request_chanel"), "{e}");
    let e = err(
        "[routes.\"/q\"]\nmax_conections = 3\n[routes.\"/q\".services.s]\ntype = \"redis\"\nrequest_channel = \"x\"\n",
    );
    assert!(e.contains("max_conections"), "{e}");
    let e = err("[server]\nallowed_origin = [\"x\"]\n");
    assert!(e.contains("allowed_origin"), "{e}");
}

#[test]
fn toml_syntax_errors_fit_on_one_line() {
    let e = err("[routes.\"/a\".services.s]\ntype = \"redis\"\n[routes.\"/a\".services.s]\n");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("[routes.\"/a\".services.s]: duplicate key (line 3"),
        "{e}"
    );
}

#[test]
fn wrong_types_name_the_key() {
    let e = err("[server]\nmax_connections = \"many\"\n");
    assert!(e.contains("server.max_connections"), "{e}");
}

#[test]
fn bad_durations_and_values_are_rejected() {
    assert!(err("[server]\nwrite_timeout = \"-1s\"\n").contains("server.write_timeout"));
    assert!(err("[server]\nread_buffer = 16\n").contains("server.read_buffer"));
    assert!(err("[server]\nread_buffer = 2000000\n").contains("server.read_buffer"));
    assert!(err("[server]\nwrite_timeout = \"0s\"\n").contains("server.write_timeout"));
    assert!(err("[redis]\nurl = \"http://x\"\n").contains("redis.url"));
    assert!(err("node_id = \"a b\"\n").contains("node_id"));
    assert!(err("[server]\ntrusted_proxies = [\"nope\"]\n").contains("trusted_proxies"));
}

#[test]
fn routes_must_be_paths_and_not_reserved() {
    let svc = ".services.s]\ntype = \"redis\"\nrequest_channel = \"x\"\n";
    assert!(err(&format!("[routes.\"quotes\"{svc}")).contains("routes.\"quotes\""));
    assert!(err(&format!("[routes.\"/metrics\"{svc}")).contains("reserved"));
    assert!(err("[routes.\"/q\"]\n").contains("at least one service"));
}

#[test]
fn loading_builds_the_verifiers_and_unvalidated_settings_refuse_every_token() {
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    let token = refract::auth::mint_hmac(
        SECRET.as_bytes(),
        jsonwebtoken::Algorithm::HS256,
        serde_json::Map::new(),
        Duration::from_secs(60),
    )
    .unwrap();
    let s = Settings::from_toml(&format!(
        "[channels]\njwt_secret = \"{SECRET}\"\n[routes.\"/q\".auth]\njwt = {{ secret = \"{SECRET}\" }}\n{}",
        svc!("type = \"redis\"\nrequest_channel = \"x\"\n")
    ))
    .unwrap();
    let route = s.routes["/q"].auth.as_ref().unwrap();
    assert!(route.verifier.verify(&token).is_ok());
    assert!(s.channels.unwrap().verifier.verify(&token).is_ok());
    let unvalidated = refract::auth::Verifier::default();
    assert_eq!(
        unvalidated.verify(&token).unwrap_err(),
        refract::auth::TokenError::Invalid
    );
}

/// A reload meets the routes of the new file with the sections in force: a route may not take a
/// path of the Channels endpoint that runs, whatever the new file says of `[channels]`.
#[test]
fn a_reloaded_route_meets_the_sections_in_force() {
    let running = Settings::from_toml(channels!("endpoint = \"/live\"\n")).unwrap();
    let new = Settings::from_toml(concat!(
        "[channels]\njwt_secret = \"0123456789abcdef0123456789abcdef\"\nendpoint = \"/other\"\n",
        "[routes.\"/live/websocket\".services.s]\ntype = \"redis\"\nrequest_channel = \"x\"\n"
    ))
    .unwrap();
    let checked = refract::config::check_paths(&new.routes, running.channels.as_ref(), None);
    assert_eq!(
        checked.unwrap_err().to_string(),
        ": channels.endpoint: /live/websocket is already a route"
    );
    assert_eq!(
        new.changed_sections(&running)
            .into_iter()
            .collect::<Vec<_>>(),
        ["channels"],
        "routes are what a reload puts in force; the rest is named as needing a restart"
    );
    let same = Settings::from_toml(channels!("endpoint = \"/live\"\n")).unwrap();
    assert!(same.changed_sections(&running).is_empty());
}
