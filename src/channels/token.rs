//! `POST <token_endpoint.path>`: the token endpoint, behind an API key and a CORS allow-list.
//! `{"channel", "id"?}` in, `{"id", "channel", "token"}` out.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderValue, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;

use crate::channels::endpoint::Channels;
use crate::error::TokenRefusal;
use crate::phoenix;

const MAX_BODY: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    channel: String,
    id: Option<String>,
}

pub async fn handle(ch: &Channels, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let origin = ch.settings.token_endpoint.as_ref().and_then(|settings| {
        let o = req.headers().get(ORIGIN)?;
        let allowed = settings
            .cors_origins
            .iter()
            .any(|a| a.as_bytes() == o.as_bytes());
        allowed.then(|| o.clone())
    });
    if req.method() == Method::OPTIONS && ch.settings.token_endpoint.is_some() {
        return preflight(origin);
    }
    match mint(ch, req).await {
        Ok(answer) => json(StatusCode::OK, answer, origin),
        Err(refusal) => {
            let (status, body) = refusal.status_and_body();
            json(status, body.into(), origin)
        }
    }
}

async fn mint(ch: &Channels, req: Request<Incoming>) -> Result<String, TokenRefusal> {
    let settings = ch
        .settings
        .token_endpoint
        .as_ref()
        .ok_or(TokenRefusal::NotFound)?;
    if req.method() != Method::POST {
        return Err(TokenRefusal::MethodNotAllowed);
    }
    if !settings.open {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !ch.api_key_matches(given) {
            return Err(TokenRefusal::Unauthorized);
        }
    }
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| TokenRefusal::BodyTooLarge)?
        .to_bytes();
    let request: TokenRequest = serde_json::from_slice(&body).map_err(|_| TokenRefusal::BadBody)?;
    if !phoenix::valid_topic(&request.channel) {
        return Err(TokenRefusal::InvalidChannel);
    }
    let id = request
        .id
        .unwrap_or_else(|| crate::ids::ConnectionId::random().as_str().to_owned());
    let mut claims = serde_json::Map::new();
    claims.insert("id".into(), id.clone().into());
    claims.insert("channel".into(), request.channel.clone().into());
    let token = ch.mint(claims).ok_or(TokenRefusal::CannotSign)?;
    let answer = serde_json::json!({"id": id, "channel": request.channel, "token": token});
    Ok(answer.to_string())
}

fn preflight(origin: Option<HeaderValue>) -> Response<Full<Bytes>> {
    let Some(origin) = origin else {
        let (status, body) = TokenRefusal::OriginNotAllowed.status_and_body();
        return json(status, body.into(), None);
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
