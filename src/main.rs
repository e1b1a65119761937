//! The `shop` binary: parse, run, map the outcome to an exit code.

fn main() {
    std::process::exit(shop::cli::main());
}
