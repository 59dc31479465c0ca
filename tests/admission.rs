//! Admission to routes, through real sockets: tokens from each source, every way a token is
//! wrong, the HTTP connect hook, origins, address rules, per-address limits, token expiry.

mod common;

use std::time::Duration;

use common::http_server::{Answer, HttpServer};
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;

const SECRET: &str = "test-secret-0123456789abcdef-0123";
const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");

fn now() -> i64 {
    refract::auth::now_secs() as i64
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
}

fn hs(claims: Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(format!("{KEYS}/{name}")).unwrap()
}

fn route(path: &str, channel: &str, auth: &str) -> String {
    format!(
        "\n[routes.\"{path}\".services.s]\ntype = \"redis\"\nrequest_channel = \"{channel}\"\n\
         [routes.\"{path}\".auth]\n{auth}\n"
    )
}

/// Attempts an upgrade; returns the HTTP status and body on refusal, or the client.
async fn attempt(req: Request) -> Result<Client, (u16, String)> {
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(Client { ws }),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            let body = String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).to_string();
            Err((r.status().as_u16(), body))
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn request(gw: &Gateway, path_and_query: &str) -> Request {
    format!("ws://{}{path_and_query}", gw.addr)
        .into_client_request()
        .unwrap()
}

fn with_header(mut req: Request, name: &'static str, value: &str) -> Request {
    req.headers_mut().insert(name, value.parse().unwrap());
    req
}

#[tokio::test]
async fn tokens_are_taken_from_the_header_the_query_or_a_subprotocol() {
    let redis = Redis::start().await;
    let routes = route(
        "/secure",
        "secure.in",
        &format!("jwt = {{ secret = \"{SECRET}\" }}"),
    ) + &route(
        "/custom",
        "custom.in",
        &format!("jwt = {{ secret = \"{SECRET}\" }}\ntoken_query_param = \"jwt\""),
    );
    let gw = Gateway::start(&redis, &routes).await;
    let mut input = redis.subscribe("secure.in").await;
    let token = hs(json!({"sub": "alice", "role": "trader", "exp": now() + 600}));

    let header = with_header(
        request(&gw, "/secure"),
        "authorization",
        &format!("Bearer {token}"),
    );
    let query = request(&gw, &format!("/secure?token={token}"));
    let protocol = with_header(
        request(&gw, "/secure"),
        "sec-websocket-protocol",
        &format!("bearer.{token}"),
    );
    for req in [header, query, protocol] {
        let client = attempt(req).await.expect("admitted");
        let connect = input.next_json().await;
        assert_eq!(connect["type"], "connect");
        assert_eq!(connect["user"], "alice");
        assert_eq!(connect["claims"]["role"], "trader");
        assert_eq!(connect["claims"]["sub"], "alice");
        drop(client);
        assert_eq!(input.next_json().await["type"], "disconnect");
    }

    // With other subprotocols offered, the answer is one of those, never the token.
    let req = with_header(
        request(&gw, "/secure"),
        "sec-websocket-protocol",
        &format!("bearer.{token}, quotes.v1"),
    );
    let (ws, response) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "quotes.v1");
    drop(ws);

    // A route can name its own query parameter.
    let mut custom = redis.subscribe("custom.in").await;
    assert_eq!(
        attempt(request(&gw, &format!("/custom?token={token}")))
            .await
            .err()
            .unwrap()
            .0,
        401
    );
    let _c = attempt(request(&gw, &format!("/custom?jwt={token}")))
        .await
        .expect("admitted");
    assert_eq!(custom.next_json().await["user"], "alice");
    gw.stop().await;
}

#[tokio::test]
async fn every_kind_of_bad_token_is_refused_before_services_hear_of_it() {
    let redis = Redis::start().await;
    let auth = format!(
        "jwt = {{ secret = \"{SECRET}\", issuer = \"refract-tests\", audience = \"quotes\", leeway = \"0s\" }}"
    );
    let rsa =
        format!("jwt = {{ public_key_file = \"{KEYS}/rsa_public.pem\", algorithm = \"RS256\" }}");
    let routes = route("/hs", "hs.in", &auth) + &route("/rs", "rs.in", &rsa);
    let gw = Gateway::start(&redis, &routes).await;
    let mut input = redis.subscribe("hs.in").await;

    let good = json!({"sub": "a", "iss": "refract-tests", "aud": "quotes", "exp": now() + 600});
    let with = |patch: Value| {
        let mut c = good.clone();
        c.as_object_mut()
            .unwrap()
            .extend(patch.as_object().unwrap().clone());
        c
    };
    let other_secret = EncodingKey::from_secret(b"a-different-secret-of-some-length");
    let alg_none = {
        use base64::Engine;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&good)
        )
    };
    let cases: Vec<(&str, Option<String>, u16, &str)> = vec![
        ("missing", None, 401, "bad_token"),
        ("garbage", Some("not-a-jwt".into()), 401, "bad_token"),
        (
            "expired",
            Some(hs(with(json!({"exp": now() - 30})))),
            401,
            "expired",
        ),
        (
            "not yet valid",
            Some(hs(with(json!({"nbf": now() + 300})))),
            401,
            "bad_token",
        ),
        (
            "wrong signature",
            Some(sign(Algorithm::HS256, &other_secret, good.clone())),
            401,
            "bad_token",
        ),
        ("alg none", Some(alg_none), 401, "bad_token"),
        (
            "wrong issuer",
            Some(hs(with(json!({"iss": "someone-else"})))),
            401,
            "bad_token",
        ),
        (
            "wrong audience",
            Some(hs(with(json!({"aud": "billing"})))),
            403,
            "bad_token",
        ),
        (
            "no exp",
            Some(hs(
                json!({"sub": "a", "iss": "refract-tests", "aud": "quotes"}),
            )),
            401,
            "bad_token",
        ),
    ];
    for (name, token, status, reason) in &cases {
        let path = match token {
            Some(t) => format!("/hs?token={t}"),
            None => "/hs".into(),
        };
        let (got, body) = attempt(request(&gw, &path))
            .await
            .err()
            .unwrap_or_else(|| panic!("{name} admitted"));
        assert_eq!(got, *status, "{name}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"error": reason}),
            "{name}"
        );
    }
    // An HS token (signed with anything) on an RS route is refused: no algorithm confusion.
    let hs_on_rs = hs(json!({"sub": "a", "exp": now() + 600}));
    assert_eq!(
        attempt(request(&gw, &format!("/rs?token={hs_on_rs}")))
            .await
            .err()
            .unwrap()
            .0,
        401
    );

    // Nothing reached the service: the first event it hears is this good client's.
    let _ok = attempt(request(&gw, &format!("/hs?token={}", hs(good.clone()))))
        .await
        .expect("admitted");
    assert_eq!(input.next_json().await["type"], "connect");
    assert!(input.try_next().is_none());
    assert_eq!(
        gw.metric("refract_admission_rejections_total{route=\"/hs\",reason=\"bad_token\"}")
            .await,
        8
    );
    assert_eq!(
        gw.metric("refract_admission_rejections_total{route=\"/hs\",reason=\"expired\"}")
            .await,
        1
    );
    gw.stop().await;
}

#[tokio::test]
async fn public_key_routes_accept_rsa_ec_and_eddsa_tokens() {
    let redis = Redis::start().await;
    let key_route = |path: &str, alg: &str, file: &str| {
        route(
            path,
            "pk.in",
            &format!("jwt = {{ public_key_file = \"{KEYS}/{file}\", algorithm = \"{alg}\" }}"),
        )
    };
    let routes = key_route("/rs", "RS256", "rsa_public.pem")
        + &key_route("/es", "ES256", "ec_public.pem")
        + &key_route("/ed", "EdDSA", "ed_public.pem");
    let gw = Gateway::start(&redis, &routes).await;
    let mut input = redis.subscribe("pk.in").await;
    let claims = |who: &str| json!({"sub": who, "exp": now() + 600});
    let tokens = [
        (
            "/rs",
            sign(
                Algorithm::RS256,
                &EncodingKey::from_rsa_pem(&pem("rsa_private.pem")).unwrap(),
                claims("rsa"),
            ),
        ),
        (
            "/es",
            sign(
                Algorithm::ES256,
                &EncodingKey::from_ec_pem(&pem("ec_private.pem")).unwrap(),
                claims("ec"),
            ),
        ),
        (
            "/ed",
            sign(
                Algorithm::EdDSA,
                &EncodingKey::from_ed_pem(&pem("ed_private.pem")).unwrap(),
                claims("ed"),
            ),
        ),
    ];
    for (path, token) in &tokens {
        let client = attempt(request(&gw, &format!("{path}?token={token}")))
            .await
            .expect("admitted");
        let who = input.next_json().await["user"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(&who, &path[1..].replace("rs", "rsa").replace("es", "ec"));
        drop(client);
        assert_eq!(input.next_json().await["type"], "disconnect");
    }
    // A token for one key is refused by another.
    let (_, rsa_token) = &tokens[0];
    assert_eq!(
        attempt(request(&gw, &format!("/es?token={rsa_token}")))
            .await
            .err()
            .unwrap()
            .0,
        401
    );
    gw.stop().await;
}

#[tokio::test]
async fn claims_ride_on_every_event_and_expiry_closes_with_4001() {
    let redis = Redis::start().await;
    let gw = Gateway::start(
        &redis,
        &route(
            "/secure",
            "secure.in",
            &format!("jwt = {{ secret = \"{SECRET}\" }}"),
        ),
    )
    .await;
    let mut input = redis.subscribe("secure.in").await;
    // Expires two seconds after connecting.
    let token = hs(json!({"sub": "brief", "exp": now() + 2}));
    let mut client = attempt(request(&gw, &format!("/secure?token={token}")))
        .await
        .expect("admitted");
    let connect = input.next_json().await;
    let id = connect["id"].as_str().unwrap().to_string();
    client.send("hello").await;
    let message = input.next_for(&id).await;
    assert_eq!(
        (message["user"].as_str(), message["claims"]["sub"].as_str()),
        (Some("brief"), Some("brief"))
    );

    assert_eq!(
        client.recv_close().await,
        (4001, "token expired".to_string())
    );
    let disconnect = input.next_event(&id, "disconnect").await;
    assert_eq!(disconnect["user"], "brief");
    assert_eq!(
        gw.metric("refract_connections_closed_total{route=\"/secure\",reason=\"token_expired\"}")
            .await,
        1
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_connect_hook_admits_denies_times_out_and_errors() {
    let redis = Redis::start().await;
    let mut hook = HttpServer::start(|body| match body["query"]["who"].as_str().unwrap_or("") {
        "friend" => {
            Answer::Json(json!({"allow": true, "user": "friend-1", "claims": {"tier": "gold"}}))
        }
        "stranger" => Answer::Json(json!({"allow": false})),
        "unauthorized" => Answer::Status(401, "application/json", "{}".into()),
        "slow" => Answer::Hang,
        "broken" => Answer::Status(500, "text/html", "<html>oops</html>".into()),
        _ => Answer::Status(200, "application/json", "not json".into()),
    })
    .await;
    let auth = format!(
        "connect_hook = {{ url = \"{}\", timeout = \"300ms\" }}",
        hook.url("/admit")
    );
    let gw = Gateway::start(&redis, &route("/hooked", "hooked.in", &auth)).await;
    let mut input = redis.subscribe("hooked.in").await;

    let req = with_header(
        with_header(
            request(&gw, "/hooked?who=friend&x=1"),
            "authorization",
            "Basic abc",
        ),
        "x-not-forwarded",
        "secret",
    );
    let _friend = attempt(req).await.expect("admitted");
    let asked = hook.next().await;
    assert_eq!(asked.path, "/admit");
    assert_eq!(asked.body["route"], "/hooked");
    assert_eq!(asked.body["remoteAddress"], "127.0.0.1");
    assert!(asked.body["remotePort"].is_u64());
    assert_eq!(asked.body["query"], json!({"who": "friend", "x": "1"}));
    assert_eq!(asked.body["headers"]["authorization"], "Basic abc");
    assert!(asked.body["headers"].get("x-not-forwarded").is_none());
    let connect = input.next_json().await;
    assert_eq!(connect["user"], "friend-1");
    assert_eq!(connect["claims"], json!({"tier": "gold"}));

    for (who, status, reason) in [
        ("stranger", 403, "hook_denied"),
        ("unauthorized", 401, "hook_denied"),
        ("slow", 503, "hook_error"),
        ("broken", 503, "hook_error"),
        ("garbled", 503, "hook_error"),
    ] {
        let (got, body) = attempt(request(&gw, &format!("/hooked?who={who}")))
            .await
            .err()
            .unwrap();
        assert_eq!(
            (got, body.contains(reason)),
            (status, true),
            "{who}: {body}"
        );
    }
    assert_eq!(
        gw.metric("refract_admission_rejections_total{route=\"/hooked\",reason=\"hook_error\"}")
            .await,
        3
    );
    assert!(
        input.try_next().is_none(),
        "refused clients never reach services"
    );
    gw.stop().await;
}

#[tokio::test]
async fn origins_and_address_rules_are_checked_before_the_upgrade() {
    let redis = Redis::start().await;
    let routes = format!(
        "{}{}{}",
        "\n[routes.\"/web\"]\nallowed_origins = [\"https://app.example.com\", \"*.example.org\"]\n\
         [routes.\"/web\".services.s]\ntype = \"redis\"\nrequest_channel = \"web.in\"\n",
        "\n[routes.\"/internal\"]\nallow_ips = [\"203.0.113.0/24\"]\ndeny_ips = [\"203.0.113.66/32\"]\n\
         [routes.\"/internal\".services.s]\ntype = \"redis\"\nrequest_channel = \"internal.in\"\n",
        "\n[routes.\"/blocked\"]\ndeny_ips = [\"127.0.0.0/8\"]\n\
         [routes.\"/blocked\".services.s]\ntype = \"redis\"\nrequest_channel = \"blocked.in\"\n",
    );
    let gw = Gateway::start(&redis, &routes).await;

    let origin = |o: &str| with_header(request(&gw, "/web"), "origin", o);
    assert_eq!(
        attempt(origin("https://evil.example.net"))
            .await
            .err()
            .unwrap()
            .0,
        403
    );
    assert_eq!(
        attempt(origin("https://app.example.com.evil.net"))
            .await
            .err()
            .unwrap()
            .0,
        403
    );
    assert!(attempt(origin("https://app.example.com")).await.is_ok());
    assert!(attempt(origin("http://shop.example.org")).await.is_ok());
    assert!(
        attempt(request(&gw, "/web")).await.is_ok(),
        "no Origin: not a browser, not checked"
    );
    assert_eq!(
        gw.metric("refract_admission_rejections_total{route=\"/web\",reason=\"origin\"}")
            .await,
        2
    );

    assert_eq!(
        attempt(request(&gw, "/blocked")).await.err().unwrap().0,
        403
    );
    // The peer is 127.0.0.1, not trusted as a proxy: a forwarded address is not believed.
    let spoofed = with_header(request(&gw, "/internal"), "x-forwarded-for", "203.0.113.5");
    assert_eq!(attempt(spoofed).await.err().unwrap().0, 403);
    assert_eq!(
        gw.metric("refract_admission_rejections_total{route=\"/internal\",reason=\"ip_denied\"}")
            .await,
        1
    );
    gw.stop().await;

    // Behind a trusted proxy, the forwarded address is the client's.
    let gw = Gateway::start_unready(
        &redis.url(),
        &routes,
        "trusted_proxies = [\"127.0.0.1/32\"]\n",
    )
    .await;
    gw.wait_ready().await;
    let via = |ip: &str| with_header(request(&gw, "/internal"), "x-forwarded-for", ip);
    assert!(attempt(via("203.0.113.5")).await.is_ok());
    assert_eq!(
        attempt(via("203.0.113.66")).await.err().unwrap().0,
        403,
        "denied inside the allowed range"
    );
    assert_eq!(attempt(via("198.51.100.7")).await.err().unwrap().0, 403);
    gw.stop().await;
}

#[tokio::test]
async fn connections_per_address_are_limited_with_429() {
    let redis = Redis::start().await;
    let gw = Gateway::start_unready(
        &redis.url(),
        QUOTES,
        "max_connections_per_ip = 2\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
    )
    .await;
    gw.wait_ready().await;
    let from = |ip: &str| with_header(request(&gw, "/quotes"), "x-forwarded-for", ip);
    let a1 = attempt(from("198.51.100.1")).await.expect("first");
    let _a2 = attempt(from("198.51.100.1")).await.expect("second");
    let (status, body) = attempt(from("198.51.100.1")).await.err().unwrap();
    assert_eq!((status, body.contains("too_many_connections")), (429, true));
    // Another address has its own allowance.
    let _b = attempt(from("198.51.100.2")).await.expect("other address");
    // A closed connection gives its place back.
    drop(a1);
    eventually("the address's slot to free up", || async {
        attempt(from("198.51.100.1")).await.ok()
    })
    .await;
    gw.stop().await;
}

#[test]
fn refract_token_mints_what_the_route_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.toml");
    std::fs::write(
        &path,
        route(
            "/secure",
            "s.in",
            "jwt = { secret_env = \"REFRACT_TEST_TOKEN_SECRET\", audience = \"quotes\" }",
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_refract"))
        .args(["token", "--config"])
        .arg(&path)
        .args([
            "--route",
            "/secure",
            "--sub",
            "carol",
            "--ttl",
            "10m",
            "--claim",
            "role=admin",
            "--claim",
            "level=3",
        ])
        .env("REFRACT_TEST_TOKEN_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let settings: refract::auth::JwtSettings =
        serde_json::from_value(json!({"secret": SECRET, "audience": "quotes"})).unwrap();
    let claims = settings.verifier().unwrap().verify(&token).unwrap();
    assert_eq!(claims.subject(), Some("carol"));
    assert_eq!(claims.map["role"], "admin");
    assert_eq!(claims.map["level"], 3);
    let left = claims.time_left().unwrap();
    assert!(left > Duration::from_secs(590) && left <= Duration::from_secs(600));
}
