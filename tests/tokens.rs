//! Hostile tokens at both front doors, through real sockets and a real Redis: algorithm
//! confusion, `alg: none`, `kid` and keys carried in the header, `nbf`/`exp` around the leeway,
//! absurd claims, and 100 KB tokens. Every refusal is checked for its exact answer, and for
//! being counted exactly once (and nothing else moving).

mod common;

use std::collections::BTreeMap;

use base64::Engine;
use common::phx::Phx;
use common::*;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;

const SECRET: &str = "tokens-test-secret-0123456789abcdef";
const ATTACKER: &[u8] = b"the-attacker-own-secret-0123456789";
const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
/// The one request channel every route's service listens on.
const SERVICE: &str = "tokens.in";
const YEAR: u64 = 365 * 24 * 3600;

fn now() -> u64 {
    refract::auth::now_secs()
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(format!("{KEYS}/{name}")).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Claims both doors accept: `sub` for routes, `id` and `channel` for a Channels join of `room`.
fn claims(sub: &str, patch: Value) -> Value {
    let mut c = json!({"sub": sub, "id": sub, "channel": "room", "exp": now() + 600});
    c.as_object_mut()
        .unwrap()
        .extend(patch.as_object().unwrap().clone());
    c
}

/// A token with exactly this header, signed by hand: the header may lie about the algorithm.
fn signed(header: Value, claims: &Value, alg: Algorithm, key: &EncodingKey) -> String {
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{signature}")
}

/// A token with exactly this header and signature segment.
fn forged(header: Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

fn hs(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn rsa_private() -> EncodingKey {
    EncodingKey::from_rsa_pem(&pem("rsa_private.pem")).unwrap()
}

fn rs(claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &rsa_private()).unwrap()
}

fn route(path: &str, jwt: &str) -> String {
    format!(
        "\n[routes.\"{path}\".services.s]\ntype = \"redis\"\nrequest_channel = \"{SERVICE}\"\n\
         [routes.\"{path}\".auth]\njwt = {{ {jwt} }}\n"
    )
}

/// `/hs` (HS256) and `/rs` (RS256), both with a 5 s leeway, and Channels with `channels_jwt`.
async fn start(redis: &Redis, channels_jwt: &str) -> Gateway {
    let routes = route("/hs", &format!("secret = \"{SECRET}\", leeway = \"5s\""))
        + &route(
            "/rs",
            &format!(
                "public_key_file = \"{KEYS}/rsa_public.pem\", algorithm = \"RS256\", leeway = \"5s\""
            ),
        )
        + &format!("\n[channels]\nendpoint = \"/socket\"\nidle_timeout = \"5s\"\n{channels_jwt}\n");
    Gateway::start(redis, &routes).await
}

fn hs_channels() -> String {
    format!("jwt_secret = \"{SECRET}\"")
}

fn rs_channels() -> String {
    format!("jwt_public_key_file = \"{KEYS}/rsa_public.pem\"\njwt_algorithm = \"RS256\"")
}

// ---- counters ----------------------------------------------------------------------------

/// The counter families a token can move.
const FAMILIES: [&str; 6] = [
    "refract_admission_rejections_total",
    "refract_handshakes_refused_total",
    "refract_connections_accepted_total",
    "refract_http_rejections_total",
    "refract_channels_joins_total",
    "refract_channels_sockets_accepted_total",
];

type Counters = BTreeMap<String, u64>;

async fn counters(gw: &Gateway) -> Counters {
    let (status, body) = gw.get("/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| FAMILIES.iter().any(|f| l.starts_with(f)))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn moved(before: &Counters, after: &Counters) -> Counters {
    after
        .iter()
        .filter_map(|(k, v)| {
            let was = before.get(k).copied().unwrap_or(0);
            assert!(*v >= was, "counter {k} went down");
            (*v != was).then(|| (k.clone(), v - was))
        })
        .collect()
}

/// Waits until something moved since `before`, then asserts it was `line`, by exactly one.
async fn expect_counted(gw: &Gateway, before: &Counters, line: &str, case: &str) {
    let moved = eventually(&format!("{case}: a counter to move"), || async {
        let m = moved(before, &counters(gw).await);
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(moved, Counters::from([(line.to_string(), 1)]), "{case}");
}

fn rejection(route: &str, reason: &str) -> String {
    format!("refract_admission_rejections_total{{route=\"{route}\",reason=\"{reason}\"}}")
}

fn accepted(route: &str) -> String {
    format!("refract_connections_accepted_total{{route=\"{route}\"}}")
}

fn joins(result: &str) -> String {
    format!("refract_channels_joins_total{{result=\"{result}\"}}")
}

fn http_rejection(reason: &str) -> String {
    format!("refract_http_rejections_total{{reason=\"{reason}\"}}")
}

// ---- the routes door ---------------------------------------------------------------------

/// The three ways a client hands a route its token (docs/auth.md).
#[derive(Debug, Clone, Copy)]
enum Carrier {
    Bearer,
    Query,
    Subprotocol,
}

const CARRIERS: [Carrier; 3] = [Carrier::Bearer, Carrier::Query, Carrier::Subprotocol];

fn request(gw: &Gateway, path: &str, token: &str, carrier: Carrier) -> Request {
    let url = match carrier {
        Carrier::Query => format!("ws://{}{path}?token={token}", gw.addr),
        _ => format!("ws://{}{path}", gw.addr),
    };
    let mut req = url.into_client_request().unwrap();
    let header = match carrier {
        Carrier::Bearer => Some(("authorization", format!("Bearer {token}"))),
        Carrier::Subprotocol => Some(("sec-websocket-protocol", format!("bearer.{token}"))),
        Carrier::Query => None,
    };
    if let Some((name, value)) = header {
        req.headers_mut().insert(name, value.parse().unwrap());
    }
    req
}

/// Attempts an upgrade; the client, or the refusal's status and body.
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

/// Presents a token from `mint` to `path` each way a client can: each is refused with `status`
/// and `{"error": error}`, and counted once under `reason`.
async fn refused(
    gw: &Gateway,
    path: &str,
    mint: &dyn Fn() -> String,
    (status, error): (u16, &str),
    case: &str,
) {
    for carrier in CARRIERS {
        let case = format!("{case} on {path} via {carrier:?}");
        let before = counters(gw).await;
        let (got, body) = attempt(request(gw, path, &mint(), carrier))
            .await
            .err()
            .unwrap_or_else(|| panic!("{case}: admitted"));
        let body: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{case}: {body}"));
        assert_eq!((got, body), (status, json!({"error": error})), "{case}");
        expect_counted(gw, &before, &rejection(path, error), &case).await;
    }
}

/// Presents a token from `mint` to `path` each way a client can: each is admitted, counted, and
/// its service hears `connect` with the token's `sub` as `user`. Returns the clients.
async fn admitted(
    gw: &Gateway,
    service: &mut Subscriber,
    path: &str,
    mint: &dyn Fn() -> String,
    case: &str,
) -> Vec<(Client, Value)> {
    admitted_via(gw, service, path, mint, case, &CARRIERS).await
}

/// As [`admitted`], through `carriers` only.
async fn admitted_via(
    gw: &Gateway,
    service: &mut Subscriber,
    path: &str,
    mint: &dyn Fn() -> String,
    case: &str,
    carriers: &[Carrier],
) -> Vec<(Client, Value)> {
    let mut clients = Vec::new();
    for &carrier in carriers {
        let case = format!("{case} on {path} via {carrier:?}");
        let before = counters(gw).await;
        let token = mint();
        let client = attempt(request(gw, path, &token, carrier))
            .await
            .unwrap_or_else(|e| panic!("{case}: refused {e:?}"));
        expect_counted(gw, &before, &accepted(path), &case).await;
        let port = client.local_port();
        let connect = loop {
            let v = service.next_json().await;
            if v["type"] == "connect" && v["remotePort"] == port {
                break v;
            }
        };
        let sub = connect["claims"]["sub"].clone();
        assert_eq!(connect["user"], sub, "{case}");
        clients.push((client, connect));
    }
    clients
}

// ---- the Channels door -------------------------------------------------------------------

/// A join of `room` with `token` in its payload is refused `unauthorized`, and counted once.
async fn join_refused(gw: &Gateway, s: &mut Phx, token: &str, case: &str) {
    let before = counters(gw).await;
    let (_, reply) = s.join("room", json!({"token": token})).await;
    assert_eq!(
        reply[4],
        json!({"status": "error", "response": {"reason": "unauthorized"}}),
        "{case}"
    );
    expect_counted(gw, &before, &joins("unauthorized"), case).await;
}

/// A join of `room` with `token` is admitted and counted once; returns the join ref.
async fn join_admitted(gw: &Gateway, s: &mut Phx, token: &str, case: &str) -> String {
    let before = counters(gw).await;
    let (jr, reply) = s.join("room", json!({"token": token})).await;
    assert_eq!(reply[4]["status"], "ok", "{case}: {reply}");
    expect_counted(gw, &before, &joins("ok"), case).await;
    jr
}

/// The same token as the socket's credential (query `token`, `userToken`, phoenix 1.8's
/// subprotocol): refused `403` before the upgrade, and counted once each.
async fn socket_refused(gw: &Gateway, token: &str, case: &str) {
    let url = |q: &str| format!("ws://{}/socket/websocket?vsn=2.0.0{q}", gw.addr);
    let mut protocol = url("").into_client_request().unwrap();
    protocol.headers_mut().insert(
        "sec-websocket-protocol",
        format!("phoenix, base64url.bearer.phx.{}", b64(token.as_bytes()))
            .parse()
            .unwrap(),
    );
    let requests = [
        (
            "token",
            url(&format!("&token={token}"))
                .into_client_request()
                .unwrap(),
        ),
        (
            "userToken",
            url(&format!("&userToken={token}"))
                .into_client_request()
                .unwrap(),
        ),
        ("subprotocol", protocol),
    ];
    for (how, req) in requests {
        let case = format!("{case} as the socket credential ({how})");
        let before = counters(gw).await;
        let refusal = attempt(req).await.err();
        assert_eq!(
            refusal,
            Some((403, "invalid socket token\n".to_string())),
            "{case}"
        );
        expect_counted(gw, &before, &http_rejection("bad_socket_token"), &case).await;
    }
}

// ---- the cases ---------------------------------------------------------------------------

#[tokio::test]
async fn algorithm_confusion_is_refused_at_both_doors() {
    let redis = Redis::start().await;
    let gw = start(&redis, &rs_channels()).await;
    let mut service = redis.subscribe(SERVICE).await;
    let public_pem = pem("rsa_public.pem");
    let c = claims("mallory", json!({}));

    // HS256, with the route's public key (the PEM file's bytes) as the HMAC secret: what a
    // verifier that lets the token pick the algorithm would accept.
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    let naive = jsonwebtoken::decode::<Value>(
        &confused,
        &DecodingKey::from_secret(&public_pem),
        &Validation::new(Algorithm::HS256),
    );
    assert!(
        naive.is_ok(),
        "the forgery is a good HS256 token for the PEM bytes"
    );
    let trimmed = String::from_utf8(public_pem.clone()).unwrap();
    let trimmed = EncodingKey::from_secret(trimmed.trim_end().as_bytes());
    let hmac_pem = EncodingKey::from_secret(&public_pem);
    let es = EncodingKey::from_ec_pem(&pem("ec_private.pem")).unwrap();
    let forgeries = [
        ("HS256 signed with the PEM", confused.clone()),
        (
            "HS256 signed with the PEM, trailing newline trimmed",
            signed(
                json!({"alg": "HS256", "typ": "JWT"}),
                &c,
                Algorithm::HS256,
                &trimmed,
            ),
        ),
        (
            "HS512 signed with the PEM",
            signed(json!({"alg": "HS512"}), &c, Algorithm::HS512, &hmac_pem),
        ),
        (
            "a header saying RS256 over an HMAC of the PEM",
            signed(
                json!({"alg": "RS256", "typ": "JWT"}),
                &c,
                Algorithm::HS256,
                &hmac_pem,
            ),
        ),
        // The right key under another algorithm is another algorithm.
        (
            "PS256 with the route's own RSA key",
            signed(
                json!({"alg": "PS256"}),
                &c,
                Algorithm::PS256,
                &rsa_private(),
            ),
        ),
        (
            "RS512 with the route's own RSA key",
            signed(
                json!({"alg": "RS512"}),
                &c,
                Algorithm::RS512,
                &rsa_private(),
            ),
        ),
        (
            "ES256 with another key",
            signed(json!({"alg": "ES256"}), &c, Algorithm::ES256, &es),
        ),
    ];
    for (case, token) in &forgeries {
        refused(&gw, "/rs", &|| token.clone(), (401, "bad_token"), case).await;
    }
    // The route works: the genuine RS256 token is let in.
    let genuine = rs(&c);
    admitted(
        &gw,
        &mut service,
        "/rs",
        &|| genuine.clone(),
        "genuine RS256",
    )
    .await;

    // Channels with the same key: the join and the socket credential refuse each forgery.
    let mut s = Phx::connect(&gw, "").await;
    for (case, token) in &forgeries {
        join_refused(&gw, &mut s, token, case).await;
        socket_refused(&gw, token, case).await;
    }
    join_admitted(&gw, &mut s, &genuine, "genuine RS256").await;
    gw.stop().await;
}

#[tokio::test]
async fn alg_none_is_refused_at_both_doors() {
    let redis = Redis::start().await;
    let gw = start(&redis, &hs_channels()).await;
    let mut service = redis.subscribe(SERVICE).await;
    let c = claims("nobody", json!({}));
    // A real signature (of these very claims), to paste after an `alg: none` header.
    let real_hs = hs(&c).rsplit('.').next().unwrap().to_string();
    let real_rs = rs(&c).rsplit('.').next().unwrap().to_string();
    let mut tokens = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": alg, "typ": "JWT"});
        tokens.push((
            format!("alg {alg}, empty signature"),
            forged(header.clone(), &c, ""),
        ));
    }
    let none = json!({"alg": "none", "typ": "JWT"});
    tokens.extend([
        (
            "alg none, garbage signature".to_string(),
            forged(none.clone(), &c, "c2lnbmF0dXJl"),
        ),
        (
            "alg none, the real HS256 signature".into(),
            forged(none.clone(), &c, &real_hs),
        ),
        (
            "alg none, the real RS256 signature".into(),
            forged(none.clone(), &c, &real_rs),
        ),
        (
            "no alg at all".into(),
            forged(json!({"typ": "JWT"}), &c, &real_hs),
        ),
        (
            "alg none, two segments".into(),
            forged(none, &c, "").trim_end_matches('.').to_string(),
        ),
    ]);
    for path in ["/hs", "/rs"] {
        for (case, token) in &tokens {
            refused(&gw, path, &|| token.clone(), (401, "bad_token"), case).await;
        }
    }
    // Both routes let the genuine token in.
    let genuine_hs = hs(&c);
    let genuine_rs = rs(&c);
    admitted(
        &gw,
        &mut service,
        "/hs",
        &|| genuine_hs.clone(),
        "genuine HS256",
    )
    .await;
    admitted(
        &gw,
        &mut service,
        "/rs",
        &|| genuine_rs.clone(),
        "genuine RS256",
    )
    .await;

    let mut s = Phx::connect(&gw, "").await;
    for (case, token) in &tokens {
        join_refused(&gw, &mut s, token, case).await;
        socket_refused(&gw, token, case).await;
    }
    join_admitted(&gw, &mut s, &genuine_hs, "genuine HS256").await;
    gw.stop().await;
}

/// A route (and Channels) has exactly one key, so there is nothing for `kid` to select: it is
/// ignored, and the token is verified against the configured key whatever `kid`, `jwk` or
/// `jku` the header names. A good signature with an unknown `kid` is therefore admitted; a
/// header can never bring its own key.
#[tokio::test]
async fn kid_and_keys_in_the_header_never_choose_the_key() {
    let redis = Redis::start().await;
    let gw = start(&redis, &hs_channels()).await;
    let mut service = redis.subscribe(SERVICE).await;
    let secret = EncodingKey::from_secret(SECRET.as_bytes());
    let attacker = EncodingKey::from_secret(ATTACKER);
    let c = claims("kid-user", json!({}));

    // An unknown kid (and one that looks like a path) with a good signature: admitted.
    for kid in ["no-such-key", "../../../../../../dev/null"] {
        let rs_kid = signed(
            json!({"alg": "RS256", "kid": kid}),
            &c,
            Algorithm::RS256,
            &rsa_private(),
        );
        admitted(
            &gw,
            &mut service,
            "/rs",
            &|| rs_kid.clone(),
            &format!("RS256, kid {kid}"),
        )
        .await;
        let hs_kid = signed(
            json!({"alg": "HS256", "kid": kid}),
            &c,
            Algorithm::HS256,
            &secret,
        );
        admitted(
            &gw,
            &mut service,
            "/hs",
            &|| hs_kid.clone(),
            &format!("HS256, kid {kid}"),
        )
        .await;
    }
    // An unknown kid does not excuse a bad signature.
    let kid = json!({"alg": "RS256", "kid": "no-such-key"});
    let mine = signed(kid.clone(), &c, Algorithm::RS256, &rsa_private());
    let theirs = signed(
        kid,
        &claims("someone-else", json!({})),
        Algorithm::RS256,
        &rsa_private(),
    );
    let swapped = format!(
        "{}.{}",
        mine.rsplit_once('.').unwrap().0,
        theirs.rsplit_once('.').unwrap().1
    );
    refused(
        &gw,
        "/rs",
        &|| swapped.clone(),
        (401, "bad_token"),
        "RS256, kid, another token's signature",
    )
    .await;

    // A header that carries the attacker's key (jwk), points at it (jku) and names it (kid).
    let hostile_header = json!({
        "alg": "HS256",
        "kid": "attacker",
        "jku": "http://127.0.0.1:9/jwks.json",
        "jwk": {"kty": "oct", "k": b64(ATTACKER)},
    });
    let with_own_key = signed(hostile_header.clone(), &c, Algorithm::HS256, &attacker);
    let hs_kid = signed(
        json!({"alg": "HS256", "kid": "no-such-key"}),
        &c,
        Algorithm::HS256,
        &attacker,
    );
    let hostile = [
        (
            "HS256, jwk/jku/kid of the attacker's key, signed with it",
            with_own_key,
        ),
        ("HS256, unknown kid, signed with another secret", hs_kid),
    ];
    for (case, token) in &hostile {
        refused(&gw, "/hs", &|| token.clone(), (401, "bad_token"), case).await;
    }
    // The same hostile header over the route's own signature is admitted: the header parses,
    // and only the configured key decided.
    let control = signed(hostile_header, &c, Algorithm::HS256, &secret);
    admitted(
        &gw,
        &mut service,
        "/hs",
        &|| control.clone(),
        "hostile header, route's signature",
    )
    .await;

    let mut s = Phx::connect(&gw, "").await;
    for (case, token) in &hostile {
        join_refused(&gw, &mut s, token, case).await;
        socket_refused(&gw, token, case).await;
    }
    join_admitted(&gw, &mut s, &control, "hostile header, the right signature").await;
    let unknown_kid = signed(
        json!({"alg": "HS256", "kid": "no-such-key"}),
        &c,
        Algorithm::HS256,
        &secret,
    );
    join_admitted(
        &gw,
        &mut s,
        &unknown_kid,
        "HS256, unknown kid, good signature",
    )
    .await;
    gw.stop().await;
}

/// `/hs` has `leeway = "5s"`; Channels has the default leeway, 5 s. A token is minted per
/// attempt, so each has the whole leeway to work with.
#[tokio::test]
async fn nbf_and_exp_are_judged_with_the_leeway() {
    let redis = Redis::start().await;
    let gw = start(&redis, &hs_channels()).await;
    let mut service = redis.subscribe(SERVICE).await;
    let mint = |patch: Value| hs(&claims("clock", patch));
    let far_nbf = || json!({"nbf": now() + YEAR, "exp": now() + 2 * YEAR});

    refused(
        &gw,
        "/hs",
        &|| mint(far_nbf()),
        (401, "bad_token"),
        "nbf in a year",
    )
    .await;
    refused(
        &gw,
        "/hs",
        &|| mint(json!({"nbf": now() + 30})),
        (401, "bad_token"),
        "nbf past the leeway",
    )
    .await;
    admitted(
        &gw,
        &mut service,
        "/hs",
        &|| mint(json!({"nbf": now() + 3})),
        "nbf inside the leeway",
    )
    .await;
    refused(
        &gw,
        "/hs",
        &|| mint(json!({"exp": now() - 30})),
        (401, "expired"),
        "exp past the leeway",
    )
    .await;
    // Inside the leeway the token is admitted (services hear `connect`), but the connection
    // is closed at once: docs/auth.md closes a connection when its token reaches `exp`, and
    // that is already past.
    let late = admitted(
        &gw,
        &mut service,
        "/hs",
        &|| mint(json!({"exp": now() - 3})),
        "exp inside the leeway",
    )
    .await;
    for (mut client, connect) in late {
        assert_eq!(
            client.recv_close().await,
            (4001, "token expired".to_string())
        );
        let id = connect["id"].as_str().unwrap();
        assert_eq!(
            service.next_event(id, "disconnect").await["type"],
            "disconnect"
        );
    }

    let mut s = Phx::connect(&gw, "").await;
    join_refused(&gw, &mut s, &mint(far_nbf()), "nbf in a year").await;
    join_refused(
        &gw,
        &mut s,
        &mint(json!({"nbf": now() + 30})),
        "nbf past the leeway",
    )
    .await;
    join_admitted(
        &gw,
        &mut s,
        &mint(json!({"nbf": now() + 3})),
        "nbf inside the leeway",
    )
    .await;
    join_refused(
        &gw,
        &mut s,
        &mint(json!({"exp": now() - 30})),
        "exp past the leeway",
    )
    .await;
    // Admitted, then the membership's token has already expired: phx_error straight away.
    let jr = join_admitted(
        &gw,
        &mut s,
        &mint(json!({"exp": now() - 3})),
        "exp inside the leeway",
    )
    .await;
    assert_eq!(
        s.recv_event("phx_error").await,
        json!([jr, null, "room", "phx_error", {"reason": "token expired"}])
    );
    for (case, patch) in [
        ("nbf in a year", far_nbf()),
        ("nbf past the leeway", json!({"nbf": now() + 30})),
        ("exp past the leeway", json!({"exp": now() - 30})),
    ] {
        socket_refused(&gw, &mint(patch), case).await;
    }
    gw.stop().await;
}

#[tokio::test]
async fn malformed_and_absurd_time_claims() {
    let redis = Redis::start().await;
    let gw = start(&redis, &hs_channels()).await;
    let mut service = redis.subscribe(SERVICE).await;
    let malformed = [
        ("exp as a string", json!({"exp": (now() + 600).to_string()})),
        ("exp negative", json!({"exp": -1})),
        ("exp huge float", json!({"exp": 1e30})),
        ("exp null", json!({"exp": null})),
        ("nbf as a string", json!({"nbf": "soon"})),
    ];
    let mut s = Phx::connect(&gw, "").await;
    for (case, patch) in &malformed {
        let token = hs(&claims("odd", patch.clone()));
        refused(&gw, "/hs", &|| token.clone(), (401, "bad_token"), case).await;
        join_refused(&gw, &mut s, &token, case).await;
    }

    // NumericDate may be fractional (RFC 7519 2): such a token is admitted, and must still be
    // closed when it expires (this used to give the connection no deadline at all).
    let fractional = || hs(&claims("fraction", json!({"exp": now() as f64 + 2.5})));
    let clients = admitted(&gw, &mut service, "/hs", &fractional, "fractional exp").await;
    for (mut client, _) in clients {
        assert_eq!(
            client.recv_close().await,
            (4001, "token expired".to_string()),
            "fractional exp"
        );
    }
    let jr = join_admitted(&gw, &mut s, &fractional(), "fractional exp").await;
    assert_eq!(
        s.recv_event("phx_error").await,
        json!([jr, null, "room", "phx_error", {"reason": "token expired"}])
    );

    // An `exp` at the end of u64 (a token that "never" expires) is valid; the connection it
    // opens must live (this used to panic adding the time left to `Instant::now()`).
    let forever = hs(&claims("forever", json!({"exp": u64::MAX})));
    let mut clients = admitted(
        &gw,
        &mut service,
        "/hs",
        &|| forever.clone(),
        "exp = u64::MAX",
    )
    .await;
    for (client, connect) in &mut clients {
        client.send("still here").await;
        let message = service
            .next_event(connect["id"].as_str().unwrap(), "message")
            .await;
        assert_eq!(message["message"], "still here");
    }
    join_admitted(&gw, &mut s, &forever, "exp = u64::MAX").await;
    let r = s.send(None, "phoenix", "heartbeat", json!({})).await;
    let reply = s.recv_event("phx_reply").await;
    assert_eq!(
        (reply[1].clone(), reply[4]["status"].clone()),
        (json!(r), json!("ok"))
    );
    gw.stop().await;
}

/// 100 KB tokens never reach a verifier over HTTP: the request head is over
/// `server.max_header_size` (16 KiB by default), so the HTTP layer answers `431` itself, and
/// the connection is counted in `refract_handshakes_refused_total{reason="headers_too_large"}`,
/// whichever way the token comes and whether or not it is genuine. A large token under that
/// limit gets the verifier's answer; inside a WebSocket frame (a Channels join) only the frame
/// limit applies.
#[tokio::test]
async fn hundred_kilobyte_tokens() {
    let redis = Redis::start().await;
    let gw = start(&redis, &hs_channels()).await;
    let mut service = redis.subscribe(SERVICE).await;
    let attacker = EncodingKey::from_secret(ATTACKER);
    let padded = |bytes: usize| claims("big", json!({"pad": "x".repeat(bytes)}));
    let forged = signed(
        json!({"alg": "HS256"}),
        &padded(75 * 1024),
        Algorithm::HS256,
        &attacker,
    );
    let genuine = hs(&padded(75 * 1024));
    assert!(forged.len() >= 100 * 1024 && genuine.len() >= 100 * 1024);

    let socket = "/socket/websocket?vsn=2.0.0";
    let phx_protocol = |t: &str| {
        format!(
            "Sec-WebSocket-Protocol: phoenix, base64url.bearer.phx.{}\r\n",
            b64(t.as_bytes())
        )
    };
    let heads = [
        ("query", format!("/hs?token={forged}"), String::new()),
        (
            "bearer",
            "/hs".into(),
            format!("Authorization: Bearer {forged}\r\n"),
        ),
        (
            "subprotocol",
            "/hs".into(),
            format!("Sec-WebSocket-Protocol: bearer.{forged}\r\n"),
        ),
        (
            "genuine, bearer",
            "/hs".into(),
            format!("Authorization: Bearer {genuine}\r\n"),
        ),
        (
            "socket token",
            format!("{socket}&token={forged}"),
            String::new(),
        ),
        ("socket subprotocol", socket.into(), phx_protocol(&forged)),
        (
            "genuine socket token",
            format!("{socket}&token={genuine}"),
            String::new(),
        ),
    ];
    for (case, target, headers) in &heads {
        let case = format!("100 KB token, {case}");
        let before = counters(&gw).await;
        let answer = too_large(&gw, target, headers).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{case}: {answer:.200}");
        assert!(answer.contains("content-length: 0\r\n"), "{case}: {answer}");
        let refused = "refract_handshakes_refused_total{reason=\"headers_too_large\"}";
        expect_counted(&gw, &before, refused, &case).await;
    }

    // 8 KiB of claims (an 11 KB token) fits: the verifier answers, each way.
    let big_forged = signed(
        json!({"alg": "HS256"}),
        &padded(8 * 1024),
        Algorithm::HS256,
        &attacker,
    );
    let big_genuine = hs(&padded(8 * 1024));
    assert!(big_genuine.len() > 10 * 1024 && big_genuine.len() < 12 * 1024);
    refused(
        &gw,
        "/hs",
        &|| big_forged.clone(),
        (401, "bad_token"),
        "11 KB forged token",
    )
    .await;
    let clients = admitted(
        &gw,
        &mut service,
        "/hs",
        &|| big_genuine.clone(),
        "11 KB genuine token",
    )
    .await;
    for (_, connect) in &clients {
        assert_eq!(
            connect["claims"]["pad"].as_str().map(str::len),
            Some(8 * 1024)
        );
    }
    socket_refused(&gw, &big_forged, "11 KB forged token").await;

    // A join carries its token in a frame (limit 1 MiB): 100 KB is verified like any other.
    let mut s = Phx::connect(&gw, "").await;
    join_refused(&gw, &mut s, &forged, "100 KB forged token").await;
    join_admitted(&gw, &mut s, &genuine, "100 KB genuine token").await;
    gw.stop().await;
}

/// Sends an upgrade request whose head is too large, and returns what came back. The server
/// answers and closes before reading it all, so the write may fail and the read end in a reset:
/// both are expected, and what arrived before them is the answer.
async fn too_large(gw: &Gateway, target: &str, headers: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{headers}\r\n"
    );
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}
