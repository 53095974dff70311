//! Every command's `--help` ends with an example: the test walks clap's whole command tree
//! (groups and leaves), so a command added later without one fails here.

use clap::CommandFactory;
use provd::cli::Cli;

fn walk(cmd: &mut clap::Command, path: &str, missing: &mut Vec<String>) {
    let name = if path.is_empty() {
        cmd.get_name().to_owned()
    } else {
        format!("{path} {}", cmd.get_name())
    };
    let help = cmd.render_long_help().to_string();
    // The last paragraph of the help is the example.
    let last = help
        .trim_end()
        .rsplit("\n\n")
        .next()
        .unwrap_or_default()
        .to_owned();
    if !last.trim_start().starts_with("Example") {
        missing.push(name.clone());
    }
    for sub in cmd.get_subcommands_mut() {
        if sub.get_name() == "help" {
            continue;
        }
        walk(sub, &name, missing);
    }
}

#[test]
fn every_command_help_ends_with_an_example() {
    let mut cmd = Cli::command();
    cmd.build();
    let mut missing = Vec::new();
    walk(&mut cmd, "", &mut missing);
    assert!(
        missing.is_empty(),
        "commands whose --help does not end with an example: {missing:?}"
    );
}

#[test]
fn the_walk_sees_nested_commands() {
    let mut cmd = Cli::command();
    cmd.build();
    let mut seen = Vec::new();
    walk(&mut cmd, "", &mut seen);
    // Everything is reported when nothing counts as an example; nested leaves included.
    let mut all = Vec::new();
    fn names(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        let name = format!("{path} {}", cmd.get_name()).trim().to_owned();
        out.push(name.clone());
        for s in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            names(s, &name, out);
        }
    }
    names(&cmd, "", &mut all);
    assert!(all.iter().any(|n| n == "provd rekor submit"), "{all:?}");
    assert!(all.iter().any(|n| n == "provd status"), "{all:?}");
}
