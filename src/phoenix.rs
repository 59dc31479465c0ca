//! The Phoenix Channels wire protocol (serializer V2), pure: text frames
//! `[join_ref, ref, topic, event, payload]`, the binary push frames of phoenix.js, and topic and
//! token-scope rules. Nothing here touches a socket.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::value::RawValue;

/// Longest topic or event name accepted.
pub const MAX_NAME: usize = 255;

/// A frame from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFrame<'a> {
    pub join_ref: Option<Cow<'a, str>>,
    pub reference: Option<Cow<'a, str>>,
    pub topic: Cow<'a, str>,
    pub event: Cow<'a, str>,
    pub payload: Payload<'a>,
}

/// A client payload, kept exactly as sent so it can be published byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload<'a> {
    /// The JSON text of the payload element, verbatim.
    Json(&'a str),
    /// The data of a binary push.
    Binary(&'a [u8]),
}

impl Payload<'_> {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Payload::Json(s) => s.as_bytes(),
            Payload::Binary(b) => b,
        }
    }

    /// An object field of a JSON object payload, with its size in bytes (for `meta`).
    pub fn object_field(
        &self,
        name: &str,
    ) -> Option<(serde_json::Map<String, serde_json::Value>, usize)> {
        let Payload::Json(text) = self else {
            return None;
        };
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let field = v.get(name)?;
        let size = field.to_string().len();
        field.as_object().cloned().map(|o| (o, size))
    }

    /// A non-empty string field of a JSON object payload (for `token` in `phx_join`).
    pub fn str_field(&self, name: &str) -> Option<String> {
        let Payload::Json(text) = self else {
            return None;
        };
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        v.get(name)?
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame is not a JSON array of five elements")]
    Shape,
    #[error("topic or event is empty or longer than 255 bytes")]
    Name,
    #[error("binary frame is malformed")]
    Binary,
}

type RawFrame<'a> = (
    Option<Cow<'a, str>>,
    Option<Cow<'a, str>>,
    Cow<'a, str>,
    Cow<'a, str>,
    &'a RawValue,
);

/// Decodes a text frame.
pub fn decode_text(text: &str) -> Result<InFrame<'_>, FrameError> {
    let first = text.bytes().find(|b| !b.is_ascii_whitespace());
    if first != Some(b'[') {
        return Err(FrameError::Shape);
    }
    let (join_ref, reference, topic, event, payload): RawFrame<'_> =
        serde_json::from_str(text).map_err(|_| FrameError::Shape)?;
    check_names(&topic, &event)?;
    Ok(InFrame {
        join_ref,
        reference,
        topic,
        event,
        payload: Payload::Json(payload.get()),
    })
}

fn check_names(topic: &str, event: &str) -> Result<(), FrameError> {
    let ok = |s: &str| !s.is_empty() && s.len() <= MAX_NAME;
    if ok(topic) && ok(event) {
        Ok(())
    } else {
        Err(FrameError::Name)
    }
}

/// Decodes a binary frame: phoenix.js's push, kind 0:
/// `<<0, join_ref_len, ref_len, topic_len, event_len, join_ref, ref, topic, event, data>>`.
pub fn decode_binary(bytes: &[u8]) -> Result<InFrame<'_>, FrameError> {
    let [0, jl, rl, tl, el, rest @ ..] = bytes else {
        return Err(FrameError::Binary);
    };
    let (jl, rl, tl, el) = (*jl as usize, *rl as usize, *tl as usize, *el as usize);
    if rest.len() < jl + rl + tl + el {
        return Err(FrameError::Binary);
    }
    let (join_ref, rest) = rest.split_at(jl);
    let (reference, rest) = rest.split_at(rl);
    let (topic, rest) = rest.split_at(tl);
    let (event, data) = rest.split_at(el);
    let (join_ref, reference) = (utf8(join_ref)?, utf8(reference)?);
    let (topic, event) = (utf8(topic)?, utf8(event)?);
    check_names(topic, event)?;
    Ok(InFrame {
        join_ref: (!join_ref.is_empty()).then_some(Cow::Borrowed(join_ref)),
        reference: (!reference.is_empty()).then_some(Cow::Borrowed(reference)),
        topic: Cow::Borrowed(topic),
        event: Cow::Borrowed(event),
        payload: Payload::Binary(data),
    })
}

fn utf8(b: &[u8]) -> Result<&str, FrameError> {
    std::str::from_utf8(b).map_err(|_| FrameError::Binary)
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

fn opt_str(s: Option<&str>) -> String {
    s.map_or_else(|| "null".to_owned(), json_str)
}

/// `[join_ref, ref, topic, "phx_reply", {"status": status, "response": response}]`.
pub fn reply(
    join_ref: Option<&str>,
    reference: Option<&str>,
    topic: &str,
    status: &str,
    response_json: &str,
) -> String {
    format!(
        "[{},{},{},\"phx_reply\",{{\"status\":{},\"response\":{}}}]",
        opt_str(join_ref),
        opt_str(reference),
        json_str(topic),
        json_str(status),
        response_json
    )
}

/// An error reply `{"status":"error","response":{"reason": reason}}`.
pub fn error_reply(
    join_ref: Option<&str>,
    reference: Option<&str>,
    topic: &str,
    reason: &str,
) -> String {
    reply(
        join_ref,
        reference,
        topic,
        "error",
        &format!("{{\"reason\":{}}}", json_str(reason)),
    )
}

/// A server push `[join_ref, null, topic, event, payload]`: `ref` is always null, so a push can
/// never be mistaken for the heartbeat's reply.
pub fn push(join_ref: Option<&str>, topic: &str, event: &str, payload_json: &str) -> String {
    format!(
        "[{},null,{},{},{}]",
        opt_str(join_ref),
        json_str(topic),
        json_str(event),
        payload_json
    )
}

/// `[join_ref, join_ref, topic, "phx_close", {}]`: the membership with that join_ref is over.
pub fn close(join_ref: &str, topic: &str) -> String {
    let jr = json_str(join_ref);
    format!("[{jr},{jr},{},\"phx_close\",{{}}]", json_str(topic))
}

/// A binary server push, kind 0: `<<0, join_ref_len, topic_len, event_len, join_ref, topic,
/// event, data>>`. `None` when a name is too long for its one-byte length.
pub fn binary_push(join_ref: &str, topic: &str, event: &str, data: &[u8]) -> Option<Vec<u8>> {
    let len = |s: &str| u8::try_from(s.len()).ok();
    let (jl, tl, el) = (len(join_ref)?, len(topic)?, len(event)?);
    let mut out = Vec::with_capacity(4 + join_ref.len() + topic.len() + event.len() + data.len());
    out.extend_from_slice(&[0, jl, tl, el]);
    out.extend_from_slice(join_ref.as_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(data);
    Some(out)
}

/// A topic name that passed [`valid_topic`]; shared, not copied, between a socket's memberships,
/// the hub and presence.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    pub fn new(topic: &str) -> Option<Self> {
        valid_topic(topic).then(|| Self(topic.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Topic({})", self.0)
    }
}

/// Topics are names, never patterns: no Redis glob characters, no control characters.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_NAME
        && !topic
            .chars()
            .any(|c| matches!(c, '*' | '?' | '[' | ']' | '\\') || c.is_control())
}

/// Whether a token's `channel`/`channels` claim covers `topic`. Entries ending in `*` cover every
/// topic with that prefix.
pub fn scope_covers(claims: &serde_json::Map<String, serde_json::Value>, topic: &str) -> bool {
    let covers = |entry: &str| match entry.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => entry == topic,
    };
    let one = claims.get("channel").and_then(|v| v.as_str());
    let many = claims.get("channels").and_then(|v| v.as_array());
    one.is_some_and(covers)
        || many.is_some_and(|list| list.iter().filter_map(|v| v.as_str()).any(covers))
}

/// `to:<topic>:<event>` split at the last `:` (topics may contain `:`, events may not).
pub fn split_channel(channel: &[u8]) -> Option<(&str, &str)> {
    let rest = std::str::from_utf8(channel).ok()?.strip_prefix("to:")?;
    let (topic, event) = rest.rsplit_once(':')?;
    (!topic.is_empty() && !event.is_empty()).then_some((topic, event))
}

/// The Redis names of a topic's traffic. Standalone (and Sentinel): services publish to
/// `to:<topic>:<event>`, which the gateway takes with one pattern per topic, and hear clients on
/// `from:<topic>:<event>`. Sharded pub/sub (Cluster) has no patterns, so a topic has one channel,
/// `to:{<topic>}`, whose messages are `<event>:<payload>` (an event has no `:`); client pushes go
/// to `from:{<topic>}:<event>`. The braces are a hash tag: all of a topic's channels, and its
/// presence keys, live in one slot.
pub mod names {
    /// What the bridge subscribes to for `topic`: a pattern, or (sharded) a channel.
    pub fn subscription(topic: &str, sharded: bool) -> String {
        if sharded {
            format!("to:{{{topic}}}")
        } else {
            format!("to:{topic}:*")
        }
    }

    /// The channel and message that deliver `event` with `payload` to `topic`'s members.
    pub fn to(topic: &str, event: &str, payload: &[u8], sharded: bool) -> (String, Vec<u8>) {
        if sharded {
            let mut message = Vec::with_capacity(event.len() + 1 + payload.len());
            message.extend_from_slice(event.as_bytes());
            message.push(b':');
            message.extend_from_slice(payload);
            (subscription(topic, true), message)
        } else {
            (format!("to:{topic}:{event}"), payload.to_vec())
        }
    }

    /// Where a client's push of `event` on `topic` goes.
    pub fn from(topic: &str, event: &str, sharded: bool) -> String {
        if sharded {
            format!("from:{{{topic}}}:{event}")
        } else {
            format!("from:{topic}:{event}")
        }
    }

    /// The topic whose sharded channel (`to:{<topic>}`) this is.
    pub fn sharded_topic(channel: &str) -> Option<&str> {
        let topic = channel.strip_prefix("to:{")?.strip_suffix('}')?;
        (!topic.is_empty()).then_some(topic)
    }

    /// A message heard on `channel`, as (topic, event, payload).
    pub fn split<'a>(
        channel: &'a str,
        message: &'a [u8],
        sharded: bool,
    ) -> Option<(&'a str, &'a str, &'a [u8])> {
        if !sharded {
            let (topic, event) = super::split_channel(channel.as_bytes())?;
            return Some((topic, event, message));
        }
        let topic = sharded_topic(channel)?;
        let colon = message.iter().position(|&b| b == b':')?;
        let event = std::str::from_utf8(&message[..colon]).ok()?;
        (!event.is_empty()).then_some((topic, event, &message[colon + 1..]))
    }
}

/// Whether published bytes are JSON (sent as a text frame, inserted unwrapped) or not (sent as a
/// binary push).
pub fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn text_frames_decode_with_the_payload_verbatim() {
        let f = decode_text(r#"["1","2","room:1","msg",{"b": 2,  "a":1}]"#).unwrap();
        assert_eq!(f.join_ref.as_deref(), Some("1"));
        assert_eq!(f.reference.as_deref(), Some("2"));
        assert_eq!((&*f.topic, &*f.event), ("room:1", "msg"));
        assert_eq!(f.payload, Payload::Json(r#"{"b": 2,  "a":1}"#));
        let hb = decode_text(r#"[null,"5","phoenix","heartbeat",{}]"#).unwrap();
        assert_eq!(hb.join_ref, None);
    }

    #[test]
    fn malformed_text_frames_are_refused() {
        for bad in [
            "{}",
            "[]",
            r#"["1","2","t","e"]"#,
            r#"["1","2","t","e",{},6]"#,
            r#"[1,"2","t","e",{}]"#,
            r#"["1","2",null,"e",{}]"#,
            "not json",
            r#"["1","2","t","e",{"#,
        ] {
            assert!(decode_text(bad).is_err(), "{bad}");
        }
        let long = format!(r#"["1","2","{}","e",{{}}]"#, "t".repeat(256));
        assert_eq!(decode_text(&long), Err(FrameError::Name));
        assert_eq!(decode_text(r#"["1","2","","e",{}]"#), Err(FrameError::Name));
    }

    #[test]
    fn binary_pushes_decode_and_encode() {
        let mut frame = vec![0, 1, 1, 4, 3];
        frame.extend_from_slice(b"72room"); // join_ref "7", ref "2", topic "room"
        frame.extend_from_slice(b"img");
        frame.extend_from_slice(&[0xff, 0x00, 0x10]);
        let f = decode_binary(&frame).unwrap();
        assert_eq!(
            (f.join_ref.as_deref(), f.reference.as_deref()),
            (Some("7"), Some("2"))
        );
        assert_eq!((&*f.topic, &*f.event), ("room", "img"));
        assert_eq!(f.payload, Payload::Binary(&[0xff, 0x00, 0x10]));
        assert_eq!(
            decode_binary(&[0, 5, 0, 0, 0, b'x']),
            Err(FrameError::Binary)
        );
        assert_eq!(decode_binary(&[1, 0, 0, 0, 0]), Err(FrameError::Binary));
        assert_eq!(decode_binary(&[0, 0]), Err(FrameError::Binary));

        let out = binary_push("3", "room", "img", &[1, 2]).unwrap();
        assert_eq!(
            out,
            [&[0u8, 1, 4, 3][..], b"3room", b"img", &[1, 2]].concat()
        );
        assert!(binary_push("3", &"t".repeat(300), "e", &[]).is_none());
    }

    #[test]
    fn replies_and_pushes_are_five_element_arrays() {
        let r: Value = serde_json::from_str(&reply(Some("1"), Some("2"), "t", "ok", "{}")).unwrap();
        assert_eq!(
            r,
            json!(["1", "2", "t", "phx_reply", {"status": "ok", "response": {}}])
        );
        let e: Value =
            serde_json::from_str(&error_reply(None, Some("9"), "t\"x", "unauthorized")).unwrap();
        assert_eq!(
            e,
            json!([null, "9", "t\"x", "phx_reply", {"status": "error", "response": {"reason": "unauthorized"}}])
        );
        let p: Value = serde_json::from_str(&push(Some("4"), "t", "ev", "[1,2]")).unwrap();
        assert_eq!(p, json!(["4", null, "t", "ev", [1, 2]]));
    }

    #[test]
    fn topics_and_scopes() {
        assert!(valid_topic("room:lobby") && valid_topic("a.b-c_d:1"));
        for bad in ["", "a*", "a?", "a[b]", "a\\b", "a\nb"] {
            assert!(!valid_topic(bad), "{bad:?}");
        }
        let claims = |v: Value| v.as_object().unwrap().clone();
        assert!(scope_covers(
            &claims(json!({"channel": "room:1"})),
            "room:1"
        ));
        assert!(!scope_covers(
            &claims(json!({"channel": "room:1"})),
            "room:2"
        ));
        assert!(scope_covers(
            &claims(json!({"channels": ["x", "room:*"]})),
            "room:9"
        ));
        assert!(!scope_covers(
            &claims(json!({"channels": ["room:*"]})),
            "roo"
        ));
        assert!(!scope_covers(&claims(json!({})), "room:1"));
    }

    #[test]
    fn redis_channels_split_at_the_last_colon() {
        assert_eq!(
            split_channel(b"to:room:lobby:msg"),
            Some(("room:lobby", "msg"))
        );
        assert_eq!(
            split_channel(b"to:system:update"),
            Some(("system", "update"))
        );
        assert_eq!(split_channel(b"to:nocolon"), None);
        assert_eq!(split_channel(b"from:a:b"), None);
        assert_eq!(split_channel(b"to::e"), None);
    }

    #[test]
    fn sharded_names_keep_a_topic_in_one_slot_and_the_event_in_the_message() {
        assert_eq!(names::subscription("room:1", false), "to:room:1:*");
        assert_eq!(names::subscription("room:1", true), "to:{room:1}");
        let (channel, message) = names::to("room:1", "msg", b"{}", true);
        assert_eq!(
            (channel.as_str(), message.as_slice()),
            ("to:{room:1}", &b"msg:{}"[..])
        );
        let plain = names::to("room:1", "msg", b"{}", false);
        assert_eq!(
            (plain.0.as_str(), plain.1.as_slice()),
            ("to:room:1:msg", &b"{}"[..])
        );
        assert_eq!(names::from("room:1", "shout", true), "from:{room:1}:shout");
        assert_eq!(names::from("room:1", "shout", false), "from:room:1:shout");
        assert_eq!(
            names::split("to:{room:1}", b"msg:{\"a\":1}", true),
            Some(("room:1", "msg", &b"{\"a\":1}"[..]))
        );
        assert_eq!(
            names::split("to:room:1:msg", b"x", false),
            Some(("room:1", "msg", &b"x"[..]))
        );
        assert_eq!(names::sharded_topic("to:{room:1}"), Some("room:1"));
        assert_eq!(names::sharded_topic("to:{}"), None);
        assert_eq!(names::sharded_topic("from:{room:1}:x"), None);
        assert_eq!(names::split("to:{room:1}", b"no-event", true), None);
        assert_eq!(names::split("to:{room:1}", b":x", true), None);
        assert_eq!(names::split("to:room:1", b"msg:x", true), None);
    }

    #[test]
    fn json_detection() {
        assert!(is_json(b" {\"a\":1}") && is_json(b"42") && is_json(b"\"s\""));
        assert!(!is_json(b"hello") && !is_json(&[0xff, 0x00]) && !is_json(b""));
    }
}
