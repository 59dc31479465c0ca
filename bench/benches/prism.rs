//! The per-message pure functions of the hot path: every client frame is one `encode_event`,
//! every service reply one `decode_inbound`; on Channels, every client push one Phoenix frame
//! decode and every broadcast one frame encode. Inputs are the shapes the echo benchmark puts on
//! the wire (a 22-character id, a 64-byte text), plus a larger and an escaped variant.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use refract::phoenix;
use refract::prism::{self, ClientData, EventKind, Peer};

const ID: &str = "q2xW8kV0b3nR5tY7uI9oPa";
const RESPONSE_CHANNEL: &str = "refract.responses.n-5f3a9c0e7d1b2a46";

fn text(len: usize) -> String {
    "0123456789abcdef".chars().cycle().take(len).collect()
}

fn encode(c: &mut Criterion) {
    let peer = Peer {
        id: ID,
        route: "/echo",
        remote_address: "127.0.0.1",
        remote_port: 54321,
        user: None,
        claims: None,
    };
    let mut g = c.benchmark_group("encode_event");
    g.throughput(Throughput::Elements(1));
    g.bench_function("connect", |b| {
        b.iter(|| {
            prism::encode_event(
                black_box(&peer),
                EventKind::Connect,
                None,
                Some(RESPONSE_CHANNEL),
            )
        })
    });
    for len in [64, 1024] {
        let t = text(len);
        g.bench_function(format!("message_text_{len}B"), |b| {
            b.iter(|| {
                prism::encode_event(
                    black_box(&peer),
                    EventKind::Message,
                    Some(ClientData::Text(black_box(&t))),
                    Some(RESPONSE_CHANNEL),
                )
            })
        });
    }
    let quoted = "say \"hi\"\n\t".repeat(6);
    g.bench_function("message_text_escaped_66B", |b| {
        b.iter(|| {
            prism::encode_event(
                black_box(&peer),
                EventKind::Message,
                Some(ClientData::Text(black_box(&quoted))),
                Some(RESPONSE_CHANNEL),
            )
        })
    });
    let bytes = vec![0xA5u8; 64];
    g.bench_function("message_binary_64B", |b| {
        b.iter(|| {
            prism::encode_event(
                black_box(&peer),
                EventKind::Message,
                Some(ClientData::Binary(black_box(&bytes))),
                Some(RESPONSE_CHANNEL),
            )
        })
    });
    g.finish();
}

fn decode(c: &mut Criterion) {
    let reply = |message: &str| {
        serde_json::to_vec(&serde_json::json!({"id": ID, "service": "echo", "message": message}))
            .unwrap()
    };
    let small = reply(&text(64));
    let large = reply(&text(1024));
    let escaped = reply(&"say \"hi\"\n\t".repeat(6));
    let drop = serde_json::to_vec(&serde_json::json!({
        "id": ID, "service": "echo", "type": "drop", "code": 4000, "reason": "bye",
        "responseChannel": "svc.replies"
    }))
    .unwrap();
    let canary = prism::encode_canary(42);
    let mut g = c.benchmark_group("decode_inbound");
    g.throughput(Throughput::Elements(1));
    for (name, input) in [
        ("message_64B", &small),
        ("message_1024B", &large),
        ("message_escaped_66B", &escaped),
        ("drop_with_reason", &drop),
        ("canary", &canary),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| prism::decode_inbound(black_box(input), 1 << 20).unwrap())
        });
    }
    g.bench_function("invalid_json", |b| {
        b.iter(|| prism::decode_inbound(black_box(b"{\"id\":\"abc\",\"service\""), 1 << 20))
    });
    g.finish();
}

/// The Channels frames of the hot path: every client push is one `decode_text` (or
/// `decode_binary`), every broadcast one `push` per distinct join_ref.
fn phoenix_frames(c: &mut Criterion) {
    let payload = format!("{{\"body\":\"{}\"}}", text(64));
    let push_text = format!("[\"3\",\"7\",\"room:lobby\",\"new_msg\",{payload}]");
    let mut push_binary = vec![0u8, 1, 1, 10, 7];
    push_binary.extend_from_slice(b"37room:lobbynew_msg");
    push_binary.extend_from_slice(text(64).as_bytes());
    let mut g = c.benchmark_group("phoenix_decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("push_text_64B", |b| {
        b.iter(|| phoenix::decode_text(black_box(&push_text)).unwrap())
    });
    g.bench_function("push_binary_64B", |b| {
        b.iter(|| phoenix::decode_binary(black_box(&push_binary)).unwrap())
    });
    g.bench_function("heartbeat", |b| {
        b.iter(|| {
            phoenix::decode_text(black_box(r#"[null,"9","phoenix","heartbeat",{}]"#)).unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("phoenix_encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("push_64B", |b| {
        b.iter(|| {
            phoenix::push(
                Some(black_box("3")),
                "room:lobby",
                "new_msg",
                black_box(&payload),
            )
        })
    });
    g.bench_function("reply_ok", |b| {
        b.iter(|| phoenix::reply(Some(black_box("3")), Some("7"), "room:lobby", "ok", "{}"))
    });
    g.bench_function("binary_push_64B", |b| {
        b.iter(|| {
            phoenix::binary_push(black_box("3"), "room:lobby", "new_msg", text(64).as_bytes())
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, encode, decode, phoenix_frames);
criterion_main!(benches);
