//! The JSON answers of the control socket (`almd status`, `almd groups`).
//!
//! `status` fields: `node_id` (32 hex digits), `listen` (the bound
//! address), `advertise` (the address the overlay knows this node by),
//! `joined`,
//! `uptime_s`, `tap` (`null` without `--tap` and, with `--tap-addr auto`,
//! until the address is allocated: else name, addr, prefix_len, mtu),
//! `address` (`null` without `--tap`; else `addr` (or `null`),
//! `prefix_len`, `lease_remaining_s` and `state`: `allocating` or `held`
//! with `--tap-addr auto`, `static` for an explicit address, `none` after
//! a release), `leaf_set` (`[{id, addr}]`), `routing_table_size`, `groups` (see
//! below), `node_stats` (every `alm_core::Stats` counter), `middleware_stats`,
//! `igmp_stats`, `scribe_drops` (data-path drops by reason) and
//! `runtime_stats` (socket and TAP counters of almd itself).
//!
//! Each entry of `groups`: `group` (IPv4 group address, or `null` if this
//! node is only a tree node for a group no local application joined and the
//! address was never seen here), `topic` (the Scribe topic id), `local_listeners`
//! (the IGMP querier has listeners for it on the TAP), `member`, `role`
//! (`root`, `forwarder` or `joining`; `listener-only` before the tree join),
//! `depth`, `parent` (`{id, addr}` or `null`), `children` (`[{id, addr}]`),
//! `packets_in`, `bytes_in`, `packets_out`, `bytes_out`, `delivered`,
//! `duplicates`.
//!
//! `groups` answers the overlay's group directory (asked for with
//! `list_groups`): `"scope": "overlay"`, `groups` (`[{group, name, members,
//! age_s, since_unix}]`, by address: `members` is the last announcer's
//! estimate, and every host with a local listener announces 1, so the
//! count is "at least one member", not a sum; `since_unix` is when the group
//! was first announced, in seconds since the epoch by this host's clock),
//! and `local_groups` (the `groups` list of `status`).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use serde_json::{Value, json};

use alm_core::scribe::{Role, Topic};
use alm_core::{GroupRecord, NodeHandle, Time};

use crate::engine::Engine;

/// The TAP as configured, for `status`.
#[derive(Debug, Clone)]
pub struct TapInfo {
    pub name: String,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub mtu: u16,
}

/// Counters of the runtime itself.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RuntimeStats {
    pub udp_rx_datagrams: u64,
    pub udp_rx_bytes: u64,
    /// Datagrams larger than the receive buffer (dropped).
    pub udp_rx_truncated: u64,
    pub udp_rx_errors: u64,
    /// ICMP errors matched to datagrams we sent (IP_RECVERR); port, host
    /// and network unreachable ones are reported to the engine.
    pub udp_icmp_errors: u64,
    pub udp_tx_datagrams: u64,
    pub udp_tx_bytes: u64,
    /// Datagrams dropped because the socket send buffer was full.
    pub udp_tx_would_block: u64,
    pub udp_tx_errors: u64,
    pub tap_rx_frames: u64,
    pub tap_rx_bytes: u64,
    pub tap_tx_frames: u64,
    pub tap_tx_bytes: u64,
    /// Frames dropped because the TAP would block.
    pub tap_tx_would_block: u64,
    pub tap_tx_errors: u64,
    /// Loop passes that stopped reading UDP / TAP at the per-pass budget.
    pub udp_budget_exhausted: u64,
    pub tap_budget_exhausted: u64,
    pub loop_passes: u64,
    pub timer_fires: u64,
    /// Receive buffer blocks allocated (each holds many datagrams).
    pub rx_blocks_allocated: u64,
    /// Socket buffer sizes the kernel granted (SO_RCVBUF / SO_SNDBUF).
    pub udp_rcvbuf: i64,
    pub udp_sndbuf: i64,
}

/// Group addresses this node has seen, by topic: Scribe topics are hashes,
/// so the address of a group is only known where a listener joined it.
#[derive(Debug, Default)]
pub struct GroupNames {
    by_topic: HashMap<Topic, Ipv4Addr>,
}

impl GroupNames {
    /// Records every group the IGMP querier currently has listeners for.
    pub fn learn(&mut self, engine: &Engine) {
        if let Some(m) = engine.middleware() {
            for g in m.igmp().groups() {
                self.by_topic.entry(Topic::ipv4_group(g)).or_insert(g);
            }
        }
    }

    /// Records a group address learnt elsewhere (the group directory).
    pub fn insert(&mut self, group: Ipv4Addr) {
        self.by_topic
            .entry(Topic::ipv4_group(group))
            .or_insert(group);
    }

    /// The group address of `topic`, if known.
    #[must_use]
    pub fn get(&self, topic: &Topic) -> Option<Ipv4Addr> {
        self.by_topic.get(topic).copied()
    }
}

fn handle(h: &NodeHandle) -> Value {
    json!({"id": h.id.to_string(), "addr": h.addr.to_string()})
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Root => "root",
        Role::Forwarder => "forwarder",
        Role::Joining => "joining",
    }
}

/// The `groups` array of `status` and `groups`.
#[must_use]
pub fn groups_json(engine: &Engine, names: &GroupNames) -> Value {
    let node = engine.node();
    let listeners: Vec<Ipv4Addr> = engine
        .middleware()
        .map(|m| m.igmp().groups().collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for (topic, st) in node.scribe().topics() {
        seen.push(*topic);
        let group = names.get(topic);
        out.push(json!({
            "group": group.map(|g| g.to_string()),
            "topic": topic.0.to_string(),
            "local_listeners": group.is_some_and(|g| listeners.contains(&g)),
            "member": st.member,
            "role": role_name(st.role()),
            "depth": st.depth,
            "parent": st.parent.as_ref().map(|p| handle(&p.handle)),
            "children": st.children.iter().map(|c| handle(&c.handle)).collect::<Vec<_>>(),
            "packets_in": st.stats.packets_in,
            "bytes_in": st.stats.bytes_in,
            "packets_out": st.stats.packets_out,
            "bytes_out": st.stats.bytes_out,
            "delivered": st.stats.delivered,
            "duplicates": st.stats.duplicates,
        }));
    }
    // Listeners whose tree join has not happened yet (node not joined).
    for g in listeners {
        let topic = Topic::ipv4_group(g);
        if seen.contains(&topic) {
            continue;
        }
        out.push(json!({
            "group": g.to_string(),
            "topic": topic.0.to_string(),
            "local_listeners": true,
            "member": false,
            "role": "listener-only",
            "depth": Value::Null,
            "parent": Value::Null,
            "children": [],
            "packets_in": 0, "bytes_in": 0, "packets_out": 0, "bytes_out": 0,
            "delivered": 0, "duplicates": 0,
        }));
    }
    Value::Array(out)
}

/// Everything the control socket needs besides the engine.
#[derive(Debug)]
pub struct StatusContext<'a> {
    pub listen: SocketAddr,
    /// The address the overlay knows this node by (`--advertise` or `listen`).
    pub advertise: SocketAddr,
    pub tap: Option<&'a TapInfo>,
    /// `--tap-addr auto`.
    pub auto_address: bool,
    /// Engine time now.
    pub now: Time,
    pub uptime_s: f64,
    pub runtime: &'a RuntimeStats,
    pub stream: &'a crate::stream::StreamStats,
    pub stream_connections: usize,
    pub names: &'a GroupNames,
}

/// The `status` answer.
#[must_use]
pub fn status_json(engine: &Engine, ctx: &StatusContext<'_>) -> Value {
    let node = engine.node();
    let s = node.stats();
    let d = &node.scribe().drops;
    let leaf_set: Vec<Value> = node.leaf_set().iter().map(handle).collect();
    let mw = engine.middleware_stats().map(|m| {
        json!({
            "tap_frames_in": m.tap_frames_in,
            "tap_bytes_in": m.tap_bytes_in,
            "published": m.published,
            "igmp_messages": m.igmp_messages,
            "ignored": m.ignored,
            "malformed_frames": m.malformed_frames,
            "below_ttl_threshold": m.below_ttl_threshold,
            "not_joined": m.not_joined,
            "tap_frames_out": m.tap_frames_out,
            "tap_bytes_out": m.tap_bytes_out,
            "rejected_from_overlay": m.rejected_from_overlay,
            "not_subscribed": m.not_subscribed,
            "tap_queue_full": m.tap_queue_full,
        })
    });
    let igmp = engine.middleware().map(|m| {
        let i = m.igmp().stats();
        json!({
            "reports": i.reports,
            "leaves": i.leaves,
            "queries_received": i.queries_received,
            "queries_sent": i.queries_sent,
            "link_local_ignored": i.link_local_ignored,
            "invalid_group_ignored": i.invalid_group_ignored,
            "unknown_records_ignored": i.unknown_records_ignored,
            "leaves_ignored_v1_host": i.leaves_ignored_v1_host,
            "groups_dropped": i.groups_dropped,
        })
    });
    json!({
        "node_id": node.id().to_string(),
        "listen": ctx.listen.to_string(),
        "advertise": ctx.advertise.to_string(),
        "joined": node.is_joined(),
        "uptime_s": (ctx.uptime_s * 10.0).round() / 10.0,
        "tap": ctx.tap.map(|t| json!({
            "name": t.name,
            "addr": t.addr.to_string(),
            "prefix_len": t.prefix_len,
            "mtu": t.mtu,
        })),
        "address": address_json(engine, ctx),
        "leaf_set": leaf_set,
        "routing_table_size": node.routing_table_len(),
        "groups": groups_json(engine, ctx.names),
        "node_stats": s
            .counters()
            .iter()
            .map(|(k, v)| ((*k).to_string(), json!(v)))
            .collect::<serde_json::Map<String, serde_json::Value>>(),
        "middleware_stats": mw,
        "igmp_stats": igmp,
        "scribe_drops": {
            "not_on_tree": d.not_on_tree,
            "not_neighbor": d.not_neighbor,
            "duplicate": d.duplicate,
            "hops_exhausted": d.hops_exhausted,
            "no_tree_at_root": d.no_tree_at_root,
            "malformed": d.malformed,
        },
        "runtime_stats": ctx.runtime,
        "stream_stats": ctx.stream,
        "stream_connections": ctx.stream_connections,
    })
}

/// The `address` object of `status`.
fn address_json(engine: &Engine, ctx: &StatusContext<'_>) -> Value {
    let secs = |until: Time| (until.0.saturating_sub(ctx.now.0) as f64 / 1e5).round() / 10.0;
    if !ctx.auto_address {
        return match ctx.tap {
            Some(t) => json!({
                "addr": t.addr.to_string(),
                "prefix_len": t.prefix_len,
                "lease_remaining_s": Value::Null,
                "state": "static",
            }),
            None => Value::Null,
        };
    }
    let node = engine.node();
    let prefix_len = ctx.tap.map(|t| t.prefix_len);
    match node.address() {
        Some((addr, lease_until)) => json!({
            "addr": addr.to_string(),
            "prefix_len": prefix_len,
            "lease_remaining_s": secs(lease_until),
            "state": "held",
        }),
        None => json!({
            // After a lost address the TAP keeps the old one meanwhile.
            "addr": ctx.tap.map(|t| t.addr.to_string()),
            "prefix_len": prefix_len,
            "lease_remaining_s": Value::Null,
            "state": if node.mgmt().is_allocating() { "allocating" } else { "none" },
        }),
    }
}

/// The `groups` answer without the overlay (its local part only).
#[must_use]
pub fn groups_answer(engine: &Engine, names: &GroupNames) -> Value {
    json!({
        "scope": "local",
        "groups": groups_json(engine, names),
    })
}

/// The `groups` answer: the overlay's directory and the local trees.
#[must_use]
pub fn directory_answer(
    records: &[GroupRecord],
    now: Time,
    engine: &Engine,
    names: &GroupNames,
) -> Value {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut records: Vec<&GroupRecord> = records.iter().collect();
    records.sort_by_key(|r| r.group);
    let groups: Vec<Value> = records
        .iter()
        .map(|r| {
            let age = r.since.0.min(now.0).abs_diff(now.0) as f64 / 1e6;
            json!({
                "group": r.group.to_string(),
                "name": r.name,
                "members": r.members,
                "age_s": (age * 10.0).round() / 10.0,
                "since_unix": (wall - age).round() as i64,
            })
        })
        .collect();
    json!({
        "scope": "overlay",
        "groups": groups,
        "local_groups": groups_json(engine, names),
    })
}

/// `almd groups` for humans: the directory as a table. No member count:
/// the directory's `members` is one announcer's local count (see above),
/// which a table column would present as the group's size.
#[must_use]
pub fn groups_table(v: &Value) -> String {
    let empty = Vec::new();
    let rows = v["groups"].as_array().unwrap_or(&empty);
    if rows.is_empty() {
        return "no active groups in the overlay\n".to_owned();
    }
    let mut lines = vec![["GROUP".to_owned(), "NAME".to_owned(), "SINCE".to_owned()]];
    for r in rows {
        let age = r["age_s"].as_f64().unwrap_or(0.0);
        lines.push([
            r["group"].as_str().unwrap_or("?").to_owned(),
            r["name"].as_str().unwrap_or("-").to_owned(),
            format!("{} ago", human_age(age)),
        ]);
    }
    let mut widths = [0usize; 3];
    for l in &lines {
        for (w, c) in widths.iter_mut().zip(l) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for l in &lines {
        let cells: Vec<String> = l
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn human_age(s: f64) -> String {
    let s = s.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_table_renders_rows() {
        let v = json!({"groups": [
            {"group": "239.1.2.9", "name": null, "members": 1, "age_s": 75.2, "since_unix": 0},
            {"group": "239.10.0.1", "name": "video", "members": 3, "age_s": 4.0, "since_unix": 0},
        ]});
        let t = groups_table(&v);
        assert_eq!(
            t,
            "GROUP       NAME   SINCE\n239.1.2.9   -      1m15s ago\n239.10.0.1  video  4s ago\n"
        );
        assert_eq!(
            groups_table(&json!({"groups": []})),
            "no active groups in the overlay\n"
        );
        assert_eq!(human_age(7300.0), "2h01m");
    }
}
