//! What both front doors share once a connection is a WebSocket.
//!
//! - [`queue`]: a client's bounded outbound queue and kill switch.
//! - [`driver`]: the one loop every open connection runs, handing data frames to a handler.

pub mod driver;
pub mod queue;

use hyper_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The WebSocket settings of every upgraded connection, route sessions and Channels alike.
pub fn config(read_buffer: usize, max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
        // Held by every open connection; a larger frame grows it while it is read.
        .read_buffer_size(read_buffer)
        // Frames go out as soon as they are written; the driver batches and flushes.
        .write_buffer_size(0)
}
