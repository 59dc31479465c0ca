//! `POST <token_endpoint.path>`: Tangram's token endpoint, with the API key and CORS allow-list
//! Tangram lacked. `{"channel", "id"?}` in, `{"id", "channel", "token"}` out.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderValue, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;

use crate::channels::Channels;
use crate::phoenix;

const MAX_BODY: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    channel: String,
    id: Option<String>,
}

pub async fn handle(ch: &Channels, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(settings) = &ch.settings.token_endpoint else {
        return json(
            StatusCode::NOT_FOUND,
            r#"{"error":"not found"}"#.into(),
            None,
        );
    };
    let origin = req
        .headers()
        .get(ORIGIN)
        .filter(|o| {
            settings
                .cors_origins
                .iter()
                .any(|a| a.as_bytes() == o.as_bytes())
        })
        .cloned();
    if req.method() == Method::OPTIONS {
        return preflight(origin);
    }
    if req.method() != Method::POST {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"use POST"}"#.into(),
            origin,
        );
    }
    if !settings.open {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !ch.api_key_matches(given) {
            return json(
                StatusCode::UNAUTHORIZED,
                r#"{"error":"unauthorized"}"#.into(),
                origin,
            );
        }
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json(
                StatusCode::PAYLOAD_TOO_LARGE,
                r#"{"error":"body too large"}"#.into(),
                origin,
            );
        }
    };
    let bad = || {
        json(
            StatusCode::BAD_REQUEST,
            r#"{"error":"expected a JSON body {\"channel\": string, \"id\"?: string}"}"#.into(),
            origin.clone(),
        )
    };
    let Ok(request) = serde_json::from_slice::<TokenRequest>(&body) else {
        return bad();
    };
    if !phoenix::valid_topic(&request.channel) {
        return json(
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid channel"}"#.into(),
            origin,
        );
    }
    let id = request
        .id
        .unwrap_or_else(|| crate::ids::ConnectionId::random().as_str().to_owned());
    let mut claims = serde_json::Map::new();
    claims.insert("id".into(), id.clone().into());
    claims.insert("channel".into(), request.channel.clone().into());
    let Some(token) = ch.mint(claims) else {
        return json(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":"cannot sign"}"#.into(),
            origin,
        );
    };
    let answer = serde_json::json!({"id": id, "channel": request.channel, "token": token});
    json(StatusCode::OK, answer.to_string(), origin)
}

fn preflight(origin: Option<HeaderValue>) -> Response<Full<Bytes>> {
    let Some(origin) = origin else {
        return json(
            StatusCode::FORBIDDEN,
            r#"{"error":"origin not allowed"}"#.into(),
            None,
        );
    };
    let mut r = json(StatusCode::NO_CONTENT, String::new(), Some(origin));
    let h = r.headers_mut();
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert("access-control-max-age", HeaderValue::from_static("600"));
    r
}

fn json(status: StatusCode, body: String, origin: Option<HeaderValue>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(origin) = origin {
        h.insert("access-control-allow-origin", origin);
        h.insert("vary", HeaderValue::from_static("Origin"));
    }
    r
}
