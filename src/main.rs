//! The `kith` binary: everything lives in the library; see `cli.rs`.

fn main() -> std::process::ExitCode {
    kith::cli::main()
}
