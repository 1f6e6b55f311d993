//! `alm-sim`: command-line front end of the simulator.
//!
//! `alm-sim pastry --nodes N --lookups L --seed S [--topology plane|transit-stub]
//! [--fail-fraction F] [--json] [--plot FILE.svg]` builds a Pastry overlay by
//! joins on a simulated network and measures lookups. With `--json`, stdout
//! carries exactly one JSON object.

use alm_core::Duration;
use alm_sim::fake::{Directory, FakeEngine};
use alm_sim::pastry::{PastryParams, PastryReport, render_table, run_pastry};
use alm_sim::svg::{Series, bar_chart};
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
    /// Lookups issued per simulated second.
    #[arg(long, default_value_t = 10_000.0)]
    lookup_rate: f64,
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
}

fn secs(s: f64) -> Duration {
    Duration((s.max(0.0) * 1e6).round() as u64)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Pastry(a) => pastry(a),
    }
}

fn pastry(a: PastryArgs) -> ExitCode {
    if a.join_rate <= 0.0 || a.lookup_rate <= 0.0 || !(0.0..1.0).contains(&a.fail_fraction) {
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
