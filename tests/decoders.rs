//! Fuzzing, and a corpus of nasty inputs, for the pure Prism protocol in `refract::prism`.
//!
//! What this file proves, through the public API only:
//!
//! - **No panics.** `decode_inbound` and `decode_http_body` return a `Result` for arbitrary bytes,
//!   mutated and truncated valid replies, arbitrary JSON, and objects whose fields have any type.
//! - **Exact classification.** Every JSON object decodes exactly as [`model`] says. The model is
//!   the reply table of `docs/routes.md` written out independently of `src/prism.rs`.
//! - **Round trips.** Valid replies (any Unicode, any bytes, any sendable close code, unknown extra
//!   fields) decode to exactly what they mean, and other close codes to `InvalidCloseCode`; HTTP
//!   bodies give their actions in order. Events, canaries and `notconnected` answers are JSON with
//!   exactly the documented keys, and what they carry reads back to the input.
//! - **Bounds.** Input over `max` is `TooLarge` before any parsing; `clamp_reason` keeps at most
//!   123 bytes and cuts on a character boundary; 100k-deep nesting and 10 MB payloads neither
//!   recurse nor blow up.
//! - **Regressions.** Every file under `tests/corpus/` has a test pinning its exact outcome (see
//!   [`corpus`]), and a file without one fails the suite. Huge inputs are generated in code.
//!
//! Known bugs are pinned by `#[ignore = "bug: ..."]` tests that assert the intended outcome; run
//! them with `cargo test --test decoders -- --ignored`. Proptest writes no regression files here:
//! a shrunk failure is added to the corpus as a named case instead.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use proptest::prelude::*;
use proptest::sample::Index;
use refract::prism::*;
use serde_json::{Map, Value, json};

/// The size limit for everything that is not about size.
const MAX: usize = 1 << 20;

/// Every field a reply or canary may carry; anything else is an unknown field.
const FIELDS: [&str; 9] = [
    "id",
    "type",
    "service",
    "message",
    "binary",
    "code",
    "reason",
    "responseChannel",
    "seq",
];

/// Bounded runs, so the whole file takes seconds in a debug build, and no regression files:
/// failures become corpus cases.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A reply from client `a` of service `q`.
fn reply(action: Action) -> Result<Inbound, ReplyError> {
    Ok(Inbound::Reply(Reply {
        id: "a".into(),
        service: "q".into(),
        action,
        response_channel: None,
    }))
}

fn text(t: &str) -> Payload {
    Payload::Text(t.into())
}

fn send(t: &str) -> Result<Inbound, ReplyError> {
    reply(Action::Send(text(t)))
}

fn close(code: u16, reason: &str) -> Result<Inbound, ReplyError> {
    reply(Action::Close {
        last: None,
        code,
        reason: reason.into(),
    })
}

/// `docs/routes.md`, "Replies: services to gateway", as code: what the decoders must make of a
/// JSON object. Fields are type-checked first (`null` counts as absent), then a canary is
/// recognised, then `id`, `service` and the action are checked, in that order.
mod model {
    use super::*;

    /// The close codes the docs allow in a `drop`/`disconnect`.
    pub fn sendable(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// The longest prefix of at most 123 bytes that ends on a character boundary.
    pub fn clamp(reason: &str) -> &str {
        let end = reason
            .char_indices()
            .map(|(i, c)| i + c.len_utf8())
            .take_while(|&end| end <= 123)
            .last()
            .unwrap_or(0);
        &reason[..end]
    }

    struct Fields<'a> {
        id: Option<&'a str>,
        kind: Option<&'a str>,
        service: Option<&'a str>,
        message: Option<&'a str>,
        binary: Option<bool>,
        code: Option<u16>,
        reason: Option<&'a str>,
        response_channel: Option<&'a str>,
        seq: Option<&'a Value>,
    }

    fn string<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, ReplyError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ReplyError::WrongType),
        }
    }

    fn unsigned(obj: &Map<String, Value>, key: &str, max: u64) -> Result<Option<u64>, ReplyError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            // Floats, even integral ones like `1000.0`, are the wrong type.
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|&n| n <= max)
                .map(Some)
                .ok_or(ReplyError::WrongType),
            Some(_) => Err(ReplyError::WrongType),
        }
    }

    impl<'a> Fields<'a> {
        fn typed(obj: &'a Map<String, Value>) -> Result<Self, ReplyError> {
            Ok(Fields {
                id: string(obj, "id")?,
                kind: string(obj, "type")?,
                service: string(obj, "service")?,
                message: string(obj, "message")?,
                binary: match obj.get("binary") {
                    None | Some(Value::Null) => None,
                    Some(Value::Bool(b)) => Some(*b),
                    Some(_) => return Err(ReplyError::WrongType),
                },
                code: unsigned(obj, "code", u16::MAX.into())?.map(|c| c as u16),
                reason: string(obj, "reason")?,
                response_channel: string(obj, "responseChannel")?,
                // Only a canary reads `seq` (see `inbound`); on a reply it is the service's own.
                seq: obj.get("seq"),
            })
        }

        fn payload(&self) -> Result<Option<Payload>, ReplyError> {
            match self.message {
                None => Ok(None),
                Some(m) if self.binary == Some(true) => BASE64
                    .decode(m)
                    .map(|b| Some(Payload::Binary(b)))
                    .map_err(|_| ReplyError::InvalidBase64),
                Some(m) => Ok(Some(Payload::Text(m.to_owned()))),
            }
        }

        fn action(&self) -> Result<Action, ReplyError> {
            match self.kind {
                None | Some("message") => self
                    .payload()?
                    .map(Action::Send)
                    .ok_or(ReplyError::MissingField("message")),
                Some("drop" | "disconnect") => {
                    let code = self.code.unwrap_or(1000);
                    if !sendable(code) {
                        return Err(ReplyError::InvalidCloseCode);
                    }
                    Ok(Action::Close {
                        last: self.payload()?,
                        code,
                        reason: clamp(self.reason.unwrap_or("")).to_owned(),
                    })
                }
                Some(_) => Err(ReplyError::UnknownType),
            }
        }
    }

    /// What `decode_inbound` must return for this object.
    pub fn inbound(obj: &Map<String, Value>) -> Result<Inbound, ReplyError> {
        let f = Fields::typed(obj)?;
        if f.kind == Some("refract.canary") {
            return match f.seq {
                None | Some(Value::Null) => Err(ReplyError::MissingField("seq")),
                Some(v) => v.as_u64().map(Inbound::Canary).ok_or(ReplyError::WrongType),
            };
        }
        let id = f.id.ok_or(ReplyError::MissingField("id"))?;
        let service = f.service.ok_or(ReplyError::MissingField("service"))?;
        Ok(Inbound::Reply(Reply {
            id: id.to_owned(),
            service: service.to_owned(),
            action: f.action()?,
            response_channel: f.response_channel.map(str::to_owned),
        }))
    }

    /// What `decode_http_body` must return for this JSON value, or `None` where the model does not
    /// say (an array item that is itself an array: see `corpus::http::nested_array_item`). Every
    /// item is type-checked before any item's action is.
    pub fn http_body(v: &Value) -> Option<Result<Vec<Action>, ReplyError>> {
        let items = match v {
            Value::Array(items) => items.iter().collect(),
            v => vec![v],
        };
        let mut typed = Vec::new();
        for item in items {
            match item {
                Value::Object(obj) => match Fields::typed(obj) {
                    Ok(f) => typed.push(f),
                    Err(e) => return Some(Err(e)),
                },
                _ => return Some(Err(ReplyError::WrongType)),
            }
        }
        Some(typed.iter().map(Fields::action).collect())
    }
}

/// Text that is hard to carry through JSON: quotes, backslashes, control characters, NUL, line
/// separators, BOMs, emoji and arbitrary scalar values; up to `max_chars` characters.
///
/// Characters are drawn as `u32` seeds rather than with `any::<char>()`, which is several times
/// slower in a debug build.
fn nasty_string(max_chars: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<u32>(), 0..=max_chars)
        .prop_map(|seeds| seeds.into_iter().map(nasty_char).collect())
}

/// A quarter of seeds give lowercase ASCII (so failures shrink to `a`), half a character from
/// the nasty table, and a quarter any scalar value.
fn nasty_char(seed: u32) -> char {
    const NASTY: &str = concat!(
        "\"\\/\0\n\r\t\u{8}\u{c}\u{1f}\u{7f}\u{80}",
        "\u{2028}\u{2029}\u{feff}\u{fffd}\u{ffff}é€😀\u{10ffff}",
    );
    let pick = seed >> 2;
    match seed & 3 {
        0 => char::from(b'a' + (pick % 26) as u8),
        1 | 2 => NASTY
            .chars()
            .nth(pick as usize % NASTY.chars().count())
            .unwrap(),
        // Surrogates are not scalar values.
        _ => char::from_u32(pick % 0x11_0000).unwrap_or('\u{fffd}'),
    }
}

fn sendable_code() -> impl Strategy<Value = u16> {
    prop_oneof![1000u16..=1003, 1007u16..=1014, 3000u16..=4999]
}

fn unsendable_code() -> impl Strategy<Value = u16> {
    prop_oneof![
        0u16..1000,
        1004u16..=1006,
        1015u16..3000,
        5000u16..=u16::MAX
    ]
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        nasty_string(24).prop_map(Payload::Text),
        prop::collection::vec(any::<u8>(), 0..48).prop_map(Payload::Binary),
    ]
}

/// Object keys: mostly the meaningful ones, sometimes anything.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(FIELDS.to_vec()).prop_map(String::from),
        nasty_string(8),
    ]
}

/// Arbitrary JSON, nested at most `depth` deep. Built level by level once, rather than with
/// `prop_recursive`, which rebuilds its strategies for every value (slow in a debug build).
fn json_value(depth: u32) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Non-finite floats become `null`.
        any::<f64>().prop_map(Value::from),
        nasty_string(12).prop_map(Value::from),
    ]
    .boxed();
    let mut value = leaf.clone();
    for _ in 0..depth {
        value = prop_oneof![
            3 => leaf.clone(),
            1 => prop::collection::vec(value.clone(), 0..5).prop_map(Value::Array),
            1 => prop::collection::vec((key(), value), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
        .boxed();
    }
    value
}

/// A value of any JSON type, with the numbers a decoder trips on: huge, negative, fractional.
fn mixed_value() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop::sample::select(vec![
            "message",
            "drop",
            "disconnect",
            "refract.canary",
            "Drop",
            "",
            "AP8B",
            "AP8",
            "-_8=",
            "!!",
            "true",
            "1000",
        ])
        .prop_map(Value::from),
        nasty_string(12).prop_map(Value::from),
        sendable_code().prop_map(Value::from),
        unsendable_code().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (i64::MIN..0).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec![1e300, -0.0, 0.5, 1000.0, f64::MAX, f64::MIN_POSITIVE])
            .prop_map(Value::from),
        json_value(2),
    ]
    .boxed()
}

/// A value of the type `field` should have, and a meaningful one more often than chance.
fn right_type(field: &str) -> BoxedStrategy<Value> {
    match field {
        "type" => prop_oneof![
            prop::sample::select(vec![
                "message",
                "drop",
                "disconnect",
                "refract.canary",
                "Drop",
                "notconnected",
            ])
            .prop_map(Value::from),
            nasty_string(8).prop_map(Value::from),
        ]
        .boxed(),
        "message" => prop_oneof![
            prop::sample::select(vec!["AP8B", "", "AP8", "!!", "+/8=", "AP 8B"])
                .prop_map(Value::from),
            nasty_string(12).prop_map(Value::from),
        ]
        .boxed(),
        "binary" => any::<bool>().prop_map(Value::from).boxed(),
        "code" => prop_oneof![sendable_code(), unsendable_code()]
            .prop_map(Value::from)
            .boxed(),
        "seq" => any::<u64>().prop_map(Value::from).boxed(),
        _ => nasty_string(12).prop_map(Value::from).boxed(),
    }
}

/// An object whose known fields are each absent, of the right type, or of any type at all, plus
/// a few unknown fields.
fn mixed_object() -> impl Strategy<Value = Map<String, Value>> {
    let fields: Vec<_> = FIELDS
        .iter()
        .map(|&f| {
            let value = prop_oneof![3 => right_type(f), 1 => mixed_value()];
            prop::option::weighted(0.6, value).prop_map(move |v| v.map(|v| (f.to_owned(), v)))
        })
        .collect();
    (fields, unknown_fields())
        .prop_map(|(fields, extra)| fields.into_iter().flatten().chain(extra).collect())
}

/// Fields a service may add: ignored by the gateway, whatever they hold.
fn unknown_fields() -> impl Strategy<Value = Vec<(String, Value)>> {
    let name = nasty_string(8).prop_filter("a known field", |k| !FIELDS.contains(&k.as_str()));
    prop::collection::vec((name, json_value(1)), 0..3)
}

/// A valid reply as a JSON object, and the `Reply` it means.
fn valid_reply() -> impl Strategy<Value = (Map<String, Value>, Reply)> {
    (
        (
            nasty_string(16),
            nasty_string(16),
            0..4u8,
            payload(),
            any::<bool>(),
        ),
        (
            prop::option::of(sendable_code()),
            prop::option::of(nasty_string(80)),
            prop::option::of(nasty_string(16)),
            any::<bool>(),
            unknown_fields(),
        ),
    )
        .prop_map(
            |((id, service, kind, payload, with_message), (code, reason, rc, explicit, extra))| {
                let mut obj: Map<String, Value> = extra.into_iter().collect();
                obj.insert("id".into(), id.clone().into());
                obj.insert("service".into(), service.clone().into());
                let close = kind >= 2;
                match kind {
                    1 => obj.insert("type".into(), "message".into()),
                    2 => obj.insert("type".into(), "drop".into()),
                    3 => obj.insert("type".into(), "disconnect".into()),
                    _ => None,
                };
                let last = (!close || with_message).then_some(payload);
                match &last {
                    Some(Payload::Text(t)) => {
                        obj.insert("message".into(), t.clone().into());
                        if explicit {
                            obj.insert("binary".into(), false.into());
                        }
                    }
                    Some(Payload::Binary(b)) => {
                        obj.insert("message".into(), BASE64.encode(b).into());
                        obj.insert("binary".into(), true.into());
                    }
                    // `binary` without a message means nothing.
                    None if explicit => {
                        obj.insert("binary".into(), true.into());
                    }
                    None => {}
                }
                // `code` and `reason` are ignored on messages but still type-checked.
                if let Some(code) = code {
                    obj.insert("code".into(), code.into());
                }
                if let Some(reason) = &reason {
                    obj.insert("reason".into(), reason.clone().into());
                }
                if let Some(rc) = &rc {
                    obj.insert("responseChannel".into(), rc.clone().into());
                }
                let action = if close {
                    Action::Close {
                        last,
                        code: code.unwrap_or(1000),
                        reason: model::clamp(reason.as_deref().unwrap_or("")).to_owned(),
                    }
                } else {
                    Action::Send(last.unwrap())
                };
                let reply = Reply {
                    id,
                    service,
                    action,
                    response_channel: rc,
                };
                (obj, reply)
            },
        )
}

/// A valid reply's bytes with a few bytes replaced, inserted or cut off.
fn mutated_reply() -> impl Strategy<Value = Vec<u8>> {
    let edit = (any::<Index>(), any::<u8>(), 0..3u8);
    (valid_reply(), prop::collection::vec(edit, 1..6)).prop_map(|((obj, _), edits)| {
        let mut bytes = serde_json::to_vec(&obj).unwrap();
        for (at, byte, op) in edits {
            if bytes.is_empty() {
                bytes.push(byte);
                continue;
            }
            let at = at.index(bytes.len());
            match op {
                0 => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ => bytes.truncate(at),
            }
        }
        bytes
    })
}

fn json_whitespace() -> impl Strategy<Value = String> {
    "[ \t\r\n]{0,8}"
}

fn to_bytes(v: &Value, pretty: bool) -> Vec<u8> {
    if pretty {
        serde_json::to_vec_pretty(v).unwrap()
    } else {
        serde_json::to_vec(v).unwrap()
    }
}

proptest! {
    // Cheap cases: many of them.
    #![proptest_config(config(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let inbound = decode_inbound(&bytes, MAX);
        prop_assert_ne!(inbound, Err(ReplyError::TooLarge));
        let http = decode_http_body(&bytes, MAX);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            prop_assert_eq!(http, Ok(vec![]));
        }
    }

    #[test]
    fn http_whitespace_is_nothing(ws in "[ \t\r\n]{0,64}") {
        prop_assert_eq!(decode_http_body(ws.as_bytes(), MAX), Ok(vec![]));
    }

    #[test]
    fn canaries_and_not_connected_answers_round_trip(seq: u64, id in nasty_string(16)) {
        let canary = encode_canary(seq);
        let v: Value = serde_json::from_slice(&canary).unwrap();
        prop_assert_eq!(v, json!({"type": "refract.canary", "seq": seq}));
        prop_assert_eq!(decode_inbound(&canary, MAX), Ok(Inbound::Canary(seq)));
        let v: Value = serde_json::from_slice(&encode_not_connected(&id)).unwrap();
        prop_assert_eq!(v, json!({"id": id, "type": "notconnected"}));
    }

    #[test]
    fn reasons_are_clamped_on_char_boundaries(
        reason in prop_oneof![
            nasty_string(200),
            prop::collection::vec(prop::sample::select(vec!['a', 'é', '€', '😀']), 0..100)
                .prop_map(|c| c.into_iter().collect::<String>()),
        ],
    ) {
        let out = clamp_reason(&reason);
        prop_assert!(out.len() <= 123);
        prop_assert!(reason.starts_with(out));
        prop_assert!(reason.is_char_boundary(out.len()));
        // And nothing more is cut than the boundary needs.
        prop_assert_eq!(out, model::clamp(&reason));
    }
}

proptest! {
    // The decoders' hardest inputs.
    #![proptest_config(config(1000))]

    #[test]
    fn mutated_replies_never_panic(bytes in mutated_reply()) {
        let _ = decode_inbound(&bytes, MAX);
        let _ = decode_http_body(&bytes, MAX);
        let mut body = b"[".to_vec();
        body.extend_from_slice(&bytes);
        let _ = decode_http_body(&body, MAX);
    }

    #[test]
    fn mixed_type_fields_are_classified(obj in mixed_object()) {
        let bytes = serde_json::to_vec(&obj).unwrap();
        prop_assert_eq!(decode_inbound(&bytes, MAX), model::inbound(&obj));
        let v = Value::Object(obj);
        prop_assert_eq!(Some(decode_http_body(&bytes, MAX)), model::http_body(&v));
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_json_is_classified(v in json_value(4), pretty: bool) {
        let bytes = to_bytes(&v, pretty);
        let got = decode_inbound(&bytes, MAX);
        match &v {
            Value::Object(obj) => prop_assert_eq!(got, model::inbound(obj)),
            _ => prop_assert_eq!(got, Err(ReplyError::WrongType)),
        }
        let got = decode_http_body(&bytes, MAX);
        if let Some(want) = model::http_body(&v) {
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn valid_replies_round_trip((obj, reply) in valid_reply(), pretty: bool) {
        let bytes = to_bytes(&Value::Object(obj), pretty);
        prop_assert_eq!(decode_inbound(&bytes, MAX), Ok(Inbound::Reply(reply)));
    }

    #[test]
    fn events_carry_exactly_the_documented_keys(
        (id, route, address) in (nasty_string(16), nasty_string(16), nasty_string(16)),
        port: u16,
        kind in prop::sample::select(EventKind::ALL.to_vec()),
        data in prop::option::of(payload()),
        rc in prop::option::of(nasty_string(16)),
        user in prop::option::of(nasty_string(8)),
        claims in prop::option::of(nasty_string(8)),
    ) {
        // Admission's additions: `user`, and the claims as a JSON object.
        let claims = claims.map(|c| {
            serde_json::value::RawValue::from_string(json!({"sub": c, "n": 1}).to_string()).unwrap()
        });
        let peer = Peer {
            id: &id,
            route: &route,
            remote_address: &address,
            remote_port: port,
            user: user.as_deref(),
            claims: claims.as_deref(),
        };
        let client = data.as_ref().map(|p| match p {
            Payload::Text(t) => ClientData::Text(t),
            Payload::Binary(b) => ClientData::Binary(b),
        });
        let bytes = encode_event(&peer, kind, client, rc.as_deref());
        let got: Value = serde_json::from_slice(&bytes)
            .map_err(|e| TestCaseError::fail(format!("not JSON: {e}")))?;
        let kind = match kind {
            EventKind::Connect => "connect",
            EventKind::Message => "message",
            EventKind::Disconnect => "disconnect",
        };
        let mut want = json!({
            "id": id, "type": kind, "route": route, "remoteAddress": address, "remotePort": port
        });
        match &data {
            Some(Payload::Text(t)) => want["message"] = t.as_str().into(),
            Some(Payload::Binary(b)) => {
                want["message"] = BASE64.encode(b).into();
                want["binary"] = true.into();
                let back = BASE64.decode(got["message"].as_str().unwrap_or_default());
                prop_assert_eq!(back.as_ref(), Ok(b));
            }
            None => {}
        }
        if let Some(rc) = &rc {
            want["responseChannel"] = rc.as_str().into();
        }
        if let Some(user) = &user {
            want["user"] = user.as_str().into();
        }
        if let Some(claims) = &claims {
            want["claims"] = serde_json::from_str(claims.get()).unwrap();
        }
        prop_assert_eq!(got, want);
    }
}

proptest! {
    // Replies are slow to generate in a debug build; these need fewer of them.
    #![proptest_config(config(256))]

    #[test]
    fn truncated_replies_are_invalid_json((obj, _) in valid_reply(), cut in any::<Index>()) {
        let bytes = serde_json::to_vec(&obj).unwrap();
        let prefix = &bytes[..cut.index(bytes.len())];
        // An empty or all-whitespace body is "nothing" to the HTTP decoder; `{` is neither.
        prop_assert_eq!(decode_inbound(prefix, MAX), Err(ReplyError::InvalidJson));
        if !prefix.is_empty() {
            prop_assert_eq!(decode_http_body(prefix, MAX), Err(ReplyError::InvalidJson));
        }
    }

    #[test]
    fn unsendable_close_codes_are_refused(
        (mut obj, _) in valid_reply(),
        kind in prop::sample::select(vec!["drop", "disconnect"]),
        code in unsendable_code(),
    ) {
        obj.insert("type".into(), kind.into());
        obj.insert("code".into(), code.into());
        let bytes = serde_json::to_vec(&obj).unwrap();
        prop_assert_eq!(decode_inbound(&bytes, MAX), Err(ReplyError::InvalidCloseCode));
        prop_assert_eq!(decode_http_body(&bytes, MAX), Err(ReplyError::InvalidCloseCode));
    }

    #[test]
    fn http_arrays_keep_their_order(
        replies in prop::collection::vec((valid_reply(), any::<bool>()), 0..6),
        (before, after) in (json_whitespace(), json_whitespace()),
        pretty: bool,
    ) {
        let mut items = Vec::new();
        let mut want = Vec::new();
        for ((mut obj, reply), anonymous) in replies {
            // The body answers for one connection, so `id` and `service` may be left out.
            if anonymous {
                obj.remove("id");
                obj.remove("service");
            }
            items.push(Value::Object(obj));
            want.push(reply.action);
        }
        let mut body = before.into_bytes();
        body.extend(to_bytes(&Value::Array(items), pretty));
        body.extend(after.into_bytes());
        prop_assert_eq!(decode_http_body(&body, MAX), Ok(want));
    }

    #[test]
    fn http_single_object_is_one_action(
        (obj, reply) in valid_reply(),
        before in json_whitespace(),
        pretty: bool,
    ) {
        let mut body = before.into_bytes();
        body.extend(to_bytes(&Value::Object(obj), pretty));
        prop_assert_eq!(decode_http_body(&body, MAX), Ok(vec![reply.action]));
    }

    #[test]
    fn over_the_limit_is_too_large_before_parsing(
        bytes in prop::collection::vec(any::<u8>(), 1..256),
        (obj, reply) in valid_reply(),
        cut in any::<Index>(),
    ) {
        // Garbage over the limit is refused unread: parsed, it would mostly be `InvalidJson`.
        let max = cut.index(bytes.len());
        prop_assert_eq!(decode_inbound(&bytes, max), Err(ReplyError::TooLarge));
        prop_assert_eq!(decode_http_body(&bytes, max), Err(ReplyError::TooLarge));
        prop_assert_ne!(decode_inbound(&bytes, bytes.len()), Err(ReplyError::TooLarge));
        prop_assert_ne!(decode_http_body(&bytes, bytes.len()), Err(ReplyError::TooLarge));
        // The limit is inclusive.
        let valid = serde_json::to_vec(&obj).unwrap();
        let n = valid.len();
        prop_assert_eq!(decode_inbound(&valid, n - 1), Err(ReplyError::TooLarge));
        prop_assert_eq!(decode_http_body(&valid, n - 1), Err(ReplyError::TooLarge));
        prop_assert_eq!(decode_inbound(&valid, n), Ok(Inbound::Reply(reply.clone())));
        prop_assert_eq!(decode_http_body(&valid, n), Ok(vec![reply.action]));
    }
}

#[test]
fn sendable_close_codes_are_the_documented_ones() {
    for code in 0..=u16::MAX {
        assert_eq!(
            is_sendable_close_code(code),
            model::sendable(code),
            "{code}"
        );
    }
}

#[test]
fn deep_nesting_is_refused_or_skipped_without_recursion() {
    const DEPTH: usize = 100_000;
    let arrays = || format!("{}{}", "[".repeat(DEPTH), "]".repeat(DEPTH));
    let objects = || format!("{}1{}", "{\"a\":".repeat(DEPTH), "}".repeat(DEPTH));
    let reply_with = |x: &str| format!(r#"{{"id":"a","service":"q","message":"m","x":{x}}}"#);
    let open = "[".repeat(DEPTH);

    // A reply that is 100k nested arrays is valid JSON of the wrong shape, skipped without
    // recursion; left unclosed, it is not JSON at all.
    assert_eq!(
        decode_inbound(arrays().as_bytes(), usize::MAX),
        Err(ReplyError::WrongType)
    );
    assert_eq!(
        decode_inbound(open.as_bytes(), usize::MAX),
        Err(ReplyError::InvalidJson)
    );
    assert_eq!(
        decode_http_body(arrays().as_bytes(), usize::MAX),
        Err(ReplyError::WrongType)
    );
    // A known field that opens them is the wrong type at its first `[`.
    let in_message = format!(r#"{{"id":"a","service":"q","message":{}}}"#, arrays());
    assert_eq!(
        decode_inbound(in_message.as_bytes(), usize::MAX),
        Err(ReplyError::WrongType)
    );

    // Unknown fields are skipped without recursing, however deep; left open, the input ends
    // inside them.
    for x in [arrays(), objects()] {
        let reply = reply_with(&x);
        assert_eq!(decode_inbound(reply.as_bytes(), usize::MAX), send("m"));
        let body = format!("[{reply}]");
        assert_eq!(
            decode_http_body(body.as_bytes(), usize::MAX),
            Ok(vec![Action::Send(text("m"))])
        );
    }
    let unbalanced = reply_with(&open);
    assert_eq!(
        decode_inbound(unbalanced.as_bytes(), usize::MAX),
        Err(ReplyError::InvalidJson)
    );
    let unbalanced = format!("[{unbalanced}]");
    assert_eq!(
        decode_http_body(unbalanced.as_bytes(), usize::MAX),
        Err(ReplyError::InvalidJson)
    );
}

#[test]
fn ten_megabyte_replies_are_too_large_or_decoded_whole() {
    const SIZE: usize = 10 << 20;
    // Text with escapes and multi-byte characters all the way through, and bytes of every value.
    // The JSON is put together by hand: serializing 10 MB takes most of a second in a debug build.
    let chunk = format!("é😀{}\"\\\n\u{0}", "x".repeat(1000));
    let quoted = serde_json::to_string(&chunk).unwrap();
    let escaped = &quoted[1..quoted.len() - 1];
    let repeats = SIZE / escaped.len();
    let text = format!(
        r#"{{"id":"a","service":"q","message":"{}"}}"#,
        escaped.repeat(repeats)
    );
    let bytes: Vec<u8> = (0..=255u8).cycle().take(SIZE / 4 * 3).collect();
    let binary = format!(
        r#"{{"id":"a","service":"q","message":"{}","binary":true}}"#,
        BASE64.encode(&bytes)
    );
    let cases = [
        (text, Payload::Text(chunk.repeat(repeats))),
        (binary, Payload::Binary(bytes)),
    ];
    for (json, payload) in cases {
        let mut input = json.into_bytes();
        let n = input.len();
        assert!(n >= SIZE - 2048, "{n}");
        assert_eq!(decode_inbound(&input, n - 1), Err(ReplyError::TooLarge));
        assert_eq!(decode_http_body(&input, n - 1), Err(ReplyError::TooLarge));
        let action = Action::Send(payload);
        assert_eq!(decode_inbound(&input, n), reply(action.clone()));
        assert_eq!(decode_http_body(&input, n), Ok(vec![action]));
        // Garbage after it: refused unread when over the limit, refused as JSON when not.
        input.extend_from_slice(b"\xff garbage");
        assert_eq!(decode_inbound(&input, n), Err(ReplyError::TooLarge));
        assert_eq!(
            decode_inbound(&input, usize::MAX),
            Err(ReplyError::InvalidJson)
        );
    }
}

/// Every file under `tests/corpus/`, fed to one decoder with the limit [`MAX`], and the exact
/// outcome. The file is `tests/corpus/<decoder dir>/<test name>.json`.
mod corpus {
    use super::*;

    macro_rules! corpus {
        ($decoder:ident, $dir:literal; $($(#[$attr:meta])* $name:ident => $want:expr;)*) => {
            $(
                #[test]
                $(#[$attr])*
                fn $name() {
                    let bytes: &[u8] =
                        include_bytes!(concat!("corpus/", $dir, "/", stringify!($name), ".json"));
                    let file = concat!("tests/corpus/", $dir, "/", stringify!($name), ".json");
                    assert_eq!($decoder(bytes, MAX), $want, "{file}");
                }
            )*
            /// The files covered above, to catch a corpus file with no case.
            pub const FILES: &[&str] = &[$(concat!($dir, "/", stringify!($name), ".json")),*];
        };
    }

    use ReplyError::*;

    pub mod inbound {
        use super::*;

        corpus! { decode_inbound, "inbound";
            // Not a reply at all.
            empty => Err(InvalidJson);
            whitespace => Err(InvalidJson);
            null => Err(WrongType);
            string => Err(WrongType);
            number => Err(WrongType);
            empty_object => Err(MissingField("id"));
            // Fields of the wrong type; `null` is the same as absent.
            id_number => Err(WrongType);
            id_array => Err(WrongType);
            id_object => Err(WrongType);
            id_bool => Err(WrongType);
            id_null => Err(MissingField("id"));
            service_missing => Err(MissingField("service"));
            message_object => Err(WrongType);
            message_null => Err(MissingField("message"));
            response_channel_number => Err(WrongType);
            reason_number => Err(WrongType);
            // Close codes. serde_json refuses `1e400` as out of range while reading the number,
            // so it counts as invalid JSON; an integer that only fits a float is the wrong type.
            code_1e400 => Err(InvalidJson);
            code_huge_integer => Err(WrongType);
            code_65536 => Err(WrongType);
            code_65535 => Err(InvalidCloseCode);
            code_negative => Err(WrongType);
            code_float => Err(WrongType);
            code_exponent => Err(WrongType);
            code_leading_zero => Err(InvalidJson);
            code_string => Err(WrongType);
            code_1005 => Err(InvalidCloseCode);
            code_0 => Err(InvalidCloseCode);
            code_ignored_on_message => send("m");
            // Canary sequence numbers.
            seq_1e400 => Err(WrongType);
            seq_huge_integer => Err(WrongType);
            seq_u64_max => Ok(Inbound::Canary(u64::MAX));
            seq_u64_max_plus_one => Err(WrongType);
            seq_negative => Err(WrongType);
            canary_without_seq => Err(MissingField("seq"));
            canary_with_reply_fields => Ok(Inbound::Canary(9));
            // Broken UTF-8 and escapes. Unknown fields are skipped unvalidated, which is fine:
            // nothing reads them.
            invalid_utf8_in_message => Err(InvalidJson);
            overlong_utf8_in_message => Err(InvalidJson);
            utf8_surrogate_in_message => Err(InvalidJson);
            invalid_utf8_outside_strings => Err(InvalidJson);
            invalid_utf8_in_unknown_field => send("m");
            lone_high_surrogate => Err(InvalidJson);
            lone_low_surrogate => Err(InvalidJson);
            reversed_surrogate_pair => Err(InvalidJson);
            surrogate_pair => send("😀");
            lone_surrogate_in_unknown_field => send("m");
            nul_raw_in_string => Err(InvalidJson);
            nul_after_object => Err(InvalidJson);
            nul_escaped => Ok(Inbound::Reply(Reply {
                id: "a\0".into(),
                service: "q".into(),
                action: Action::Send(text("\0")),
                response_channel: None,
            }));
            control_char_raw_in_string => Err(InvalidJson);
            escapes => send("\"\\/\u{8}\u{c}\n\r\té\u{2028}");
            escaped_key => send("m");
            // Framing: one JSON value and nothing else. A BOM is refused (RFC 8259 allows that).
            bom_prefix => Err(InvalidJson);
            trailing_garbage => Err(InvalidJson);
            two_objects => Err(InvalidJson);
            trailing_comma => Err(InvalidJson);
            truncated => Err(InvalidJson);
            single_quotes => Err(InvalidJson);
            trailing_newline => send("m");
            // Duplicate known keys are refused rather than resolved either way.
            duplicate_id => Err(WrongType);
            duplicate_unknown_key => send("m");
            // `type` is exact.
            type_odd_case => Err(UnknownType);
            type_padded => Err(UnknownType);
            type_notconnected => Err(UnknownType);
            type_number => Err(WrongType);
            type_null => send("m");
            // `binary` is a JSON boolean, and base64 is the standard, padded alphabet only.
            binary_string_true => Err(WrongType);
            binary_number => Err(WrongType);
            binary_null => send("AP8B");
            binary_false => send("AP8B");
            binary_without_message => Err(MissingField("message"));
            binary_empty => reply(Action::Send(Payload::Binary(vec![])));
            base64_standard => reply(Action::Send(Payload::Binary(vec![0xfb, 0xff])));
            base64_space => Err(InvalidBase64);
            base64_newline => Err(InvalidBase64);
            base64_url_safe => Err(InvalidBase64);
            base64_unpadded => Err(InvalidBase64);
            base64_invalid_on_drop => Err(InvalidBase64);
            // Reasons are cut to 123 bytes on a character boundary.
            reason_multibyte => close(4000, &"é".repeat(61));
            reason_emoji => close(4000, &format!("x{}", "😀".repeat(30)));
            // Services may add fields of their own, nested however deep.
            unknown_fields => send("m");
            nested_unknown_field => send("m");
            deep_unknown_field => send("m");
            // Arrays are not replies, even though serde's derived `Deserialize` would read a
            // struct from a sequence field by field.
            array_positional_reply => Err(WrongType);
            array_positional_canary => Err(WrongType);
            array_empty => Err(WrongType);
            // `seq` is a canary field; on a reply it is the service's own, and ignored.
            seq_on_reply => send("m");
        }
    }

    pub mod http {
        use super::*;

        fn actions(actions: &[Action]) -> Result<Vec<Action>, ReplyError> {
            Ok(actions.to_vec())
        }

        corpus! { decode_http_body, "http";
            empty => actions(&[]);
            whitespace => actions(&[]);
            // ASCII whitespace, not JSON whitespace; harmless either way.
            form_feed => actions(&[]);
            array_empty => actions(&[]);
            object_empty => Err(MissingField("message"));
            html => Err(InvalidJson);
            bom_array => Err(InvalidJson);
            number => Err(WrongType);
            string => Err(WrongType);
            null => Err(WrongType);
            array_trailing_garbage => Err(InvalidJson);
            array_unterminated => Err(InvalidJson);
            // One bad item refuses the whole body.
            array_bad_item => Err(WrongType);
            array_null_item => Err(WrongType);
            array_item_wrong_id => Err(WrongType);
            array_bad_close_code => Err(InvalidCloseCode);
            replies_in_order => actions(&[
                Action::Send(text("one")),
                Action::Send(Payload::Binary(vec![0, 255, 1])),
                Action::Send(text("three")),
                Action::Close { last: Some(text("bye")), code: 4001, reason: "done".into() },
            ]);
            // As for Redis replies, an item that is an array is not a reply.
            nested_array_item => Err(WrongType);
        }
    }

    #[test]
    fn every_file_has_a_case_and_is_small() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
        let mut on_disk = Vec::new();
        for dir in std::fs::read_dir(&root).unwrap() {
            let dir = dir.unwrap();
            let name = dir.file_name().into_string().unwrap();
            if name == ".gitattributes" {
                continue;
            }
            assert!(dir.file_type().unwrap().is_dir(), "stray file {name}");
            for file in std::fs::read_dir(dir.path()).unwrap() {
                let file = file.unwrap();
                let size = file.metadata().unwrap().len();
                let path = format!("{name}/{}", file.file_name().into_string().unwrap());
                assert!(
                    size < 64 * 1024,
                    "{path} is {size} bytes: generate it in code"
                );
                on_disk.push(path);
            }
        }
        on_disk.sort();
        let mut covered: Vec<_> = inbound::FILES
            .iter()
            .chain(http::FILES)
            .map(|f| f.to_string())
            .collect();
        covered.sort();
        assert_eq!(on_disk, covered);
    }
}
