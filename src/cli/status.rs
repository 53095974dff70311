//! `provd status`: the status report of a running provd, for people and scripts.
//!
//! Exit 0 when healthy, 1 when not (a service down, a required actor not running, an open
//! divergence) or when provd cannot be reached at all, so cron and scripts need no parsing.
//! On a terminal the report is coloured; `--json` prints the endpoint's JSON unchanged.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::process::ExitCode;

use super::Exit;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

/// `provd status` flags.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The running provd's base URL.
    #[arg(long, env = "PROVD_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Print the report as JSON (exactly what `GET /api/v1/status` answers).
    #[arg(long)]
    pub json: bool,
    /// How long to wait for an answer, e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Runs `provd status`.
pub fn run(args: StatusArgs) -> ExitCode {
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("provd: cannot start the async runtime: {e}");
            return Exit::Failed.into();
        }
    };
    let url = format!("{}/api/v1/status", args.server.trim_end_matches('/'));
    let fetched = rt.block_on(async {
        let client = super::http_client(None, args.timeout).map_err(|e| format!("{e:#}"))?;
        let resp = client.get(&url).send().await.map_err(|e| e.to_string())?;
        resp.json::<Value>().await.map_err(|e| e.to_string())
    });
    let report = match fetched {
        Ok(v) if v.get("healthy").is_some() => v,
        Ok(v) => {
            eprintln!("provd status: {url} did not answer with a status report: {v}");
            return Exit::Failed.into();
        }
        Err(e) => {
            eprintln!("provd status: cannot read {url}: {e}");
            return Exit::Failed.into();
        }
    };
    if args.json {
        println!("{report:#}");
    } else {
        print!("{}", render(&report, std::io::stdout().is_terminal()));
    }
    if report["healthy"] == true {
        ExitCode::SUCCESS
    } else {
        Exit::Failed.into()
    }
}

/// ANSI colours, or nothing when the output is not a terminal.
struct Paint(bool);

impl Paint {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
    fn good(&self, s: &str) -> String {
        self.wrap("32", s)
    }
    fn bad(&self, s: &str) -> String {
        self.wrap("1;31", s)
    }
    fn head(&self, s: &str) -> String {
        self.wrap("1", s)
    }
}

fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 => format!("{f:.0}"),
        Some(f) => format!("{f:.2}"),
        None => "n/a".to_owned(),
    }
}

/// The report as lines for a person.
pub fn render(r: &Value, colour: bool) -> String {
    let p = Paint(colour);
    let mut o = String::new();
    let verdict = if r["healthy"] == true {
        p.good("HEALTHY")
    } else {
        p.bad("UNHEALTHY")
    };
    let _ = writeln!(
        o,
        "provd {} on {} (deployment {}): {verdict}",
        r["version"].as_str().unwrap_or("?"),
        r["node_id"].as_str().unwrap_or("?"),
        r["deployment_id"].as_str().unwrap_or("?")
    );
    for problem in r["problems"].as_array().into_iter().flatten() {
        let _ = writeln!(o, "  {} {}", p.bad("!"), problem.as_str().unwrap_or(""));
    }
    let _ = writeln!(o, "{}", p.head("services"));
    for (name, s) in r["services"].as_object().into_iter().flatten() {
        let status = s["status"].as_str().unwrap_or("?");
        let shown = if status == "ok" {
            p.good(status)
        } else {
            p.bad(&format!(
                "{status}: {}",
                s["error"].as_str().unwrap_or_default()
            ))
        };
        let _ = writeln!(o, "  {name:<24} {shown}");
    }
    let _ = writeln!(o, "{}", p.head("actors"));
    for (name, a) in r["actors"].as_object().into_iter().flatten() {
        let status = a["status"].as_str().unwrap_or("?");
        let shown = if status == "running" {
            p.good(status)
        } else if a["required"] == true {
            p.bad(status)
        } else {
            status.to_owned()
        };
        let _ = writeln!(o, "  {name:<24} {shown} (restarts {})", num(&a["restarts"]));
    }
    let _ = writeln!(o, "{}", p.head("figures"));
    let _ = writeln!(
        o,
        "  cache hit ratio          {:.1} % ({} hits, {} misses)",
        r["cache"]["hit_ratio"].as_f64().unwrap_or(0.0) * 100.0,
        num(&r["cache"]["hits"]),
        num(&r["cache"]["misses"])
    );
    let _ = writeln!(
        o,
        "  write-behind             {} queued, lag {} s",
        num(&r["write_behind"]["queue_depth"]),
        num(&r["write_behind"]["lag_seconds"])
    );
    let subs = &r["submissions"];
    if subs.is_object() {
        let dead = num(&subs["dead_letters"]);
        let dead = if subs["dead_letters"].as_i64().unwrap_or(0) > 0 {
            p.bad(&dead)
        } else {
            dead
        };
        let _ = writeln!(
            o,
            "  rekor submissions        queue {}, dead letters {dead}",
            num(&subs["queue_depth"])
        );
    }
    let div = &r["divergences"];
    if div.is_object() {
        let open = div["open"].as_i64().unwrap_or(0);
        let shown = if open > 0 {
            p.bad(&format!("{open} OPEN"))
        } else {
            p.good("none open")
        };
        let _ = writeln!(o, "  divergences              {shown}");
        for d in div["items"].as_array().into_iter().flatten() {
            let _ = writeln!(
                o,
                "    {} {} {} since {}",
                p.bad(d["kind"].as_str().unwrap_or("?")),
                d["backend"].as_str().unwrap_or("?"),
                d["origin"].as_str().unwrap_or("?"),
                d["detected_at"].as_str().unwrap_or("?")
            );
        }
    }
    for c in r["checkpoints"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "  checkpoint {:<13} size {} ({}), {} s old",
            c["backend"].as_str().unwrap_or("?"),
            num(&c["tree_size"]),
            c["origin"].as_str().unwrap_or("?"),
            num(&c["age_seconds"])
        );
    }
    if r["invalidations"].is_object() {
        let _ = writeln!(
            o,
            "  invalidations (24 h)     {}",
            num(&r["invalidations"]["last_24h"])
        );
    }
    for n in r["replay"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "  replay {:<17} checkpoint {}, lag {}",
            n["node_id"].as_str().unwrap_or("?"),
            num(&n["checkpoint"]),
            num(&n["lag"])
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn colour_only_on_a_terminal_and_problems_are_shown() {
        let r = json!({"healthy": false, "version": "0.1.0", "node_id": "a",
            "problems": ["redis is unreachable: refused"],
            "services": {"redis": {"status": "unreachable", "error": "refused"}},
            "actors": {}, "cache": {"hit_ratio": 0.5, "hits": 1.0, "misses": 1.0},
            "write_behind": {"queue_depth": 0.0, "lag_seconds": 0.0}});
        let plain = render(&r, false);
        assert!(plain.contains("UNHEALTHY"), "{plain}");
        assert!(plain.contains("redis is unreachable"), "{plain}");
        assert!(!plain.contains('\x1b'), "{plain}");
        assert!(render(&r, true).contains("\x1b[1;31m"));
    }
}
