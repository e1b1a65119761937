//! The examples that end each command's `--help`, kept in one table so they can be checked
//! together: every line must parse as a real `shop` command line (see the tests).

use clap::Command;

/// Command path (subcommand names joined by spaces; "" is `shop` itself) → example lines.
const EXAMPLES: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "shop up -d",
            "shop order place --user alice --item sku-1:2",
            "shop chaos kill payment --for 10s",
            "shop inspect invariants",
            "shop down",
        ],
    ),
    ("up", &["shop up", "shop up -d --wait-timeout 60s", "shop up -d gateway --json", "shop -f other.yaml up -d"]),
    ("down", &["shop down", "shop down --timeout 2s --purge", "shop down --json"]),
    ("ps", &["shop ps", "shop ps --json", "shop status"]),
    (
        "logs",
        &[
            "shop logs order -n 20",
            "shop logs -f --level warn",
            "shop logs --order ord_01J0000000000000000000000",
            "shop logs --since 10m --grep timeout --json",
        ],
    ),
    ("top", &["shop top", "shop top --interval 2s", "shop top --once", "shop top --json"]),
    ("start", &["shop start payment", "shop start payment inventory --json"]),
    ("stop", &["shop stop payment", "shop stop notification --timeout 2s"]),
    ("restart", &["shop restart order", "shop restart gateway --json"]),
    (
        "order",
        &[
            "shop order place --user alice --item sku-1:2",
            "shop order get ord_01J0000000000000000000000",
            "shop order list --status FAILED",
        ],
    ),
    (
        "order place",
        &[
            "shop order place --user alice --item sku-1",
            "shop order place --user bob --item sku-1:2 --item sku-3 --idempotency-key k-42",
            "shop order place --user alice --item sku-2 --wait 30s --json",
        ],
    ),
    (
        "order get",
        &["shop order get ord_01J0000000000000000000000", "shop order get ord_01J0000000000000000000000 --json"],
    ),
    (
        "order list",
        &["shop order list", "shop order list --user alice --status CONFIRMED --limit 5", "shop order list --json"],
    ),
    (
        "inspect",
        &[
            "shop inspect order ord_01J0000000000000000000000",
            "shop inspect service payment",
            "shop inspect invariants --settle 30s",
        ],
    ),
    (
        "inspect order",
        &[
            "shop inspect order ord_01J0000000000000000000000",
            "shop inspect order ord_01J0000000000000000000000 --json",
        ],
    ),
    (
        "inspect trace",
        &[
            "shop inspect trace 4bf92f3577b34da6a3ce929d0e0e4736",
            "shop inspect trace 4bf92f3577b34da6a3ce929d0e0e4736 --json",
        ],
    ),
    ("inspect service", &["shop inspect service order", "shop inspect service payment --json"]),
    ("inspect registry", &["shop inspect registry", "shop inspect registry --json"]),
    ("inspect stock", &["shop inspect stock", "shop inspect stock --json"]),
    ("inspect invariants", &["shop inspect invariants", "shop inspect invariants --settle 30s --json"]),
    (
        "chaos",
        &[
            "shop chaos kill payment --for 10s",
            "shop chaos latency inventory 200ms --percent 50",
            "shop chaos list",
            "shop chaos clear",
        ],
    ),
    (
        "chaos kill",
        &[
            "shop chaos kill payment",
            "shop chaos kill order-2 --signal TERM --restart",
            "shop chaos kill payment --for 10s",
        ],
    ),
    ("chaos pause", &["shop chaos pause inventory", "shop chaos pause inventory --for 5s"]),
    ("chaos resume", &["shop chaos resume inventory"]),
    (
        "chaos latency",
        &[
            "shop chaos latency inventory 200ms",
            "shop chaos latency payment 1s --jitter 200ms --percent 30 --for 1m",
            "shop chaos latency payment 500ms --percent 50 --seed 7",
        ],
    ),
    (
        "chaos errors",
        &["shop chaos errors payment", "shop chaos errors notification --status 500 --percent 20 --for 30s"],
    ),
    ("chaos partition", &["shop chaos partition order payment", "shop chaos partition order payment --for 15s"]),
    (
        "chaos net",
        &[
            "shop chaos net payment reset --after 50ms --for 10s",
            "shop chaos net payment latency --delay 100ms --jitter 20ms --from order",
            "shop chaos net inventory bandwidth --rate 10KB/s --direction down --toxicity 50 --seed 7",
        ],
    ),
    (
        "chaos monkey",
        &["shop chaos monkey --duration 60s --seed 42 --targets payment,inventory --faults kill,pause,latency,net"],
    ),
    ("chaos list", &["shop chaos list", "shop chaos list --json"]),
    ("chaos clear", &["shop chaos clear", "shop chaos clear payment"]),
    (
        "chaos drill",
        &[
            "shop chaos drill fixtures/drills/payment-outage.yaml",
            "shop chaos drill fixtures/drills/slow-inventory.yaml --seed 7 --json",
        ],
    ),
    (
        "load",
        &[
            "shop load --orders 500 --concurrency 16",
            "shop load --orders 10000 --rate 200/s --duration 30s",
            "shop load --users alice,bob --item sku-1:2 --json",
        ],
    ),
    ("smoke", &["shop smoke", "shop smoke --json"]),
    ("export", &["shop export k8s -o shop.k8s.yaml", "shop export compose -o compose.yaml"]),
    (
        "export k8s",
        &[
            "shop export k8s",
            "shop export k8s --namespace shop -o shop.k8s.yaml",
            "shop export k8s -o shop.k8s.yaml --json",
        ],
    ),
    ("export compose", &["shop export compose", "shop export compose --image shop:dev -o compose.yaml"]),
    (
        "completions",
        &["shop completions bash > ~/.local/share/bash-completion/completions/shop", "shop completions zsh"],
    ),
    (
        "serve",
        &["shop serve registry --port 7000", "shop serve payment --registry http://127.0.0.1:7000 --db payment.db"],
    ),
];

/// The examples of the command at `path`, if it has any.
pub fn of(path: &str) -> Option<&'static [&'static str]> {
    EXAMPLES.iter().find(|(p, _)| *p == path).map(|(_, lines)| *lines)
}

/// `command` with the examples of `path` and of each of its subcommands at the end of their help.
pub fn attach(command: Command, path: &str) -> Command {
    let mut command = match of(path) {
        Some(lines) => {
            let text: String = lines.iter().map(|l| format!("\n  {l}")).collect();
            command.after_help(format!("Examples:{text}"))
        }
        None => command,
    };
    let names: Vec<String> = command.get_subcommands().map(|s| s.get_name().to_string()).collect();
    for name in names {
        let sub_path = if path.is_empty() { name.clone() } else { format!("{path} {name}") };
        command = command.mut_subcommand(name, |sub| attach(sub, &sub_path));
    }
    command
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    /// The words of an example as the shell would pass them (none of them quote anything);
    /// a redirection ends the command.
    fn words(line: &str) -> Vec<&str> {
        line.split_whitespace().take_while(|w| !w.starts_with('>') && *w != "|").collect()
    }

    #[test]
    fn every_example_parses_as_the_command_it_illustrates() {
        for (path, lines) in EXAMPLES {
            for line in *lines {
                let argv = words(line);
                if let Err(e) = super::super::Cli::try_parse_from(&argv) {
                    panic!("example `{line}` of `{path}` does not parse: {e}");
                }
                // The example belongs to the command it illustrates.
                let args: Vec<&str> = argv[1..].iter().copied().filter(|w| !w.starts_with('-')).collect();
                assert!(
                    path.is_empty() || path == &"ps" || args.join(" ").contains(path),
                    "example `{line}` is not a `{path}` command"
                );
            }
        }
    }

    #[test]
    fn every_visible_command_has_examples() {
        fn walk(command: &Command, path: &str, missing: &mut Vec<String>) {
            if command.is_hide_set() {
                return;
            }
            if of(path).is_none() {
                missing.push(format!("`shop {path}`"));
            }
            for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
                let sub_path =
                    if path.is_empty() { sub.get_name().to_string() } else { format!("{path} {}", sub.get_name()) };
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::super::Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "commands without examples: {}", missing.join(", "));
    }
}
