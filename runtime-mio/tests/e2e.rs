//! End-to-end tests: real `almd` processes in network namespaces, carrying
//! real iperf 2, socat, MGEN and ffmpeg multicast (see `scripts/e2e.sh` for
//! the scenarios).
//!
//! One test runs the scenarios one after another (they share addresses and
//! ports; the script also serializes runs machine-wide with a file lock).
//! It is skipped, with the reason printed, when not root, without
//! /dev/net/tun, or without iperf / python3 / flock; scenarios `socat`,
//! `mgen` and `ffmpeg` are each skipped alone without their tool. Select
//! scenarios with `ALM_E2E=a,c` (default: a,b,c,d,e,perf,auto,socat,mgen,ffmpeg).
//!
//! Run: `sudo -E cargo test -p alm-mio --test e2e -- --nocapture`

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces and TAP devices need root)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun".into());
    }
    for tool in ["iperf", "ip", "python3", "flock"] {
        if !in_path(tool) {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/e2e.sh")
}

/// Runs one scenario; Ok(json) or Err(skip reason / failure).
fn run(scenario: &str, extra: &[&str]) -> Result<Value, String> {
    let tag = format!("t{}{}", std::process::id() % 100_000, scenario);
    let out = Command::new("bash")
        .arg(script())
        .arg(scenario)
        .args(extra)
        .env("ALMD", env!("CARGO_BIN_EXE_almd"))
        .env("ALM_PROBE", env!("CARGO_BIN_EXE_alm-probe"))
        .env("E2E_TAG", &tag)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("E2E_SKIP ")) {
        return Err(format!("skipped: {line}"));
    }
    let Some(json) = stdout.lines().find_map(|l| l.strip_prefix("E2E_JSON ")) else {
        return Err(format!(
            "scenario {scenario}: no E2E_JSON line (exit {:?}); stdout: {stdout}",
            out.status.code()
        ));
    };
    eprintln!("scenario {scenario}: {json}");
    serde_json::from_str(json).map_err(|e| format!("scenario {scenario}: bad JSON ({e}): {json}"))
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_f64().unwrap_or(f64::NAN)
}

/// Fraction of `sent` datagrams an iperf receiver got (None if no report).
fn iperf_ratio(r: &Value, sent: f64) -> f64 {
    let (lost, total) = (f(r, &["lost"]), f(r, &["total"]));
    // `total` counts up to the last sequence number seen; also hold it
    // against what the sender sent so a lost tail counts as loss.
    (total - lost) / sent.max(total)
}

fn check(scenario: &str, v: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    let mut expect = |ok: bool, what: String| {
        if !ok {
            errs.push(format!("scenario {scenario}: {what}"));
        }
    };
    let all_alive = v["alive"]
        .as_array()
        .is_none_or(|a| a.iter().all(|x| x == true));
    match scenario {
        "a" => {
            let sent = f(v, &["sent"]);
            for h in ["h2", "h3"] {
                let r = iperf_ratio(&v["receivers"][h], sent);
                expect(
                    r >= 0.95,
                    format!(
                        "{h} got {:.2} % of {sent} datagrams, want >= 95 %",
                        r * 100.0
                    ),
                );
            }
            expect(all_alive, "an almd died".into());
        }
        "b" => {
            let ms = f(v, &["pruned_ms"]);
            expect(
                ms <= 10_000.0,
                format!("h3's group not gone 10 s after its receiver stopped (pruned_ms = {ms})"),
            );
            expect(
                v["h3_still_child"] == false,
                "h3 is still a child on the group's tree".into(),
            );
            expect(
                v["h2_still_member"] == true,
                "h2 lost its membership when h3 left".into(),
            );
            expect(all_alive, "an almd died".into());
        }
        "c" => {
            expect(
                f(v, &["victim_children"]) >= 1.0,
                "the killed node had no children".into(),
            );
            let kill = f(v, &["kill_at_ms"]);
            for h in ["h2", "h3"] {
                let p = &v["receivers"][h];
                let gap = f(p, &["max_gap_ms"]);
                let last = f(p, &["last_ms"]);
                expect(
                    gap < 5_000.0,
                    format!("{h}: traffic stopped for {gap:.0} ms after the kill, want < 5000"),
                );
                expect(
                    last > kill + 5_000.0,
                    format!(
                        "{h}: no traffic after the kill (last packet at {last:.0} ms, kill at {kill:.0} ms)"
                    ),
                );
            }
            expect(all_alive, "a surviving almd died".into());
        }
        "d" => {
            let r = iperf_ratio(&v["h2_g1"], f(v, &["sent_g1"]));
            expect(
                r >= 0.95,
                format!("h2 got {:.2} % of group 1, want >= 95 %", r * 100.0),
            );
            let sent2 = f(v, &["sent_g2"]);
            let got2 = f(v, &["h3_g2", "received"]);
            expect(
                got2 >= 0.95 * sent2,
                format!("h3 got {got2} of {sent2} group-2 datagrams"),
            );
            expect(
                got2 <= sent2,
                format!("h3 got {got2} datagrams but only {sent2} were sent to its group"),
            );
            expect(
                v["h3_on_g1_tree"] == false,
                "h3 is on group 1's tree".into(),
            );
            expect(
                f(v, &["h3_not_subscribed"]) == 0.0,
                "group-1 data reached h3's middleware".into(),
            );
            expect(
                f(v, &["h3_tap_frames_out"]) <= sent2 + 20.0,
                format!(
                    "h3 wrote {} frames into its TAP for {sent2} group-2 datagrams",
                    f(v, &["h3_tap_frames_out"])
                ),
            );
            expect(all_alive, "an almd died".into());
        }
        "e" => {
            expect(v["h2_alive"] == true, "the blasted almd died".into());
            expect(
                f(v, &["h2_decode_errors"]) > 0.0,
                "the blast did not reach h2's almd".into(),
            );
            let sent = f(v, &["sent"]);
            for h in ["h2", "h3"] {
                let r = iperf_ratio(&v["receivers"][h], sent);
                expect(
                    r >= 0.90,
                    format!("{h} got {:.2} % under attack, want >= 90 %", r * 100.0),
                );
            }
            expect(all_alive, "an almd died".into());
        }
        "perf" if cfg!(debug_assertions) => {
            // An unoptimized almd on 2 shared cores is not what the paper
            // measured: report only. `cargo test --release` asserts.
            eprintln!("scenario perf: debug build, numbers reported but not asserted");
        }
        "perf" => {
            // The paper's bound (< 4 % loss, < 15 ms jitter) held against what
            // almd controls: datagrams it delivered into the receiver's TAP.
            // iperf's own figure also counts its socket-buffer overflows
            // (RcvbufErrors) when it is starved of CPU on a small machine;
            // both are printed.
            let r = &v["receivers"]["h2"];
            let sent = f(v, &["sent"]);
            let app_loss = 1.0 - iperf_ratio(r, sent);
            let overlay_loss = 1.0 - f(v, &["h2_delivered"]) / sent;
            let jitter = f(r, &["jitter_ms"]);
            eprintln!(
                "scenario perf: one hop at {}: overlay loss {:.2} %, iperf loss {:.2} % ({} socket-buffer overflows in the receiving app), jitter {jitter} ms",
                v["rate"],
                overlay_loss * 100.0,
                app_loss * 100.0,
                v["h2_app_rcvbuf_errors"]
            );
            expect(
                overlay_loss < 0.04,
                format!(
                    "one hop at {}: almd delivered {:.2} % fewer datagrams than sent, paper: < 4 % loss",
                    v["rate"],
                    overlay_loss * 100.0
                ),
            );
            expect(
                jitter < 15.0,
                format!("one hop: jitter {jitter} ms, paper: < 15 ms"),
            );
        }
        "auto" => {
            let addrs: Vec<&str> = v["addresses"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            expect(
                addrs.len() == 5,
                format!("not every host got an address: {}", v["addresses"]),
            );
            let pool = u32::from(std::net::Ipv4Addr::new(172, 16, 0, 0));
            let mut seen = std::collections::HashSet::new();
            for a in &addrs {
                let ip: Option<std::net::Ipv4Addr> = a.parse().ok();
                let inside = ip.is_some_and(|ip| {
                    let x = u32::from(ip);
                    x & 0xffff_f000 == pool && x != pool && x != pool | 0xfff
                });
                expect(
                    inside,
                    format!("{a} is not a host address of 172.16.0.0/20"),
                );
                expect(seen.insert(*a), format!("{a} was given to two hosts"));
            }
            // The kernel's TAP carries the allocated address.
            let kernel: Vec<String> = v["kernel_addresses"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            let want: Vec<String> = addrs.iter().map(|a| format!("{a}/20")).collect();
            expect(
                kernel == want,
                format!("TAP addresses {kernel:?}, status says {want:?}"),
            );
            expect(
                v["group_listed"] == true,
                format!(
                    "h4's almd groups does not list 239.1.2.9: {}",
                    v["h4_groups"]
                ),
            );
            expect(
                f(v, &["seconds"]) < 60.0,
                "scenario took 60 s or more".into(),
            );
            expect(all_alive, "an almd died".into());
        }
        "socat" => {
            let sent = f(v, &["sent"]);
            for h in ["h2a", "h2b", "h3"] {
                let got = f(v, &["receivers", h]);
                expect(
                    got >= 0.98 * sent,
                    format!("socat receiver {h} got {got} of {sent} lines, want >= 98 %"),
                );
            }
            expect(
                f(v, &["other_group"]) == 0.0 && f(v, &["other_group_bytes"]) == 0.0,
                format!(
                    "the receiver of 239.1.2.8 on h2 got {} lines ({} bytes) of 239.1.2.7",
                    v["other_group"], v["other_group_bytes"]
                ),
            );
            expect(
                f(v, &["h2_other_delivered"]) == 0.0,
                "h2's almd delivered datagrams to 239.1.2.8, which nobody sent to".into(),
            );
            expect(
                f(v, &["junk_lines"]) == 0.0,
                format!("{} received lines are not lines sent", v["junk_lines"]),
            );
            // h2 and h3 listen on 0.0.0.0 and --advertise their address.
            expect(
                v["h2_listen"] == "0.0.0.0:4000" && v["h2_advertise"] == "10.77.0.2:4000",
                format!(
                    "h2 status: listen {} advertise {}, want 0.0.0.0:4000 and 10.77.0.2:4000",
                    v["h2_listen"], v["h2_advertise"]
                ),
            );
            expect(
                v["h1_leaf_addrs"] == serde_json::json!(["10.77.0.2:4000", "10.77.0.3:4000"]),
                format!(
                    "h1's leaf set names {}, want the advertised 10.77.0.2:4000 and 10.77.0.3:4000",
                    v["h1_leaf_addrs"]
                ),
            );
            expect(
                f(v, &["seconds"]) < 40.0,
                format!("scenario took {} s, want < 40", v["seconds"]),
            );
            expect(all_alive, "an almd died".into());
        }
        "mgen" => {
            let c = &v["counts"];
            let groups: Vec<&str> = v["groups"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            expect(groups.len() == 2, format!("groups: {}", v["groups"]));
            // The sender really sent ~rate x seconds per group.
            let want = f(v, &["rate"]) * f(v, &["send_seconds"]);
            for g in &groups {
                let sent = f(c, &["sent", g]);
                expect(
                    sent >= 0.9 * want,
                    format!("mgen sent {sent} messages to {g}, want about {want}"),
                );
            }
            let h1_tap = v["taps"][0].as_str().unwrap_or("?");
            for h in ["h2", "h3"] {
                let joined: Vec<&str> = c["joined"][h]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                for g in &groups {
                    let r = &c["receivers"][h][g];
                    let got = f(r, &["received"]);
                    if joined.contains(g) {
                        let sent = f(c, &["sent", g]);
                        expect(
                            got >= 0.95 * sent,
                            format!(
                                "mgen receiver on {h} got {got} of {sent} messages of {g} (loss {} %), want >= 95 %",
                                r["loss_pct"]
                            ),
                        );
                    } else {
                        expect(
                            got == 0.0,
                            format!(
                                "mgen receiver on {h} got {got} messages of {g}, which it did not join"
                            ),
                        );
                    }
                    expect(
                        f(r, &["not_sent"]) == 0.0,
                        format!(
                            "{h} logged {} sequence numbers of {g} that were never sent",
                            r["not_sent"]
                        ),
                    );
                }
                expect(
                    c["sources"][h] == serde_json::json!([h1_tap]),
                    format!(
                        "{h} received from {}, want only h1's TAP address {h1_tap}",
                        c["sources"][h]
                    ),
                );
            }
            expect(
                f(v, &["rerr"]) == 0.0,
                format!("{} MGEN receive errors (RERR)", v["rerr"]),
            );
            // h3 is the root of the group it did not join: it forwards it
            // but must not deliver it.
            let t = &v["h3_g2_tree"];
            expect(
                t.is_null() || (f(t, &["delivered"]) == 0.0 && t["member"] == false),
                format!("h3's almd delivered the group it did not join: {t}"),
            );
            expect(
                f(v, &["h3_not_subscribed"]) == 0.0,
                "data of a group h3 did not join reached h3's middleware".into(),
            );
            let sent1 = f(c, &["sent", groups.first().copied().unwrap_or("?")]);
            expect(
                f(v, &["h3_tap_frames_out"]) <= sent1 + 20.0,
                format!(
                    "h3 wrote {} frames into its TAP for {sent1} messages of its one group",
                    v["h3_tap_frames_out"]
                ),
            );
            expect(
                f(v, &["seconds"]) < 40.0,
                format!("scenario took {} s, want < 40", v["seconds"]),
            );
            expect(all_alive, "an almd died".into());
        }
        "ffmpeg" => {
            let sent = f(v, &["sent_frames"]);
            expect(
                sent >= 120.0,
                format!("the ffmpeg sender encoded {sent} frames, want about 125"),
            );
            for k in ["decoded_frames", "probed_frames"] {
                let n = f(v, &[k]);
                expect(
                    n >= 0.9 * sent,
                    format!("ffmpeg receiver on h2: {k} = {n} of {sent} frames sent, want >= 90 %"),
                );
            }
            expect(
                f(v, &["seconds"]) < 40.0,
                format!("scenario took {} s, want < 40", v["seconds"]),
            );
            expect(all_alive, "an almd died".into());
        }
        _ => {}
    }
    errs
}

#[test]
fn e2e_multicast_scenarios() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED e2e_multicast_scenarios: {reason}");
        return;
    }
    let selected =
        std::env::var("ALM_E2E").unwrap_or_else(|_| "a,b,c,d,e,perf,auto,socat,mgen,ffmpeg".into());
    let mut failures = Vec::new();
    for s in selected.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let extra: &[&str] = if s == "perf" { &["155M"] } else { &[] };
        match run(s, extra) {
            Ok(v) => failures.extend(check(s, &v)),
            Err(e) if e.starts_with("skipped: ") => {
                // A missing tool of one scenario (socat, mgen, ffmpeg)
                // skips only it.
                eprintln!("SKIPPED e2e scenario {s}: {e}");
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "e2e failures:\n{}",
        failures.join("\n")
    );
}
