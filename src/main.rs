//! The `beatd` binary: everything lives in the library; see `beatd::cli`.
fn main() -> std::process::ExitCode {
    beatd::cli::main()
}
