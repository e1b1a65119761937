//! `-f FILE` after the subcommand (SPEC section 3: global options go before or after it),
//! beside `shop logs -f`, which follows the logs (SPEC section 3 too).
//!
//! clap cannot give a global option a short name that one subcommand uses for something else,
//! so `-f` is an option of the top level only, and the command line is rewritten before clap
//! sees it: after any subcommand but `logs`, `-f` is `--file`. Values of options that take one
//! are skipped, as clap would read them.

use std::ffi::OsString;

use super::journal_flag::{subcommand_at, value_options};

/// The command line with `-f` after a subcommand other than `logs` turned into `--file`.
pub fn rewrite(args: Vec<OsString>) -> Vec<OsString> {
    // Most command lines have no `-f` past the first word: no need to build clap's tree.
    if !args.iter().skip(2).any(|a| a == "-f") {
        return args;
    }
    let cli = <super::Cli as clap::CommandFactory>::command();
    let global = value_options(&cli);
    let text: Vec<Option<String>> = args.iter().map(|a| a.to_str().map(str::to_string)).collect();
    let i = subcommand_at(&args, &global);
    let Some(Some(name)) = text.get(i) else { return args };
    let Some(sub) = cli.find_subcommand(name) else { return args };
    if name == "logs" {
        return args;
    }
    let mut takes_value = global;
    let mut pending = vec![sub];
    while let Some(command) = pending.pop() {
        takes_value.extend(value_options(command));
        pending.extend(command.get_subcommands());
    }
    let mut args = args;
    let mut j = i + 1;
    while let Some(arg) = text.get(j) {
        match arg.as_deref() {
            Some("--") => break,
            Some("-f") => {
                args[j] = OsString::from("--file");
                j += 2;
            }
            Some(a) if takes_value.iter().any(|v| v == a) => j += 2,
            _ => j += 1,
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
    fn f_after_a_subcommand_is_the_stack_file_except_for_logs() {
        assert_eq!(run("shop ps -f s.yaml"), "shop ps --file s.yaml");
        assert_eq!(run("shop --json inspect stock -f s.yaml"), "shop --json inspect stock --file s.yaml");
        assert_eq!(
            run("shop chaos net payment reset -f s.yaml --for 5s"),
            "shop chaos net payment reset --file s.yaml --for 5s"
        );
        assert_eq!(run("shop -f s.yaml ps"), "shop -f s.yaml ps");
        assert_eq!(run("shop logs -f"), "shop logs -f");
        assert_eq!(run("shop -f s.yaml logs order -f"), "shop -f s.yaml logs order -f");
        // A value is a value: `--grep -f` looks for "-f".
        assert_eq!(run("shop load --users -f"), "shop load --users -f");
    }
}
