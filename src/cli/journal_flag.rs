//! `shop chaos drill FILE --json JOURNAL` (SPEC section 14) beside the global `--json` switch
//! (SPEC section 3), which owns the name everywhere else.
//!
//! clap cannot give one long name to a global switch and to a subcommand's option, so the
//! command line is rewritten before clap sees it, for `chaos drill` only: there, `--json`
//! followed by an argument that is not a flag, while the drill file is given elsewhere, is
//! `--json-file` with that argument. The drill takes exactly one positional file, so the rule
//! is unambiguous: `--json out.json d.yaml` and `d.yaml --json out.json` write the journal;
//! `--json d.yaml` and `d.yaml --json` print the report as JSON on stdout, as everywhere.

use std::ffi::OsString;

/// The options of `command` that take a value (`--file`, `-f`, …), as clap knows them, so
/// this pass skips their values exactly as clap will and needs no list of its own.
pub(super) fn value_options(command: &clap::Command) -> Vec<String> {
    command
        .get_arguments()
        .filter(|a| !a.is_positional() && a.get_action().takes_values())
        .flat_map(|a| {
            let long = a.get_long().map(|l| format!("--{l}"));
            let short = a.get_short().map(|s| format!("-{s}"));
            long.into_iter().chain(short)
        })
        .collect()
}

/// Where the subcommand is in `args`: past the program name and the global options before it,
/// `global` naming those that take a value (whose value is skipped, as clap reads it).
pub(super) fn subcommand_at(args: &[OsString], global: &[String]) -> usize {
    let mut i = 1;
    while let Some(Some(arg)) = args.get(i).map(|a| a.to_str()) {
        if global.iter().any(|g| g == arg) {
            i += 2;
        } else if arg.starts_with('-') {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// The command line with `chaos drill`'s `--json FILE` turned into `--json-file FILE`;
/// any other command line comes back as it was.
pub fn rewrite(args: Vec<OsString>) -> Vec<OsString> {
    // Every other command (services included) starts without building clap's tree twice.
    if !args.iter().any(|a| a == "drill") {
        return args;
    }
    let cli = <super::Cli as clap::CommandFactory>::command();
    let global = value_options(&cli);
    let text: Vec<Option<&str>> = args.iter().map(|a| a.to_str()).collect();
    let i = subcommand_at(&args, &global);
    if text.get(i) != Some(&Some("chaos")) || text.get(i + 1) != Some(&Some("drill")) {
        return args;
    }
    let start = i + 2;
    let drill = cli.find_subcommand("chaos").and_then(|c| c.find_subcommand("drill")).map(value_options);
    let takes_value = |a: &str| global.iter().chain(drill.iter().flatten()).any(|v| v == a);
    // Where the positionals are, and which `--json` has a value after it.
    let mut positionals = Vec::new();
    let mut journal = None;
    let mut j = start;
    while j < text.len() {
        match text[j] {
            Some("--") => {
                positionals.extend(j + 1..text.len());
                break;
            }
            Some(a) if takes_value(a) => j += 2,
            Some("--json") => {
                if journal.is_none() && text.get(j + 1).is_some_and(|n| n.is_some_and(|n| !n.starts_with('-'))) {
                    journal = Some(j);
                    positionals.push(j + 1);
                    j += 2;
                } else {
                    j += 1;
                }
            }
            Some(a) if a.starts_with('-') && a.len() > 1 => j += 1,
            _ => {
                positionals.push(j);
                j += 1;
            }
        }
    }
    let mut args = args;
    match journal {
        // The value after `--json` and the drill file: two positionals, so the first is the journal.
        Some(at) if positionals.len() >= 2 => args[at] = OsString::from("--json-file"),
        _ => {}
    }
    // `--json=FILE` is never the switch (which takes no value), so it is always the journal.
    for arg in args.iter_mut().skip(start) {
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--json=")) {
            *arg = OsString::from(format!("--json-file={path}"));
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> String {
        let args = line.split(' ').map(OsString::from).collect();
        let out: Vec<String> = rewrite(args).into_iter().map(|a| a.into_string().unwrap()).collect();
        out.join(" ")
    }

    #[test]
    fn json_with_a_path_beside_the_drill_file_is_the_journal() {
        assert_eq!(run("shop chaos drill d.yaml --json out.json"), "shop chaos drill d.yaml --json-file out.json");
        assert_eq!(run("shop chaos drill --json out.json d.yaml"), "shop chaos drill --json-file out.json d.yaml");
        assert_eq!(
            run("shop --json -f s.yaml chaos drill --seed 3 d.yaml --json o.json -q"),
            "shop --json -f s.yaml chaos drill --seed 3 d.yaml --json-file o.json -q"
        );
        assert_eq!(run("shop chaos drill d.yaml --json=o.json"), "shop chaos drill d.yaml --json-file=o.json");
    }

    #[test]
    fn json_alone_stays_the_global_switch() {
        for line in [
            "shop chaos drill d.yaml --json",
            "shop chaos drill --json d.yaml",
            "shop --json chaos drill d.yaml",
            "shop chaos drill d.yaml --json -q",
            "shop chaos drill d.yaml --junit --json",
            "shop chaos list --json",
            "shop load --json 5",
            "shop --file chaos drill --json x",
        ] {
            assert_eq!(run(line), line);
        }
    }
}
