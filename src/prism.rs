//! The Prism wire protocol, pure: events the gateway publishes to services, and the replies
//! services publish back. Nothing here touches a socket, so it is unit-tested and fuzzed alone.
//!
//! Field names on the wire are exactly the seed's camelCase ones.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

/// What happened to a client connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Connect,
    Message,
    Disconnect,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [Self::Connect, Self::Message, Self::Disconnect];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Message => "message",
            Self::Disconnect => "disconnect",
        }
    }
}

/// Who an event is about: fixed for the life of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Peer<'a> {
    pub id: &'a str,
    pub route: &'a str,
    pub remote_address: &'a str,
    pub remote_port: u16,
    /// Who the route's admission said the client is (refract's addition to the seed's fields).
    pub user: Option<&'a str>,
    /// The verified token claims or the hook's claims, as JSON.
    pub claims: Option<&'a serde_json::value::RawValue>,
}

/// A client's data frame.
#[derive(Clone, Copy, Debug)]
pub enum ClientData<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

/// Encodes one event. `response_channel` is `None` for HTTP services, which answer in the
/// response body instead. Binary client data travels as base64 with `"binary": true`.
pub fn encode_event(
    peer: &Peer<'_>,
    kind: EventKind,
    data: Option<ClientData<'_>>,
    response_channel: Option<&str>,
) -> Vec<u8> {
    EventTemplate::new(peer, response_channel).encode(kind, data)
}

/// A connection's events with what never changes encoded once: the fixed parts are copied and
/// only the kind and the data written. (tests/decoders.rs holds every event to the documented
/// keys and values, with hostile strings in every field.)
#[derive(Debug, Clone)]
pub struct EventTemplate {
    /// `{"id":"…","type":"`
    head: Box<[u8]>,
    /// `","route":"…","remoteAddress":"…","remotePort":N`
    mid: Box<[u8]>,
    /// `,"responseChannel":"…","user":"…","claims":{…}}`
    tail: Box<[u8]>,
}

impl EventTemplate {
    pub fn new(peer: &Peer<'_>, response_channel: Option<&str>) -> Self {
        let mut head = b"{\"id\":".to_vec();
        json_str(&mut head, peer.id);
        head.extend_from_slice(b",\"type\":\"");
        let mut mid = b"\",\"route\":".to_vec();
        json_str(&mut mid, peer.route);
        mid.extend_from_slice(b",\"remoteAddress\":");
        json_str(&mut mid, peer.remote_address);
        mid.extend_from_slice(b",\"remotePort\":");
        mid.extend_from_slice(itoa::Buffer::new().format(peer.remote_port).as_bytes());
        let mut tail = Vec::new();
        if let Some(rc) = response_channel {
            tail.extend_from_slice(b",\"responseChannel\":");
            json_str(&mut tail, rc);
        }
        if let Some(user) = peer.user {
            tail.extend_from_slice(b",\"user\":");
            json_str(&mut tail, user);
        }
        if let Some(claims) = peer.claims {
            tail.extend_from_slice(b",\"claims\":");
            tail.extend_from_slice(claims.get().as_bytes());
        }
        tail.push(b'}');
        Self {
            head: head.into(),
            mid: mid.into(),
            tail: tail.into(),
        }
    }

    pub fn encode(&self, kind: EventKind, data: Option<ClientData<'_>>) -> Vec<u8> {
        let data_len = match data {
            None => 0,
            Some(ClientData::Text(t)) => t.len() + 16,
            Some(ClientData::Binary(b)) => b.len().div_ceil(3) * 4 + 32,
        };
        let size = self.head.len() + self.mid.len() + self.tail.len() + data_len + 12;
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&self.head);
        out.extend_from_slice(kind.as_str().as_bytes());
        out.extend_from_slice(&self.mid);
        match data {
            None => {}
            Some(ClientData::Text(t)) => {
                out.extend_from_slice(b",\"message\":");
                json_str(&mut out, t);
            }
            Some(ClientData::Binary(b)) => {
                out.extend_from_slice(b",\"message\":\"");
                out.extend_from_slice(BASE64.encode(b).as_bytes());
                out.extend_from_slice(b"\",\"binary\":true");
            }
        }
        out.extend_from_slice(&self.tail);
        out
    }
}

/// Appends `s` as a JSON string, escaped exactly as serde_json escapes it; a string with
/// nothing to escape (the usual case) is copied whole.
fn json_str(out: &mut Vec<u8>, s: &str) {
    // `fold` rather than `any`: no early exit, so it compiles to a vector loop.
    let clean = !s.bytes().fold(false, |dirty, b| {
        dirty | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if clean {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, s).expect("writing to a Vec cannot fail");
    }
}

/// The answer to a reply for a connection this node does not have.
pub fn encode_not_connected(id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "id": id, "type": "notconnected" }))
        .expect("infallible")
}

const CANARY_TYPE: &str = "refract.canary";

/// The readiness probe a node publishes to its own response channel.
pub fn encode_canary(seq: u64) -> Vec<u8> {
    format!("{{\"type\":\"{CANARY_TYPE}\",\"seq\":{seq}}}").into_bytes()
}

/// Data for one client frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    Text(String),
    Binary(Vec<u8>),
}

/// What a reply asks the gateway to do to its client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Send(Payload),
    /// Send `last` (if any), then close with `code` and `reason`.
    Close {
        last: Option<Payload>,
        code: u16,
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub id: String,
    pub service: String,
    pub action: Action,
    /// Where to say `notconnected` if the client is gone.
    pub response_channel: Option<String>,
}

/// Anything that may arrive on a node's response channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    Reply(Reply),
    Canary(u64),
}

/// Why a reply was dropped. The codes are metric labels: fixed, never user input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply is larger than the configured limit")]
    TooLarge,
    #[error("reply is not valid JSON")]
    InvalidJson,
    #[error("a reply field has the wrong type")]
    WrongType,
    #[error("reply lacks field `{0}`")]
    MissingField(&'static str),
    #[error("reply `type` is unknown")]
    UnknownType,
    #[error("binary reply message is not valid base64")]
    InvalidBase64,
    #[error("close code is not one a server may send")]
    InvalidCloseCode,
}

impl ReplyError {
    pub fn code(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::InvalidJson => "invalid_json",
            Self::WrongType => "wrong_type",
            Self::MissingField(_) => "missing_field",
            Self::UnknownType => "unknown_type",
            Self::InvalidBase64 => "invalid_base64",
            Self::InvalidCloseCode => "invalid_close_code",
        }
    }
}

#[derive(Deserialize)]
struct RawReply<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    service: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(default)]
    binary: Option<bool>,
    #[serde(default)]
    code: Option<u16>,
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
    #[serde(rename = "responseChannel", borrow, default)]
    response_channel: Option<Cow<'a, str>>,
    /// Read only for canaries: on a reply it is the service's own business.
    #[serde(borrow, default)]
    seq: Option<&'a serde_json::value::RawValue>,
}

/// Parses one reply object. Anything else that is valid JSON is a wrong type, never read field
/// by field (serde would accept an array positionally).
fn parse_object(bytes: &[u8]) -> Result<RawReply<'_>, ReplyError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => ReplyError::WrongType,
                Err(_) => ReplyError::InvalidJson,
            },
        );
    }
    serde_json::from_slice(bytes).map_err(classify)
}

fn classify(e: serde_json::Error) -> ReplyError {
    match e.classify() {
        serde_json::error::Category::Data => ReplyError::WrongType,
        _ => ReplyError::InvalidJson,
    }
}

/// Close codes a server may put in a close frame (RFC 6455 7.4, and the 3000-4999 range).
pub fn is_sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A close reason must fit a control frame: at most 123 bytes, cut on a character boundary.
pub fn clamp_reason(reason: &str) -> &str {
    if reason.len() <= 123 {
        return reason;
    }
    let mut end = 123;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Decodes one message from the response channel.
pub fn decode_inbound(bytes: &[u8], max_size: usize) -> Result<Inbound, ReplyError> {
    if bytes.len() > max_size {
        return Err(ReplyError::TooLarge);
    }
    let raw = parse_object(bytes)?;
    if raw.kind.as_deref() == Some(CANARY_TYPE) {
        let seq = raw.seq.ok_or(ReplyError::MissingField("seq"))?;
        return seq
            .get()
            .parse()
            .map(Inbound::Canary)
            .map_err(|_| ReplyError::WrongType);
    }
    let id = raw.id.as_deref().ok_or(ReplyError::MissingField("id"))?;
    let service = raw
        .service
        .as_deref()
        .ok_or(ReplyError::MissingField("service"))?;
    let action = action(&raw)?;
    Ok(Inbound::Reply(Reply {
        id: id.to_owned(),
        service: service.to_owned(),
        action,
        response_channel: raw.response_channel.map(Cow::into_owned),
    }))
}

/// What one reply asks for; shared by Redis replies and HTTP response bodies.
fn action(raw: &RawReply<'_>) -> Result<Action, ReplyError> {
    let binary = raw.binary.unwrap_or(false);
    let payload = || -> Result<Option<Payload>, ReplyError> {
        match raw.message.as_deref() {
            None => Ok(None),
            Some(m) if binary => BASE64
                .decode(m.as_bytes())
                .map(|b| Some(Payload::Binary(b)))
                .map_err(|_| ReplyError::InvalidBase64),
            Some(m) => Ok(Some(Payload::Text(m.to_owned()))),
        }
    };
    match raw.kind.as_deref() {
        None | Some("message") => Ok(Action::Send(
            payload()?.ok_or(ReplyError::MissingField("message"))?,
        )),
        Some("drop" | "disconnect") => {
            let code = raw.code.unwrap_or(1000);
            if !is_sendable_close_code(code) {
                return Err(ReplyError::InvalidCloseCode);
            }
            Ok(Action::Close {
                last: payload()?,
                code,
                reason: clamp_reason(raw.reason.as_deref().unwrap_or("")).to_owned(),
            })
        }
        Some(_) => Err(ReplyError::UnknownType),
    }
}

/// Decodes a legacy HTTP service's response body: one WebSocketResponse, a JSON array of them,
/// or nothing (empty or whitespace). The replies are for the connection the request was about,
/// so `id` and `service` are optional here. One bad item rejects the whole body: a service that
/// sends garbage gets nothing through rather than half of it.
pub fn decode_http_body(bytes: &[u8], max_size: usize) -> Result<Vec<Action>, ReplyError> {
    if bytes.len() > max_size {
        return Err(ReplyError::TooLarge);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'[') {
        return Ok(vec![action(&parse_object(bytes)?)?]);
    }
    let items: Vec<&serde_json::value::RawValue> =
        serde_json::from_slice(bytes).map_err(classify)?;
    let raws = items
        .iter()
        .map(|item| parse_object(item.get().as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    raws.iter().map(action).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const PEER: Peer<'static> = Peer {
        id: "abc",
        route: "/quotes",
        remote_address: "10.1.2.3",
        remote_port: 5555,
        user: None,
        claims: None,
    };

    #[test]
    fn admitted_users_and_claims_are_added_to_events() {
        let claims =
            serde_json::value::RawValue::from_string(r#"{"sub":"al","role":"x"}"#.into()).unwrap();
        let peer = Peer {
            user: Some("al"),
            claims: Some(&claims),
            ..PEER
        };
        let v: Value =
            serde_json::from_slice(&encode_event(&peer, EventKind::Connect, None, Some("rc")))
                .unwrap();
        assert_eq!(v["user"], "al");
        assert_eq!(v["claims"], json!({"sub": "al", "role": "x"}));
    }

    fn event(kind: EventKind, data: Option<ClientData<'_>>, rc: Option<&str>) -> Value {
        serde_json::from_slice(&encode_event(&PEER, kind, data, rc)).unwrap()
    }

    #[test]
    fn connect_event_has_exactly_the_seed_fields() {
        let v = event(EventKind::Connect, None, Some("refract.responses.n1"));
        assert_eq!(
            v,
            json!({"id":"abc","type":"connect","route":"/quotes","remoteAddress":"10.1.2.3",
                   "remotePort":5555,"responseChannel":"refract.responses.n1"})
        );
    }

    #[test]
    fn message_and_disconnect_events() {
        let v = event(
            EventKind::Message,
            Some(ClientData::Text("hi \"x\"")),
            Some("rc"),
        );
        assert_eq!(v["type"], "message");
        assert_eq!(v["message"], "hi \"x\"");
        assert!(v.get("binary").is_none());
        let v = event(EventKind::Disconnect, None, Some("rc"));
        assert_eq!(v["type"], "disconnect");
        assert!(v.get("message").is_none());
    }

    #[test]
    fn binary_message_is_base64_with_flag() {
        let v = event(
            EventKind::Message,
            Some(ClientData::Binary(&[0, 255, 1])),
            Some("rc"),
        );
        assert_eq!(v["message"], "AP8B");
        assert_eq!(v["binary"], true);
    }

    #[test]
    fn http_events_have_no_response_channel() {
        let v = event(EventKind::Connect, None, None);
        assert!(v.get("responseChannel").is_none());
    }

    fn decode(v: Value) -> Result<Inbound, ReplyError> {
        decode_inbound(v.to_string().as_bytes(), 1 << 20)
    }

    #[test]
    fn message_reply_type_is_optional() {
        let want = Inbound::Reply(Reply {
            id: "abc".into(),
            service: "q".into(),
            action: Action::Send(Payload::Text("hello".into())),
            response_channel: None,
        });
        assert_eq!(
            decode(json!({"id":"abc","service":"q","message":"hello"})),
            Ok(want.clone())
        );
        assert_eq!(
            decode(json!({"id":"abc","type":"message","service":"q","message":"hello"})),
            Ok(want)
        );
    }

    #[test]
    fn binary_reply_is_decoded() {
        let r = decode(json!({"id":"a","service":"q","message":"AP8B","binary":true})).unwrap();
        let Inbound::Reply(r) = r else { panic!() };
        assert_eq!(r.action, Action::Send(Payload::Binary(vec![0, 255, 1])));
        assert_eq!(
            decode(json!({"id":"a","service":"q","message":"!!","binary":true})),
            Err(ReplyError::InvalidBase64)
        );
    }

    #[test]
    fn drop_and_disconnect_replies() {
        let Ok(Inbound::Reply(r)) = decode(json!({"id":"a","service":"q","type":"drop"})) else {
            panic!()
        };
        assert_eq!(
            r.action,
            Action::Close {
                last: None,
                code: 1000,
                reason: String::new()
            }
        );
        let Ok(Inbound::Reply(r)) = decode(json!({"id":"a","service":"q","type":"disconnect",
            "message":"bye","code":4000,"reason":"kicked","responseChannel":"svc"}))
        else {
            panic!()
        };
        assert_eq!(
            r.action,
            Action::Close {
                last: Some(Payload::Text("bye".into())),
                code: 4000,
                reason: "kicked".into()
            }
        );
        assert_eq!(r.response_channel.as_deref(), Some("svc"));
        assert_eq!(
            decode(json!({"id":"a","service":"q","type":"drop","code":1005})),
            Err(ReplyError::InvalidCloseCode)
        );
    }

    #[test]
    fn bad_replies_are_classified() {
        let max = 64;
        assert_eq!(
            decode_inbound(b"{not json", max),
            Err(ReplyError::InvalidJson)
        );
        assert_eq!(decode_inbound(b"", max), Err(ReplyError::InvalidJson));
        assert_eq!(
            decode_inbound(&[0xff, 0xfe], max),
            Err(ReplyError::InvalidJson)
        );
        assert_eq!(decode_inbound(&[b' '; 65], max), Err(ReplyError::TooLarge));
        assert_eq!(decode(json!([1, 2])), Err(ReplyError::WrongType));
        assert_eq!(
            decode(json!({"id":7,"service":"q","message":"m"})),
            Err(ReplyError::WrongType)
        );
        assert_eq!(
            decode(json!({"id":"a","service":"q","message":{"x":1}})),
            Err(ReplyError::WrongType)
        );
        assert_eq!(
            decode(json!({"service":"q","message":"m"})),
            Err(ReplyError::MissingField("id"))
        );
        assert_eq!(
            decode(json!({"id":"a","message":"m"})),
            Err(ReplyError::MissingField("service"))
        );
        assert_eq!(
            decode(json!({"id":"a","service":"q"})),
            Err(ReplyError::MissingField("message"))
        );
        assert_eq!(
            decode(json!({"id":"a","service":"q","type":"explode","message":"m"})),
            Err(ReplyError::UnknownType)
        );
        assert_eq!(
            decode(json!({"id":"a","service":"q","type":"drop","code":70000})),
            Err(ReplyError::WrongType)
        );
    }

    #[test]
    fn deep_nesting_is_rejected_not_overflowed() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(decode_inbound(deep.as_bytes(), usize::MAX).is_err());
        let deep = format!(
            "{{\"id\":\"a\",\"x\":{}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(decode_inbound(deep.as_bytes(), usize::MAX).is_err());
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let Ok(Inbound::Reply(r)) = decode_inbound(
            br#"{"id":"a\u0062","service":"q","message":"line\nnext \u00e9"}"#,
            1024,
        ) else {
            panic!()
        };
        assert_eq!(r.id, "ab");
        assert_eq!(r.action, Action::Send(Payload::Text("line\nnext é".into())));
    }

    #[test]
    fn http_bodies_are_one_reply_an_array_or_nothing() {
        let max = 1 << 20;
        assert_eq!(decode_http_body(b"", max), Ok(vec![]));
        assert_eq!(decode_http_body(b" \n ", max), Ok(vec![]));
        assert_eq!(decode_http_body(b"[]", max), Ok(vec![]));
        assert_eq!(
            decode_http_body(br#"{"message":"hi"}"#, max),
            Ok(vec![Action::Send(Payload::Text("hi".into()))])
        );
        assert_eq!(
            decode_http_body(
                br#" [{"message":"a"},{"type":"drop","message":"b","code":4001}]"#,
                max
            ),
            Ok(vec![
                Action::Send(Payload::Text("a".into())),
                Action::Close {
                    last: Some(Payload::Text("b".into())),
                    code: 4001,
                    reason: String::new()
                }
            ])
        );
        assert_eq!(
            decode_http_body(b"<html>oops</html>", max),
            Err(ReplyError::InvalidJson)
        );
        assert_eq!(decode_http_body(b"42", max), Err(ReplyError::WrongType));
        assert_eq!(
            decode_http_body(br#"[{"message":"a"},{"message":7}]"#, max),
            Err(ReplyError::WrongType)
        );
        assert_eq!(
            decode_http_body(br#"[{}]"#, max),
            Err(ReplyError::MissingField("message"))
        );
        assert_eq!(decode_http_body(&[b' '; 10], 5), Err(ReplyError::TooLarge));
    }

    #[test]
    fn canary_round_trips() {
        assert_eq!(
            decode_inbound(&encode_canary(42), 1024),
            Ok(Inbound::Canary(42))
        );
    }

    #[test]
    fn not_connected_shape() {
        let v: Value = serde_json::from_slice(&encode_not_connected("x")).unwrap();
        assert_eq!(v, json!({"id":"x","type":"notconnected"}));
    }

    #[test]
    fn reasons_are_clamped_on_char_boundaries() {
        let long = "é".repeat(100);
        let r = clamp_reason(&long);
        assert!(r.len() <= 123 && r.chars().all(|c| c == 'é'));
        assert_eq!(clamp_reason("short"), "short");
    }
}
