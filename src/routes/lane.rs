//! One (connection, HTTP service) pair: a small task that POSTs that connection's events in
//! order and runs its poll timer, so one connection's requests never overtake each other and a
//! slow service only ever delays its own lanes.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::Gateway;
use crate::metrics::HttpResult;
use crate::prism::{self, ClientData, EventKind};
use crate::routes::http_service::{HttpService, post};
use crate::routes::peer::PeerInfo;
use crate::routes::registry::Handle;

/// Events waiting in one lane; beyond it an event for that service is counted and dropped.
const LANE_QUEUE: usize = 256;

/// A client frame kept by a lane (events are queued, so they own their data).
#[derive(Clone, Debug)]
pub enum Data {
    Text(String),
    Binary(Bytes),
}

impl Data {
    fn as_client_data(&self) -> ClientData<'_> {
        match self {
            Data::Text(t) => ClientData::Text(t),
            Data::Binary(b) => ClientData::Binary(b),
        }
    }
}

pub struct Job {
    kind: EventKind,
    data: Option<Data>,
}

/// The session's end of one lane.
pub struct Lane {
    tx: mpsc::Sender<Job>,
    service: Arc<HttpService>,
}

impl Lane {
    /// Starts the lane task for `service` on `gw.tasks`.
    pub fn start(
        gw: &Arc<Gateway>,
        service: Arc<HttpService>,
        peer: Arc<PeerInfo>,
        conn: Handle,
    ) -> Self {
        let (tx, rx) = mpsc::channel(LANE_QUEUE);
        gw.tasks
            .spawn(run(gw.clone(), service.clone(), peer, conn, rx));
        Self { tx, service }
    }

    /// Queues an event without waiting: a slow service must not slow the client or the other
    /// services. A full lane drops the event and counts it, except `disconnect`, which is
    /// handed to a task so the service always hears the end of the connection.
    pub fn send(&self, gw: &Arc<Gateway>, kind: EventKind, data: Option<Data>) {
        match self.tx.try_send(Job { kind, data }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) if kind == EventKind::Disconnect => {
                let tx = self.tx.clone();
                gw.tasks.spawn(async move {
                    let _ = tx.send(job).await;
                });
            }
            Err(_) => self.service.metrics.count(HttpResult::QueueFull),
        }
    }
}

async fn run(
    gw: Arc<Gateway>,
    service: Arc<HttpService>,
    peer: Arc<PeerInfo>,
    conn: Handle,
    mut rx: mpsc::Receiver<Job>,
) {
    let mut last: Option<Data> = None;
    // Polls start at a random offset in the interval, so a thousand connections that arrived
    // together are polled spread out rather than in one burst. A tick missed while a request
    // is in flight is skipped, not made up.
    let mut poll = service.config.polling_interval.map(|every| {
        let offset = every.mul_f64(rand::random::<f64>());
        let mut t = tokio::time::interval_at(Instant::now() + offset, every);
        t.set_missed_tick_behavior(MissedTickBehavior::Skip);
        t
    });
    loop {
        let job = tokio::select! {
            biased;
            job = rx.recv() => match job {
                Some(job) => job,
                None => return,
            },
            _ = async { poll.as_mut().expect("guarded").tick().await }, if poll.is_some() => {
                service.metrics.polls.inc();
                let text = last.clone().unwrap_or(Data::Text(String::new()));
                Job { kind: EventKind::Message, data: Some(text) }
            }
        };
        if job.kind == EventKind::Message && job.data.is_some() {
            last.clone_from(&job.data);
        }
        let data = job.data.as_ref().map(Data::as_client_data);
        // Encoded per request, not from a template kept for the lane's life: a POST costs far
        // more than the encoding, and an idle connection should not hold one per service.
        let body = prism::encode_event(&peer.peer(), job.kind, data, None);
        let result = post(&gw, &service, Bytes::from(body)).await;
        let metrics = &service.metrics;
        match result {
            Ok(actions) => {
                metrics.count(HttpResult::Ok);
                if job.kind != EventKind::Disconnect {
                    crate::routes::relay::push_actions(&gw, &conn, actions);
                }
            }
            Err(r) => {
                metrics.count(r);
                if service.log.allow() {
                    tracing::warn!(
                        service = %service.name,
                        route = %peer.route,
                        result = r.as_str(),
                        "HTTP service request failed; nothing was sent to the client"
                    );
                }
            }
        }
        if job.kind == EventKind::Disconnect {
            // The connection is gone: no more polls, whatever is still queued.
            return;
        }
    }
}
