//! Config reload on SIGHUP, without dropping connections.
//!
//! The file is read and checked again exactly as at start (environment overrides included); a
//! config that fails is refused with the same one-line error, counted and logged, and the one in
//! force stays. A config that passes puts its routes in force for new connections: a route added
//! takes clients at once, a changed route takes new clients under its new services and rules
//! (clients already on it keep the route they came in on), and the clients of a removed route are
//! closed with 1001, each publishing its `disconnect` as any session does. The other sections
//! (`[server]`, `[redis]`, `[channels]`, `[admin]`, `node_id`) stay as they were at start; a
//! change to one is logged as needing a restart.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{self, Settings};
use crate::metrics::Reload;
use crate::routes::table::RouteTable;
use crate::{Error, Gateway};

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub added: BTreeSet<String>,
    pub removed: BTreeSet<String>,
    pub changed: BTreeSet<String>,
    /// Clients of removed routes asked to close.
    pub closed: usize,
    /// Sections that differ from those in force but take effect only on a restart.
    pub restart_needed: BTreeSet<String>,
}

/// Puts the routes of `new` in force; `applied` is the config whose routes are in force now (to
/// tell which routes changed). Refused, with nothing changed, when a route of `new` takes a path
/// of a section in force.
pub fn apply(gw: &Gateway, applied: &Settings, new: &Settings) -> Result<Outcome, Error> {
    let (channels, admin) = (gw.settings.channels.as_ref(), gw.settings.admin.as_ref());
    config::check_paths(&new.routes, channels, admin)?;
    let old = gw.routes();
    let table = RouteTable::new(
        &gw.settings.server,
        &new.routes,
        &gw.live,
        &gw.metrics,
        Some(&old),
    )?;
    let old_paths: BTreeSet<String> = old.iter().map(|r| r.path.to_string()).collect();
    let new_paths: BTreeSet<String> = new.routes.keys().cloned().collect();
    let changed = old_paths
        .intersection(&new_paths)
        .filter(|p| applied.route_source(p) != new.route_source(p))
        .cloned()
        .collect();
    gw.replace_routes(table);
    // After the swap: a session that registers from here on checks the new table itself.
    let closed = gw.registry.close_removed(&gw.routes());
    let restart_needed = gw.settings.changed_sections(new);
    Ok(Outcome {
        added: new_paths.difference(&old_paths).cloned().collect(),
        removed: old_paths.difference(&new_paths).cloned().collect(),
        changed,
        closed,
        restart_needed: restart_needed.into_iter().map(String::from).collect(),
    })
}

/// Installs the SIGHUP handler now (so a SIGHUP from here on reloads rather than kills), and
/// returns the worker that reloads from `path` on each one until shutdown.
pub fn watch(gw: Arc<Gateway>, path: PathBuf) -> Option<impl Future<Output = ()> + Send> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the SIGHUP handler: config reload is off");
            return None;
        }
    };
    Some(async move {
        let mut applied = gw.settings.clone();
        loop {
            tokio::select! {
                _ = gw.shutdown.cancelled() => return,
                got = hangups.recv() => if got.is_none() { return },
            }
            let new = match Settings::load(&path) {
                Ok(new) => new,
                Err(e) => {
                    refused(&gw, &e.into());
                    continue;
                }
            };
            match apply(&gw, &applied, &new) {
                Ok(outcome) => {
                    gw.metrics.config_reloaded(Reload::Ok);
                    log(&outcome, &path);
                    applied = new;
                }
                Err(e) => refused(&gw, &e),
            }
        }
    })
}

fn refused(gw: &Gateway, e: &Error) {
    gw.metrics.config_reloaded(Reload::Failed);
    tracing::error!("config reload refused, the config in force stays: config error: {e}");
}

fn log(o: &Outcome, path: &std::path::Path) {
    let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(" ");
    tracing::info!(
        file = %path.display(),
        added = %list(&o.added),
        removed = %list(&o.removed),
        changed = %list(&o.changed),
        closed = o.closed,
        "config reloaded: routes in force for new connections"
    );
    for section in &o.restart_needed {
        tracing::warn!(
            section = %section,
            "config reload: this section changed, and takes effect on restart only"
        );
    }
}
