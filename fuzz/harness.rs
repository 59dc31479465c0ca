//! What each fuzz target does with one input, shared by the targets in `fuzz_targets/` and by
//! `tests/fuzz_regressions.rs` (which replays every committed seed and finding through the same
//! code in the normal test suite). Each function must return, whatever the input: a panic is a
//! finding.

// Each target binary uses one of these functions.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::Uri;
use hyper::header::{AUTHORIZATION, HeaderMap, HeaderValue, ORIGIN, SEC_WEBSOCKET_PROTOCOL};
use jsonwebtoken::{Algorithm, EncodingKey};
use refract::auth::{Claims, JwtSettings, OneOrMany, TokenError, Verifier};
use refract::http::admission::{chosen_protocol, find_token, origin_matches};
use refract::http::upgrade::query_pairs;
use refract::{phoenix, prism};

/// What a Redis server sends a subscribed or publishing connection of the gateway's own: frames
/// taken one by one off the front of the buffer until one is incomplete or malformed, each
/// read as a pub/sub push; under a large limit and a tiny one. Taking a frame always consumes
/// bytes (or the connection would spin).
pub fn resp(data: &[u8]) {
    use refract::redis::resp::{Heard, take};
    for limit in [1 << 20, 16] {
        let mut buf = bytes::BytesMut::from(data);
        loop {
            let before = buf.len();
            match take(&mut buf, limit) {
                Ok(Some(value)) => {
                    assert!(
                        buf.len() < before,
                        "a frame was taken without consuming bytes"
                    );
                    let _ = Heard::of(value);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "an incomplete frame consumed bytes");
                    break;
                }
                Err(_) => break,
            }
        }
    }
}

/// A message on the node's response channel (any service, or anyone who can publish to Redis).
/// Under the default `max_reply_size`, and under a small limit to exercise the limit itself.
pub fn prism_inbound(data: &[u8]) {
    let _ = prism::decode_inbound(data, 1 << 20);
    let _ = prism::decode_inbound(data, 64);
}

/// A legacy HTTP service's response body.
pub fn prism_http_body(data: &[u8]) {
    let _ = prism::decode_http_body(data, 1 << 20);
    let _ = prism::decode_http_body(data, 64);
}

/// A Phoenix Channels text frame from a client, the payload fields the socket then reads
/// (`token` and `meta` of a `phx_join`), and the topic rule applied to what it names.
pub fn phoenix_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = phoenix::decode_text(text) {
        let _ = frame.payload.str_field("token");
        let _ = frame.payload.object_field("meta");
        let _ = phoenix::Topic::new(&frame.topic);
    }
}

/// A Phoenix Channels binary frame (phoenix.js's binary push) from a client.
pub fn phoenix_binary(data: &[u8]) {
    if let Ok(frame) = phoenix::decode_binary(data) {
        let _ = frame.payload.str_field("token");
        let _ = phoenix::Topic::new(&frame.topic);
    }
}

const SECRET: &str = "fuzzing-secret-0123456789abcdef";

fn jwt_settings() -> JwtSettings {
    JwtSettings {
        secret: None,
        secret_env: None,
        public_key_file: None,
        algorithm: None,
        issuer: None,
        audience: None,
        leeway: None,
    }
}

static HS256: LazyLock<Verifier> = LazyLock::new(|| {
    JwtSettings {
        secret: Some(SECRET.into()),
        issuer: Some(OneOrMany::One("me".into())),
        audience: Some(OneOrMany::Many(vec!["refract".into(), "other".into()])),
        ..jwt_settings()
    }
    .verifier()
    .unwrap()
});

static RS256: LazyLock<Verifier> = LazyLock::new(|| {
    // This file is compiled in two crates: its own path finds the key from either.
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = if here.ends_with("fuzz") {
        here.join("..")
    } else {
        here
    };
    JwtSettings {
        public_key_file: Some(root.join("tests/keys/rsa_public.pem")),
        algorithm: Some("RS256".into()),
        ..jwt_settings()
    }
    .verifier()
    .unwrap()
});

static SIGNING_KEY: LazyLock<EncodingKey> =
    LazyLock::new(|| EncodingKey::from_secret(SECRET.as_bytes()));

fn verify(verifier: &Verifier, token: &str) -> Result<Claims, TokenError> {
    let claims = verifier.verify(token)?;
    let _ = claims.subject();
    let _ = claims.time_left();
    let _ = phoenix::scope_covers(&claims.map, "room:lobby");
    Ok(claims)
}

/// A JWT from a client (header, query parameter or subprotocol), checked by a verifier built
/// from a fixed HS256 secret (with `aud` and `iss` required) and one built from the RS256 test
/// key in `tests/keys/`.
///
/// The first byte picks the mode. Modes 0 and 1 give the rest to the HS256 and RS256 verifiers
/// as the token. Mode 2 splits the rest at the first newline into a header and a claims text
/// (no newline: the rest is the claims under an HS256 header), signs them with the HS256 secret
/// and verifies that: libFuzzer cannot forge signatures, so this is how it reaches claims
/// validation (`exp`, `nbf`, `aud`, `iss`) and what Channels then reads from the claims.
pub fn token(data: &[u8]) {
    let _ = token_verdict(data);
}

/// What [`token`] makes of `data`: `None` when the input is not a token at all (empty, or not
/// UTF-8 in modes 0 and 1).
pub fn token_verdict(data: &[u8]) -> Option<Result<Claims, TokenError>> {
    let (&mode, rest) = data.split_first()?;
    match mode % 3 {
        0 | 1 => {
            let token = std::str::from_utf8(rest).ok()?;
            Some(verify(if mode % 3 == 0 { &HS256 } else { &RS256 }, token))
        }
        _ => {
            let (header, claims) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (&br#"{"alg":"HS256","typ":"JWT"}"#[..], rest),
            };
            let message = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(claims)
            );
            let signature =
                jsonwebtoken::crypto::sign(message.as_bytes(), &SIGNING_KEY, Algorithm::HS256)
                    .unwrap();
            Some(verify(&HS256, &format!("{message}.{signature}")))
        }
    }
}

/// Origin patterns as an operator writes them, and one degenerate one.
const ORIGIN_PATTERNS: [&str; 4] = [
    "https://app.example.com",
    "*.example.com",
    "https://*.example.com",
    "*.",
];

/// What admission reads from a client's upgrade request before any check: the query string,
/// the `Authorization` header, the offered subprotocols (the token, and the one to answer) and
/// the `Origin`.
///
/// The input is lines: the request target, the `Authorization` value, the `Origin` value, then
/// one `Sec-WebSocket-Protocol` value a line. A target or header value that hyper would refuse
/// never reaches admission, so such lines are left out.
pub fn admission(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let uri = lines
        .next()
        .and_then(|l| Uri::try_from(l).ok())
        .unwrap_or_else(|| Uri::from_static("/"));
    let mut headers = HeaderMap::new();
    for name in [AUTHORIZATION, ORIGIN] {
        if let Some(v) = lines.next().and_then(|l| HeaderValue::from_bytes(l).ok()) {
            headers.insert(name, v);
        }
    }
    for line in lines {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(SEC_WEBSOCKET_PROTOCOL, v);
        }
    }
    let _ = query_pairs(&uri);
    let _ = find_token(&headers, &uri, "token");
    let _ = chosen_protocol(&headers);
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        for pattern in ORIGIN_PATTERNS {
            let _ = origin_matches(origin, pattern);
        }
        let _ = origin_matches(origin, origin);
    }
}

/// A configuration file, as `refract check` and start-up read it (without the environment).
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = refract::Settings::from_toml(text);
    }
}
