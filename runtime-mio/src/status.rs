//! The JSON answers of the control socket (`almd status`, `almd groups`).
//!
//! `status` fields: `node_id` (32 hex digits), `listen`, `joined`,
//! `uptime_s`, `tap` (`null` without `--tap`: else name, addr, prefix_len,
//! mtu), `leaf_set` (`[{id, addr}]`), `routing_table_size`, `groups` (see
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
//! `groups` answers the same `groups` list, with `"scope": "local"`: the
//! overlay-wide group directory needs the management ring, which is not
//! implemented yet.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use serde_json::{Value, json};

use alm_core::NodeHandle;
use alm_core::scribe::{Role, Topic};

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
    pub tap: Option<&'a TapInfo>,
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
        "joined": node.is_joined(),
        "uptime_s": (ctx.uptime_s * 10.0).round() / 10.0,
        "tap": ctx.tap.map(|t| json!({
            "name": t.name,
            "addr": t.addr.to_string(),
            "prefix_len": t.prefix_len,
            "mtu": t.mtu,
        })),
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

/// The `groups` answer.
#[must_use]
pub fn groups_answer(engine: &Engine, names: &GroupNames) -> Value {
    json!({
        "scope": "local",
        "note": "groups known to this node only; the overlay-wide group directory comes with the management ring (not implemented yet)",
        "groups": groups_json(engine, names),
    })
}
