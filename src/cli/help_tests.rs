//! Every subcommand says what it does and every argument what it takes.

use super::Cli;
use clap::CommandFactory;

fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
    for sub in cmd.get_subcommands() {
        let p = format!("{path} {}", sub.get_name());
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        if sub.get_about().is_none() {
            missing.push(format!("{p}: no about"));
        }
        for a in sub.get_arguments() {
            if a.is_hide_set() || a.get_id() == "help" || a.get_id() == "version" {
                continue;
            }
            if a.get_help().is_none() && a.get_long_help().is_none() {
                missing.push(format!("{p} <{}>", a.get_id()));
            }
        }
        walk(sub, &p, missing);
    }
}

/// Every subcommand says what it does and every argument what it takes.
#[test]
fn every_command_and_argument_has_help() {
    let mut missing = vec![];
    walk(&Cli::command(), "knit", &mut missing);
    assert!(
        missing.is_empty(),
        "{} without help:\n{}",
        missing.len(),
        missing.join("\n")
    );
}
