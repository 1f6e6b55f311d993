//! `alm-sim`: command-line front end of the simulator.
//!
//! `alm-sim pastry --nodes N --lookups L --seed S [--topology plane|transit-stub]
//! [--fail-fraction F] [--json] [--plot FILE.svg]` builds a Pastry overlay by
//! joins on a simulated network and measures lookups.
//!
//! `alm-sim scribe --nodes N --groups G --seed S [--topology ...] [--json]
//! [--plot FILE.svg]` runs the Scribe paper's multicast experiment (delay
//! penalty, link and node stress).
//!
//! `alm-sim mgmt --nodes N --seed S [--churn RATE] [--prefix P/LEN]
//! [--json]` measures distributed address allocation under churn.
//!
//! With `--json`, stdout carries exactly one JSON object.

/// jemalloc rather than the system allocator: a big run holds millions of
/// small per-node allocations that it touches at random, and jemalloc with
/// transparent huge pages cuts the TLB misses of that (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's compiled-in options (the `_rjem_` prefix is tikv-jemallocator's
/// symbol prefix); `_RJEM_MALLOC_CONF` in the environment still overrides.
/// Freed pages are never handed back to the kernel (`*_decay_ms:-1`): a
/// run's memory mostly grows until it ends, and with huge pages each purge
/// and re-touch costs the kernel a 2 MB page to zero. Profiled on 10k
/// nodes, that zeroing was 8 % of the run's time (under the event queue's
/// bucket growth); paired 30k runs were 3.6 and 5.0 % faster without them,
/// for 6 % more peak RSS.
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8; 67] =
    b"thp:always,metadata_thp:always,dirty_decay_ms:-1,muzzy_decay_ms:-1\0";

use alm_sim::build::secs;
use alm_sim::fake::{Directory, FakeEngine};
use alm_sim::mgmt::{MgmtParams, run_mgmt};
use alm_sim::pastry::{PastryParams, PastryReport, render_table, run_pastry};
use alm_sim::scribe::{ScribeParams, ScribeReport, SourceKind, run_scribe};
use alm_sim::svg::{Series, bar_chart, cdf_chart};
use alm_sim::topology::TopologyKind;
use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "alm-sim",
    version,
    about = "Deterministic discrete-event simulator for alm"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum EngineKind {
    /// The real engine (`alm_core::Node`).
    Alm,
    /// A trivial oracle overlay: measures the simulator's own overhead.
    Fake,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a Pastry overlay by joins and measure lookups.
    Pastry(PastryArgs),
    /// Scribe multicast: groups of Zipf-like sizes, one packet each; delay
    /// penalty, link stress and node stress (Castro et al. 2002 §4).
    Scribe(ScribeArgs),
    /// Distributed address allocation on the DHT, with optional churn.
    Mgmt(MgmtArgs),
}

#[derive(clap::Args)]
struct ScribeArgs {
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    #[arg(long, default_value_t = 10)]
    groups: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Latency model: `transit-stub` (GT-ITM-like, 1225 routers; needed for
    /// link stress) or `plane`.
    #[arg(long, default_value = "transit-stub")]
    topology: TopologyKind,
    /// Joins per simulated second.
    #[arg(long, default_value_t = 2000.0)]
    join_rate: f64,
    /// Simulated idle seconds after the build.
    #[arg(long, default_value_t = 10.0)]
    settle_s: f64,
    /// Subscriptions per simulated second.
    #[arg(long, default_value_t = 2000.0)]
    subscribe_rate: f64,
    /// Simulated idle seconds after the last subscription.
    #[arg(long, default_value_t = 10.0)]
    tree_settle_s: f64,
    /// Simulated milliseconds between two groups' packets.
    #[arg(long, default_value_t = 10.0)]
    publish_interval_ms: f64,
    /// Simulated seconds to wait for deliveries after the last packet.
    #[arg(long, default_value_t = 5.0)]
    deliver_timeout_s: f64,
    /// Datagram loss probability.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Who sends each group's packet: its `root` (the Scribe paper's delay
    /// experiment) or a random `member` (up the tree and down again).
    #[arg(long, value_enum, default_value = "root")]
    source: SourceKind,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Write an SVG CDF of the relative delay penalty.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<std::path::PathBuf>,
    /// Phase timings on stderr.
    #[arg(long)]
    progress: bool,
}

#[derive(clap::Args)]
struct MgmtArgs {
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value = "transit-stub")]
    topology: TopologyKind,
    /// Address pool, `a.b.c.d/len` with len in 16..=30.
    #[arg(long, default_value = "172.16.0.0/20")]
    prefix: String,
    /// Node crashes (and as many fresh arrivals) per simulated second during
    /// the churn period.
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// Length of the churn period in simulated seconds.
    #[arg(long, default_value_t = 120.0)]
    churn_s: f64,
    /// Joins per simulated second.
    #[arg(long, default_value_t = 500.0)]
    join_rate: f64,
    /// Simulated seconds after the last join to wait for allocations.
    #[arg(long, default_value_t = 120.0)]
    alloc_timeout_s: f64,
    /// Simulated idle seconds after the churn period.
    #[arg(long, default_value_t = 90.0)]
    settle_s: f64,
    /// Simulated seconds between two DHT audits of the holders' records.
    #[arg(long, default_value_t = 5.0)]
    audit_s: f64,
    /// Datagram loss probability.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    #[arg(long)]
    json: bool,
    #[arg(long)]
    progress: bool,
}

#[derive(clap::Args)]
struct PastryArgs {
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    #[arg(long, default_value_t = 10_000)]
    lookups: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Latency model: `plane` (1000×1000, 0.1 ms per unit) or `transit-stub`
    /// (GT-ITM-like, 1225 routers).
    #[arg(long, default_value = "plane")]
    topology: TopologyKind,
    /// Crash this fraction of the nodes after settling and measure lookups
    /// right after the crash and after `--repair-s`.
    #[arg(long, default_value_t = 0.0)]
    fail_fraction: f64,
    /// Joins per simulated second.
    #[arg(long, default_value_t = 2000.0)]
    join_rate: f64,
    /// Simulated seconds to wait for joins after the last one starts.
    #[arg(long, default_value_t = 60.0)]
    join_timeout_s: f64,
    /// Simulated idle seconds between the build and the first lookup.
    #[arg(long, default_value_t = 30.0)]
    settle_s: f64,
    /// Lookups issued per simulated second [default: one per node per
    /// second, at least 10,000].
    #[arg(long)]
    lookup_rate: Option<f64>,
    /// Simulated seconds to wait for deliveries after a phase's last lookup.
    #[arg(long, default_value_t = 10.0)]
    lookup_timeout_s: f64,
    /// Simulated seconds between the crash and the after-repair lookups.
    #[arg(long, default_value_t = 60.0)]
    repair_s: f64,
    /// Datagram loss probability.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Write an SVG bar chart of the hop distribution.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<std::path::PathBuf>,
    /// Phase timings on stderr.
    #[arg(long)]
    progress: bool,
    #[arg(long, value_enum, default_value = "alm")]
    engine: EngineKind,
    /// Also route the first phase's lookups over an ideal overlay (perfect
    /// proximity neighbour selection, exact leaf sets) and report its hops
    /// and stretch as `ideal_pns`: a reference bound. About N/16 latency
    /// evaluations per lookup.
    #[arg(long)]
    ideal_pns: bool,
    /// Threads that run the engines (default: the cores available). The
    /// report does not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// Run events one at a time instead of in batches of causally
    /// independent events (the report differs slightly: ties at the same
    /// microsecond can order differently). Implies one thread.
    #[arg(long)]
    no_batch: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Pastry(a) => pastry(a),
        Cmd::Scribe(a) => scribe(a),
        Cmd::Mgmt(a) => mgmt(a),
    }
}

fn print_json<T: serde::Serialize>(r: &T) -> ExitCode {
    match serde_json::to_string(r) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("alm-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

fn scribe(a: ScribeArgs) -> ExitCode {
    if a.join_rate <= 0.0 || a.subscribe_rate <= 0.0 || !(0.0..1.0).contains(&a.loss) {
        eprintln!("alm-sim: rates must be > 0 and --loss in [0, 1)");
        return ExitCode::from(2);
    }
    if a.nodes > alm_sim::addr::MAX_NODES || a.groups > u32::MAX as usize {
        eprintln!("alm-sim: too many nodes or groups");
        return ExitCode::from(2);
    }
    let mut p = ScribeParams {
        nodes: a.nodes,
        groups: a.groups,
        seed: a.seed,
        topology: a.topology,
        join_rate: a.join_rate,
        settle: secs(a.settle_s),
        subscribe_rate: a.subscribe_rate,
        tree_settle: secs(a.tree_settle_s),
        publish_interval: secs(a.publish_interval_ms / 1e3),
        deliver_timeout: secs(a.deliver_timeout_s),
        source: a.source,
        progress: a.progress,
        ..ScribeParams::default()
    };
    p.net.loss = a.loss;
    p.net.strict_drain = false;
    let report = run_scribe(&p);
    if let Some(path) = &a.plot
        && let Err(e) = std::fs::write(path, plot_rdp(&report))
    {
        eprintln!("alm-sim: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    if a.json {
        print_json(&report)
    } else {
        print!("{}", alm_sim::scribe::render_table(&report));
        ExitCode::SUCCESS
    }
}

fn plot_rdp(r: &ScribeReport) -> String {
    let title = format!(
        "Scribe RDP CDF: {} nodes, {} groups, {} (seed {})",
        r.nodes, r.groups, r.topology, r.seed
    );
    let label = format!("overlay (mean {:.2}, p90 {:.2})", r.rdp_mean, r.rdp_p90);
    // Clip the long tail at the 99th percentile (at least 2) for legibility.
    let p99 = alm_sim::build::quantile(&r.rdp_sorted, 0.99).max(2.0);
    cdf_chart(
        &title,
        "relative delay penalty",
        &[(label.as_str(), &r.rdp_sorted)],
        Some(p99.ceil()),
    )
}

fn parse_prefix(s: &str) -> Option<(std::net::Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    Some((ip.parse().ok()?, len.parse().ok()?))
}

fn mgmt(a: MgmtArgs) -> ExitCode {
    let Some((prefix, prefix_len)) = parse_prefix(&a.prefix).filter(|(_, l)| (16..=30).contains(l))
    else {
        eprintln!("alm-sim: --prefix must be a.b.c.d/len with len in 16..=30");
        return ExitCode::from(2);
    };
    if a.join_rate <= 0.0 || a.churn < 0.0 || !(0.0..1.0).contains(&a.loss) {
        eprintln!("alm-sim: --join-rate must be > 0, --churn >= 0, --loss in [0, 1)");
        return ExitCode::from(2);
    }
    let churn_slots = (a.churn * a.churn_s.max(0.0)).round();
    if a.nodes as f64 + churn_slots > alm_sim::addr::MAX_NODES as f64 {
        eprintln!("alm-sim: too many nodes");
        return ExitCode::from(2);
    }
    let mut p = MgmtParams {
        nodes: a.nodes,
        seed: a.seed,
        topology: a.topology,
        prefix,
        prefix_len,
        churn: a.churn,
        churn_s: secs(a.churn_s),
        join_rate: a.join_rate,
        alloc_timeout: secs(a.alloc_timeout_s),
        settle: secs(a.settle_s),
        audit_interval: secs(a.audit_s),
        progress: a.progress,
        ..MgmtParams::default()
    };
    p.net.loss = a.loss;
    p.net.strict_drain = false;
    let report = run_mgmt(&p);
    if a.json {
        print_json(&report)
    } else {
        print!("{}", alm_sim::mgmt::render_table(&report));
        ExitCode::SUCCESS
    }
}

fn pastry(a: PastryArgs) -> ExitCode {
    if a.join_rate <= 0.0
        || a.lookup_rate.is_some_and(|r| r <= 0.0)
        || !(0.0..1.0).contains(&a.fail_fraction)
    {
        eprintln!("alm-sim: rates must be > 0 and --fail-fraction in [0, 1)");
        return ExitCode::from(2);
    }
    if a.nodes > alm_sim::addr::MAX_NODES {
        eprintln!("alm-sim: at most {} nodes", alm_sim::addr::MAX_NODES);
        return ExitCode::from(2);
    }
    let mut p = PastryParams {
        nodes: a.nodes,
        lookups: a.lookups,
        seed: a.seed,
        topology: a.topology,
        fail_fraction: a.fail_fraction,
        join_rate: a.join_rate,
        join_timeout: secs(a.join_timeout_s),
        settle: secs(a.settle_s),
        lookup_rate: a.lookup_rate,
        lookup_timeout: secs(a.lookup_timeout_s),
        repair: secs(a.repair_s),
        progress: a.progress,
        ideal_pns: a.ideal_pns,
        batch: !a.no_batch,
        threads: a.threads.unwrap_or_else(available_threads).max(1),
        ..PastryParams::default()
    };
    p.net.loss = a.loss;
    // Count violations in the report rather than aborting a long run.
    p.net.strict_drain = false;
    let report = match a.engine {
        EngineKind::Alm => alm_sim::alm::run_pastry_alm(&p),
        EngineKind::Fake => {
            let dir = Directory::shared();
            run_pastry(&p, |id, addr, _seed| FakeEngine::new(id, addr, dir.clone()))
        }
    };
    if let Some(path) = &a.plot {
        let svg = plot(&report);
        if let Err(e) = std::fs::write(path, svg) {
            eprintln!("alm-sim: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if a.json {
        match serde_json::to_string(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("alm-sim: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", render_table(&report));
    }
    ExitCode::SUCCESS
}

/// The cores this process may use (1 if unknown).
fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn plot(r: &PastryReport) -> String {
    let title = format!(
        "Pastry hops: {} nodes, {} lookups, {} (seed {})",
        r.nodes, r.lookups, r.topology, r.seed
    );
    match (&r.before, &r.after_failure, &r.after_repair) {
        (Some(b), Some(f), Some(a)) => bar_chart(
            &title,
            "hops",
            "fraction of lookups",
            &[
                Series {
                    label: "before failure",
                    values: &b.hops_hist,
                },
                Series {
                    label: "after failure",
                    values: &f.hops_hist,
                },
                Series {
                    label: "after repair",
                    values: &a.hops_hist,
                },
            ],
        ),
        _ => bar_chart(
            &title,
            "hops",
            "fraction of lookups",
            &[Series {
                label: "lookups",
                values: &r.hops_hist,
            }],
        ),
    }
}
