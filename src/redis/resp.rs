//! RESP2, as a subscribed connection hears it: pure parsing of one frame at a time from the
//! front of a buffer, and the encoding of the few commands such a connection sends.
//!
//! Bulk strings are handed out as [`Bytes`] slices of the frame that was read, so a message's
//! payload reaches its client without being copied. Sizes are bounded: a frame whose bulk
//! string or array is larger than the caller's limit is an error, not an allocation.

use bytes::{Bytes, BytesMut};

/// One RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Simple(Bytes),
    Error(Bytes),
    Int(i64),
    Bulk(Bytes),
    Nil,
    Array(Vec<Value>),
}

/// The front of the buffer cannot be a RESP2 frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    #[error("not a RESP frame: unexpected byte {0:#04x}")]
    Type(u8),
    #[error("not a RESP frame: bad length or integer")]
    Number,
    #[error("a RESP frame larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error("a RESP frame nested too deeply")]
    TooDeep,
}

/// Deeper than any pub/sub reply (a message is one flat array).
const MAX_DEPTH: usize = 8;
/// Longest line (a length header, an integer, a simple string or an error) waited for.
const MAX_LINE: usize = 64 * 1024;

/// Takes one whole frame off the front of `buf`: `Ok(None)` while it is incomplete (the buffer
/// is left as it was, to be called again when more has arrived). `limit` bounds every length
/// the frame declares.
pub fn take(buf: &mut BytesMut, limit: usize) -> Result<Option<Value>, RespError> {
    let Some(len) = frame_len(buf, 0, limit, 0)? else {
        return Ok(None);
    };
    let frame = buf.split_to(len).freeze();
    let mut at = 0;
    Ok(Some(value(&frame, &mut at)))
}

/// The length of the frame starting at `at`, if it is all there.
fn frame_len(
    buf: &[u8],
    at: usize,
    limit: usize,
    depth: usize,
) -> Result<Option<usize>, RespError> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some(eol) = line_end(buf, at + 1)? else {
        return Ok(None);
    };
    let after_line = eol + 2;
    let line = &buf[at + 1..eol];
    match kind {
        b'+' | b'-' => Ok(Some(after_line - at)),
        b':' => number(line).map(|_| Some(after_line - at)),
        b'$' => {
            let Some(n) = length(line, limit)? else {
                return Ok(Some(after_line - at));
            };
            let end = after_line + n + 2;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(RespError::Number);
            }
            Ok(Some(end - at))
        }
        b'*' => {
            if depth >= MAX_DEPTH {
                return Err(RespError::TooDeep);
            }
            let Some(n) = length(line, limit)? else {
                return Ok(Some(after_line - at));
            };
            let mut next = after_line;
            for _ in 0..n {
                match frame_len(buf, next, limit, depth + 1)? {
                    Some(len) => next += len,
                    None => return Ok(None),
                }
            }
            Ok(Some(next - at))
        }
        other => Err(RespError::Type(other)),
    }
}

/// A declared length: `None` for a nil (negative), an error past `limit`.
fn length(line: &[u8], limit: usize) -> Result<Option<usize>, RespError> {
    let Ok(n) = usize::try_from(number(line)?) else {
        return Ok(None);
    };
    if n > limit {
        return Err(RespError::TooLarge(limit));
    }
    Ok(Some(n))
}

/// Where the `\r\n` ending the line that starts at `from` is, once it has arrived. A `\r`
/// not followed by `\n` is an error: waiting for more would never end the line.
fn line_end(buf: &[u8], from: usize) -> Result<Option<usize>, RespError> {
    let Some(rest) = buf.get(from..) else {
        return Ok(None);
    };
    let Some(i) = rest.iter().position(|&b| b == b'\r') else {
        // Headers, integers and simple strings are short: a line this long will not end.
        return match rest.len() > MAX_LINE {
            true => Err(RespError::TooLarge(MAX_LINE)),
            false => Ok(None),
        };
    };
    match rest.get(i + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some(from + i)),
        Some(_) => Err(RespError::Type(b'\r')),
    }
}

fn number(line: &[u8]) -> Result<i64, RespError> {
    let (negative, digits) = match line {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 18 {
        return Err(RespError::Number);
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(RespError::Number);
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Ok(if negative { -n } else { n })
}

/// Reads the value at `at` of a frame `frame_len` has checked whole and well formed.
fn value(frame: &Bytes, at: &mut usize) -> Value {
    let kind = frame[*at];
    let start = *at + 1;
    let eol = line_end(frame, start).ok().flatten().expect("checked");
    *at = eol + 2;
    let n = || number(&frame[start..eol]).expect("checked");
    match kind {
        b'+' => Value::Simple(frame.slice(start..eol)),
        b'-' => Value::Error(frame.slice(start..eol)),
        b':' => Value::Int(n()),
        b'$' => match usize::try_from(n()) {
            Err(_) => Value::Nil,
            Ok(len) => {
                let bulk = frame.slice(*at..*at + len);
                *at += len + 2;
                Value::Bulk(bulk)
            }
        },
        _ => match usize::try_from(n()) {
            Err(_) => Value::Nil,
            Ok(len) => {
                let mut items = Vec::with_capacity(len);
                for _ in 0..len {
                    items.push(value(frame, at));
                }
                Value::Array(items)
            }
        },
    }
}

/// Appends one command, as an array of bulk strings, to `out`.
pub fn encode(out: &mut BytesMut, args: &[&[u8]]) {
    let mut digits = itoa::Buffer::new();
    let size: usize = args.iter().map(|a| a.len() + 16).sum();
    out.reserve(size + 16);
    out.extend_from_slice(b"*");
    out.extend_from_slice(digits.format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.extend_from_slice(b"$");
        out.extend_from_slice(digits.format(arg.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

impl Value {
    /// The bytes of a bulk or simple string.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Value::Bulk(b) | Value::Simple(b) => Some(b),
            _ => None,
        }
    }
}

/// What a subscribed connection hears, read from a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// A published message: `message` (or `pmessage`, whose pattern is dropped).
    Message { channel: Bytes, payload: Bytes },
    /// A confirmation of one (un)subscription: its kind (`subscribe`, `punsubscribe`, ...) and
    /// name.
    Confirmed { kind: Bytes, name: Bytes },
    /// An error reply (to the command last sent).
    Error(Bytes),
    /// Anything else (`pong`, a plain `+OK`): not news.
    Other,
}

impl Heard {
    pub fn of(value: Value) -> Self {
        let items = match value {
            Value::Error(e) => return Heard::Error(e),
            Value::Array(items) => items,
            _ => return Heard::Other,
        };
        let mut items = items.into_iter();
        let Some(Value::Bulk(kind)) = items.next() else {
            return Heard::Other;
        };
        let mut bulk = || match items.next() {
            Some(Value::Bulk(b)) => Some(b),
            _ => None,
        };
        match &kind[..] {
            b"message" => match (bulk(), bulk()) {
                (Some(channel), Some(payload)) => Heard::Message { channel, payload },
                _ => Heard::Other,
            },
            b"pmessage" => match (bulk(), bulk(), bulk()) {
                (Some(_pattern), Some(channel), Some(payload)) => {
                    Heard::Message { channel, payload }
                }
                _ => Heard::Other,
            },
            b"subscribe" | b"unsubscribe" | b"psubscribe" | b"punsubscribe" => match bulk() {
                Some(name) => Heard::Confirmed { kind, name },
                None => Heard::Other,
            },
            _ => Heard::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(s: &[u8]) -> BytesMut {
        BytesMut::from(s)
    }

    #[test]
    fn a_message_is_read_whole_and_its_payload_is_a_slice() {
        let mut b = buf(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhe\r\no\r\n+OK\r\n");
        let v = take(&mut b, 1024).unwrap().unwrap();
        assert_eq!(
            Heard::of(v),
            Heard::Message {
                channel: Bytes::from_static(b"ch"),
                payload: Bytes::from_static(b"he\r\no"),
            }
        );
        assert_eq!(&b[..], b"+OK\r\n", "the next frame is left in the buffer");
        assert_eq!(
            take(&mut b, 1024).unwrap(),
            Some(Value::Simple(Bytes::from_static(b"OK")))
        );
        assert!(b.is_empty());
    }

    #[test]
    fn an_incomplete_frame_waits_at_every_cut() {
        let whole: &[u8] = b"*4\r\n$8\r\npmessage\r\n$4\r\nto:*\r\n$4\r\nto:a\r\n$3\r\n{}\n\r\n";
        for cut in 0..whole.len() {
            let mut b = buf(&whole[..cut]);
            assert_eq!(take(&mut b, 1024), Ok(None), "cut at {cut}");
            assert_eq!(b.len(), cut, "nothing consumed at {cut}");
        }
        let mut b = buf(whole);
        assert_eq!(
            Heard::of(take(&mut b, 1024).unwrap().unwrap()),
            Heard::Message {
                channel: Bytes::from_static(b"to:a"),
                payload: Bytes::from_static(b"{}\n"),
            }
        );
    }

    #[test]
    fn confirmations_errors_and_others_are_told_apart() {
        let mut b = buf(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nr\r\n:1\r\n-ERR nope\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n");
        assert_eq!(
            Heard::of(take(&mut b, 64).unwrap().unwrap()),
            Heard::Confirmed {
                kind: Bytes::from_static(b"subscribe"),
                name: Bytes::from_static(b"r"),
            }
        );
        assert_eq!(
            Heard::of(take(&mut b, 64).unwrap().unwrap()),
            Heard::Error(Bytes::from_static(b"ERR nope"))
        );
        assert_eq!(Heard::of(take(&mut b, 64).unwrap().unwrap()), Heard::Other);
        assert_eq!(take(&mut buf(b"$-1\r\n"), 64).unwrap(), Some(Value::Nil));
        assert_eq!(
            take(&mut buf(b":-42\r\n"), 64).unwrap(),
            Some(Value::Int(-42))
        );
    }

    #[test]
    fn bad_and_oversized_frames_are_errors_not_allocations() {
        assert_eq!(take(&mut buf(b"?x\r\n"), 64), Err(RespError::Type(b'?')));
        assert_eq!(take(&mut buf(b"$x\r\n"), 64), Err(RespError::Number));
        assert_eq!(take(&mut buf(b"$3\r\nabcde"), 64), Err(RespError::Number));
        // A line that a stray \r breaks can never end: an error, not a wait for more.
        assert_eq!(
            take(&mut buf(b"+a\rb\r\n"), 64),
            Err(RespError::Type(b'\r'))
        );
        assert_eq!(
            take(&mut buf(b"+ab\r"), 64),
            Ok(None),
            "\\r\\n cut in two waits"
        );
        let endless = [b"-ERR ".as_slice(), &[b'x'; 70_000]].concat();
        assert_eq!(
            take(&mut buf(&endless), 64),
            Err(RespError::TooLarge(64 * 1024))
        );
        assert_eq!(take(&mut buf(b"$65\r\n"), 64), Err(RespError::TooLarge(64)));
        assert_eq!(
            take(&mut buf(b"*99999999999\r\n"), 64),
            Err(RespError::TooLarge(64))
        );
        assert_eq!(
            take(
                &mut buf(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"),
                64
            ),
            Err(RespError::TooDeep)
        );
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = BytesMut::new();
        encode(&mut out, &[b"SUBSCRIBE", b"refract:n1"]);
        assert_eq!(&out[..], b"*2\r\n$9\r\nSUBSCRIBE\r\n$10\r\nrefract:n1\r\n");
        let mut back = out.clone();
        assert_eq!(
            take(&mut back, 64).unwrap(),
            Some(Value::Array(vec![
                Value::Bulk(Bytes::from_static(b"SUBSCRIBE")),
                Value::Bulk(Bytes::from_static(b"refract:n1")),
            ]))
        );
    }
}
